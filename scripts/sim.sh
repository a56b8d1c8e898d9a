#!/usr/bin/env bash
# Runs seeds of the deterministic simulated network (docs/simulation.md).
#
#   scripts/sim.sh [--seeds N] [--start S] [--jobs J]   N seeds (default 200); last line
#                                                       "sim: N seeds, F failures"
#   scripts/sim.sh --seed S [--trace-hash] [--verbose]  one seed alone (its trace hash, or
#                                                       its trace with --verbose)
#
# Exits non-zero when a seed fails; a failing seed prints the command that replays it.
#
# Builds the simulator in the dev profile (dependencies are optimised there; the simulator's
# own code is not the cost). DOPUS_SIM_PROFILE=release for a release build.
# DOPUS_SIM_BUILD=workspace (scripts/test.sh) builds it the way `cargo nextest run
# --workspace` just did, so nothing is compiled again.
set -euo pipefail
cd "$(dirname "$0")/.."
profile=${DOPUS_SIM_PROFILE:-dev}
if [[ $profile == dev ]]; then dir=debug; else dir=$profile; fi
if [[ ${DOPUS_SIM_BUILD:-} == workspace && $profile == dev ]]; then
    cargo test --quiet --locked --workspace --no-run
else
    cargo build --quiet --locked -p dopus-testing --bin dopus-sim --profile "$profile"
fi
exec "target/$dir/dopus-sim" "$@"
