#!/usr/bin/env bash
# Builds the web UI into web/dist (embedded into the discordopus binary at compile time).
# Skips npm install when node_modules is current, and the build when nothing under web/ changed.
set -euo pipefail
cd "$(dirname "$0")/../web"
if [[ ! -d node_modules || package-lock.json -nt node_modules/.package-lock.json ]]; then
  npm ci --no-audit --no-fund --loglevel=error
fi
stamp=dist/.build-stamp
if [[ -f $stamp ]] && [[ -z $(find src index.html package.json vite.config.ts tsconfig.json -newer "$stamp" 2>/dev/null | head -1) ]]; then
  exit 0
fi
npm run --silent build
touch "$stamp"
