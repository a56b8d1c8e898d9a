#!/usr/bin/env bash
# Runs DiscordOpus on this machine: builds the UI and the binaries if needed, then starts
# `discordopus demo` (an embedded signaling server plus two users, alice and bob, who are contacts)
# and prints the two URLs to open. Extra arguments are passed to `discordopus` instead, e.g.
#   ./scripts/run.sh up --server wss://signal.example.org
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
./scripts/build-web.sh
cargo build --release --locked -p dopus-node -p dopus-server
if (($#)); then
  exec ./target/release/discordopus "$@"
fi
exec ./target/release/discordopus demo
