#!/usr/bin/env bash
# The issue's 1 GiB resume check, in release: two real nodes and a real server on 127.0.0.1
# (the process test `a_receiver_killed_mid_transfer_resumes_from_its_last_commit` with a size
# of SIZE_MIB): a file of pseudo-random bytes is sent, the receiver is killed with SIGKILL once
# a resume point of at least 40 % is committed, restarted, and the transfer completes; the test
# checks the saved file is bit-exact and that the resumed run received at most 65 % of the file
# over the wire, and prints both figures.
#
#   bench/files/kill.sh [SIZE_MIB]      (default 1024; builds the release test binary)
set -euo pipefail
cd "$(dirname "$0")/../.."
SIZE_MIB=${1:-1024}
DOPUS_TEST_KILL_MIB=$SIZE_MIB exec cargo test --release -p dopus-node --test it -- \
  --exact files::a_receiver_killed_mid_transfer_resumes_from_its_last_commit --nocapture
