#!/usr/bin/env bash
# Runs the whole DiscordOpus test suite: formatting, lints, Rust tests (unit, integration,
# multi-process), the web UI's unit tests and the browser end-to-end tests in headless Chromium.
# Installs what it needs (Debian packages, npm packages) first. Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}

step() { printf '\n==> %s\n' "$*"; }

step "system packages"
./scripts/install-deps.sh --test

step "web UI: install and build"
./scripts/build-web.sh

step "rustfmt"
cargo fmt --all -- --check

step "clippy"
cargo clippy --locked --workspace --all-targets -- -D warnings

step "rust tests (nextest)"
cargo nextest run --locked --workspace --no-fail-fast --profile ci

step "simulated network, 200 seeds (scripts/sim.sh)"
DOPUS_SIM_BUILD=workspace ./scripts/sim.sh --seeds 200

step "fuzz targets, short run (scripts/fuzz.sh)"
./scripts/fuzz.sh

step "web UI unit tests (vitest)"
(cd web && npm test --silent)

step "browser end-to-end tests (playwright-core + Debian chromium)"
# The integration tests above already built target/debug/discordopus and discordopus-server (with
# the workspace's test feature set); building them again with `cargo build -p …` would resolve
# features differently and recompile half the dependency graph.
(cd web && npm run --silent e2e)

step "browser end-to-end: files (attach, progress, pause and resume, preview, paste, drop)"
(cd web && node e2e/files.mjs)

step "browser end-to-end: spaces (three pages: invites, talk, mentions, channels, roles, kick)"
(cd web && node e2e/spaces.mjs)

step "browser end-to-end: calls (ring, accept, audio both ways through the browser legs, mute, hang up)"
(cd web && node e2e/calls.mjs)

step "browser end-to-end: voice channel (three pages hear each other, speaking, mute, leave)"
(cd web && node e2e/voice.mjs)

step "all green"
