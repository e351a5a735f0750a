#!/usr/bin/env bash
# `npm test`: checks, then brings the real test environment up (building what is missing) and runs
# every unit and integration test against it. Extra arguments go to vitest.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '\n== %s\n' "$*"; }

step "generated protocol code matches proto/"
npm run -s gen:check
step "lint"
npx biome check --error-on-warnings .
step "typecheck"
npx tsc -b
step "test environment"
bash scripts/test-env/test-env.sh up
eval "$(bash scripts/test-env/test-env.sh env)"
bash scripts/test-env/test-env.sh status
step "tests"
report=$(mktemp -t aethex-vitest-XXXXXX.json)
rc=0
npx vitest run --reporter=default --reporter=json --outputFile.json="$report" "$@" || rc=$?
# One plain closing line that any CI reads the same way.
node -e '
  const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
  const skipped = r.numPendingTests + r.numTodoTests;
  console.log(`${r.numPassedTests} passed, ${r.numFailedTests} failed` + (skipped ? `, ${skipped} skipped` : ""));
' "$report" || true
rm -f "$report"
exit $rc
