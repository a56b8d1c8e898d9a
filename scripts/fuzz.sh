#!/usr/bin/env bash
# Runs the fuzz targets in fuzz/ (cargo-fuzz + libFuzzer, nightly toolchain). fuzz/README.md.
#   scripts/fuzz.sh                    every target briefly (the test command's step)
#   scripts/fuzz.sh --runs N [T ...]   N inputs per target (T: target names; default all)
#   scripts/fuzz.sh --time S [T ...]   S seconds per target
# Each run starts from the checked-in seeds (fuzz/seeds/T) in a scratch corpus, so the seeds are
# never rewritten; crashes land in fuzz/artifacts/T/ and fail the script.
set -euo pipefail
cd "$(dirname "$0")/.."

limit=(-runs=20000 -max_total_time=20)
if [[ "${1:-}" == "--runs" ]]; then limit=(-runs="$2"); shift 2
elif [[ "${1:-}" == "--time" ]]; then limit=(-max_total_time="$2"); shift 2
fi

if ! rustup toolchain list | grep -q '^nightly'; then
  echo "the fuzz targets need the nightly toolchain (rustup toolchain install nightly)" >&2
  exit 1
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz"
  cargo install cargo-fuzz --locked --version 0.13.2
fi

targets=("$@")
if ((${#targets[@]} == 0)); then
  for f in fuzz/src/bin/*.rs; do targets+=("$(basename "$f" .rs)"); done
fi

start=$SECONDS
cargo +nightly fuzz build
echo "fuzz: built ${#targets[@]} targets in $((SECONDS - start)) s"
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
for t in "${targets[@]}"; do
  mkdir -p "$scratch/$t"
  [[ -d fuzz/seeds/$t ]] && cp fuzz/seeds/"$t"/* "$scratch/$t"/
  t0=$SECONDS
  if ! out=$(cargo +nightly fuzz run "$t" "$scratch/$t" -- "${limit[@]}" -max_len=70000 2>&1); then
    echo "$out" | tail -40
    echo "fuzz: target $t FAILED (see fuzz/artifacts/$t/)" >&2
    exit 1
  fi
  runs=$(echo "$out" | grep -oE 'Done [0-9]+ runs' | tail -1 || true)
  echo "fuzz: $t ok (${runs:-no summary}, $((SECONDS - t0)) s)"
done
echo "fuzz: ${#targets[@]} targets, $((SECONDS - start)) s"
