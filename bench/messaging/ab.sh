#!/usr/bin/env bash
# A/B of the messaging benchmark between two commits, alternating runs (docs/benchmarks.md).
#
#   bench/messaging/ab.sh OLD_COMMIT NEW_COMMIT [ROUNDS] [-- extra benchmark arguments]
#
# Builds both in release (one shared target directory, /tmp/dopus-ab-target, so dependencies
# compile once; each commit's own crates are rebuilt), then runs old, new, old, new … with
# `--throughput-messages 20000` unless other arguments are given. With DOPUS_AB_PAUSE=1 it
# pauses every rustc/cargo/linker process on the machine while the runs last (resumed on exit),
# for machines shared with other builds.
set -euo pipefail
old=${1:?old commit}; new=${2:?new commit}; rounds=${3:-3}
shift $(( $# < 3 ? $# : 3 )); [[ ${1:-} == "--" ]] && shift
args=("$@"); [[ ${#args[@]} -eq 0 ]] && args=(--throughput-messages 20000)
repo=$(git rev-parse --show-toplevel)
target=/tmp/dopus-ab-target; bins=/tmp/dopus-ab-bin
for side in old new; do
  commit=${!side}; tree=/tmp/dopus-ab-$side
  [[ -d $tree ]] || git -C "$repo" worktree add --detach "$tree" "$commit" >/dev/null
  git -C "$tree" checkout --quiet --detach "$commit"
  # The shared target directory must not mistake the other commit's crates for fresh ones.
  rm -rf "$target"/release/.fingerprint/dopus-* "$target"/release/deps/libdopus_* "$target"/release/deps/dopus_*
  (cd "$tree" && CARGO_TARGET_DIR=$target cargo build --release -p dopus-node -p dopus-bench-messaging)
  mkdir -p "$bins/$side"; cp "$target"/release/{discordopus,dopus-bench-messaging} "$bins/$side/"
done
if [[ ${DOPUS_AB_PAUSE:-0} == 1 ]]; then
  pids=$(pgrep -x 'rustc|cargo|cc|ld|cc1|collect2' | tr '\n' ' ' || true)
  [[ -n $pids ]] && kill -STOP $pids
  trap '[[ -n ${pids:-} ]] && kill -CONT $pids' EXIT
fi
for ((i = 1; i <= rounds; i++)); do
  for side in old new; do
    echo "=== round $i $side ($(date -u +%T) UTC, load $(cut -d' ' -f1-3 /proc/loadavg))"
    timeout 600 "$bins/$side/dopus-bench-messaging" "${args[@]}"
  done
done
