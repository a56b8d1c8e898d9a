#!/usr/bin/env bash
# Runs seeds of the deterministic simulated network (docs/simulation.md).
#
#   scripts/sim.sh [--seeds N] [--start S] [--jobs J]   N seeds (default 200); last line
#                                                       "sim: N seeds, F failures"
#   scripts/sim.sh --seed S [--trace-hash] [--verbose]  one seed alone (its trace hash)
#
# Exits non-zero when a seed fails; a failing seed prints the command that replays it.
# Builds the simulator (the dev profile: dependencies are optimised there, and CI reuses what
# the tests built); DOPUS_SIM_PROFILE=release for long runs.
set -euo pipefail
cd "$(dirname "$0")/.."
profile=${DOPUS_SIM_PROFILE:-dev}
if [[ $profile == dev ]]; then dir=debug; else dir=$profile; fi
cargo build --quiet --locked -p dopus-testing --bin dopus-sim --profile "$profile"
exec "target/$dir/dopus-sim" "$@"
