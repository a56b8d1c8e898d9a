#!/usr/bin/env bash
# Regenerates web/src/api/generated.ts (the UI's TypeScript types) from the Rust DTOs in
# crates/dopus-node/src/api/dto/. The test `api::dto::typescript` fails while the file and the
# structs differ, so run this after changing a DTO and commit the result.
set -euo pipefail
cd "$(dirname "$0")/.."
DOPUS_WRITE_TS=1 cargo nextest run --locked -p dopus-node --lib -E 'test(generated_typescript_is_current)' --no-fail-fast
echo "wrote web/src/api/generated.ts"
