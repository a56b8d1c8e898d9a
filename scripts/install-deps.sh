#!/usr/bin/env bash
# Installs the system packages DiscordOpus needs to build, run and test on Debian.
# Idempotent: skips everything already present. Needs root (or sudo) only when something is missing.
#   --test   also install what the test suite needs (Chromium for browser tests, redis-server,
#            opus-tools for the media fixtures, coturn for the TURN interop tests)
set -euo pipefail

want=(pkg-config libssl-dev)
if [[ "${1:-}" == "--test" ]]; then
  want+=(chromium fonts-noto-color-emoji redis-server iproute2 iptables opus-tools coturn conntrack)
fi

missing=()
for pkg in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
command -v node >/dev/null 2>&1 || missing+=(nodejs npm)

if ((${#missing[@]})); then
  echo "installing system packages: ${missing[*]}"
  sudo=""
  [[ $(id -u) -ne 0 ]] && sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
if ((node_major < 20)); then
  echo "error: Node.js 20 or newer is required to build the web UI (found: $(node --version 2>/dev/null || echo none))." >&2
  echo "       Debian 12's own nodejs package is 18; install Node 20+ (e.g. from nodejs.org or nvm)." >&2
  exit 1
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "error: cargo (Rust 1.89 or newer) is required: https://rustup.rs" >&2
  exit 1
fi
