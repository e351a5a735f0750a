#!/usr/bin/env bash
# `npm test`: checks, then brings the real test environment up (building what is missing) and runs
# every unit and integration test against it. Extra arguments go to vitest.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '\n== %s\n' "$*"; }

step "generated protocol code matches proto/"
npm run -s gen:check
step "lint"
npx biome check .
step "typecheck"
npx tsc -b
step "test environment"
bash scripts/test-env/test-env.sh up
eval "$(bash scripts/test-env/test-env.sh env)"
bash scripts/test-env/test-env.sh status
step "tests"
npx vitest run "$@"
