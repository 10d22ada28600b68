#!/usr/bin/env bash
# The whole stack inside LocalStack, one command (docs/deploy.md, "Try the whole stack locally"):
#
#   scripts/fullstack-test.sh
#
# 1. tools: sam, samlocal, cargo-lambda (scripts/infra-tools.sh), LocalStack with the host
#    Lambda executor (scripts/localstack.sh; started here if none runs, stopped again at the end)
# 2. the executor's own tests (tests/localstack-executor/tests)
# 3. tests/fullstack/fullstack_test.py: `sam build --config-env local` (x86_64 debug build of the
#    functions, the ConfigLayer with the test's policies), `samlocal deploy --config-env local`,
#    token exchanges through the REST API's LocalStack URL (signing key: the stack's generated
#    secret), the lease in the deployed table, refusals with the same reasons as locally, the
#    lease API (GET/DELETE) and the db-credentials route, the EventBridge schedule firing the
#    revoker until an expired lease is REVOKED (~1 min), teardown
# 4. no bootstrap process outlives the suite (nor LocalStack, when this script started it)
#
# Environment: CREDBROKER_LOCALSTACK_PORT (default 4566); KEEP_LOCALSTACK=1 leaves a LocalStack
# this script started running; FULLSTACK_SKIP_BUILD / FULLSTACK_KEEP_STACK, see the driver.
# Output ends with `fullstack-test: N passed, N failed`.
set -euo pipefail

cd "$(dirname "$0")/.."

readonly PORT=${CREDBROKER_LOCALSTACK_PORT:-4566}
readonly CACHE=${CREDBROKER_CACHE:-$HOME/.cache/credbroker}
readonly LS_PY=$CACHE/localstack-venv/bin/python
started=0
passed=0
failed=0
declare -a notes=()

count() { # count <file>: add the "<word>: N passed, N failed" line of a suite
  local line
  line=$(grep -E '^[a-z-]+: [0-9]+ passed, [0-9]+ failed' "$1" | tail -n 1 || true)
  if [ -z "$line" ]; then
    failed=$(( failed + 1 ))
    notes+=("$(basename "$1" .log): no summary line")
    return
  fi
  passed=$(( passed + $(sed -E 's/^[^:]+: ([0-9]+) passed.*/\1/' <<< "$line") ))
  failed=$(( failed + $(sed -E 's/.* ([0-9]+) failed.*/\1/' <<< "$line") ))
}

# Processes of a host-executor bootstrap: they carry AWS_LAMBDA_RUNTIME_API in their environment
# and the executor's per-generation Runtime API port. Any left after the suite is a leak.
leftover_bootstraps() {
  local f p
  for f in /proc/[0-9]*/environ; do
    p=${f#/proc/}
    p=${p%/environ}
    if grep -qz '^AWS_LAMBDA_RUNTIME_API=127\.0\.0\.1:' "$f" 2>/dev/null \
       && grep -qz '^LOCALSTACK_RUNTIME_ID=' "$f" 2>/dev/null; then
      printf '%s ' "$p"
    fi
  done
}

finish() {
  local rc=$?
  trap - EXIT
  if [ "$started" = 1 ] && [ "${KEEP_LOCALSTACK:-0}" != 1 ]; then
    if CREDBROKER_LOCALSTACK_PORT=$PORT bash scripts/localstack.sh stop; then
      passed=$(( passed + 1 ))
      echo "  ok    LocalStack stopped, none of its processes left"
    else
      failed=$(( failed + 1 ))
      notes+=("LocalStack processes survived its stop")
    fi
  fi
  local left
  left=$(leftover_bootstraps)
  if [ "$started" = 1 ] || [ -z "$left" ]; then
    # With a LocalStack of someone else's, only our stack's bootstraps are ours to judge (the
    # driver checks those); here: nothing at all may be left when we ran LocalStack ourselves.
    if [ -n "$left" ]; then
      failed=$(( failed + 1 ))
      notes+=("bootstrap processes left: $left")
    else
      passed=$(( passed + 1 ))
      echo "  ok    no bootstrap process outlives the suite"
    fi
  fi
  if [ "${#notes[@]}" -gt 0 ]; then printf 'fullstack-test: %s\n' "${notes[@]}" >&2; fi
  if [ "$rc" != 0 ] && [ "$failed" = 0 ]; then failed=1; fi
  echo "fullstack-test: $passed passed, $failed failed"
  if [ "$failed" != 0 ]; then exit 1; fi
  exit "$rc"
}
trap finish EXIT

TOOLS_BIN=$(bash scripts/infra-tools.sh sam)
if ! CREDBROKER_LOCALSTACK_PORT=$PORT bash scripts/localstack.sh status >/dev/null 2>&1; then
  started=1
fi
CREDBROKER_LOCALSTACK_PORT=$PORT bash scripts/localstack.sh start

logdir=$(mktemp -d)
echo "fullstack-test: host executor tests"
if "$LS_PY" tests/localstack-executor/tests/test_executor.py > "$logdir/executor.log" 2>&1; then
  tail -n 1 "$logdir/executor.log"
else
  cat "$logdir/executor.log"
fi
count "$logdir/executor.log"

echo "fullstack-test: SAM template in LocalStack"
if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then PATH=$HOME/.cargo/bin:$PATH; fi
FULLSTACK_ENDPOINT=http://127.0.0.1:$PORT FULLSTACK_TOOLS_BIN=$TOOLS_BIN \
  "$LS_PY" tests/fullstack/fullstack_test.py 2>&1 | tee "$logdir/fullstack.log" || true
count "$logdir/fullstack.log"
rm -rf "$logdir"
