#!/usr/bin/env bash
# The whole test suite: static checks of the deployment code, PostgreSQL, MariaDB and LocalStack
# (installed and started as needed), the debug binaries (end-to-end tests run them from
# target/debug), every test target, the core crate's unit tests without features, then the
# full stack in LocalStack (SAM template deployed, called through API Gateway;
# scripts/fullstack-test.sh).
#
#   scripts/test.sh                       # everything
#   scripts/test.sh mint --nocapture      # extra arguments go to the test binaries:
#                                         #   cargo test --workspace --all-targets --no-fail-fast -- ARGS
#   TEST_ARGS="--test-threads=2" scripts/test.sh   # same, from the environment
#   KEEP_LOCALSTACK=1 scripts/test.sh     # leave a LocalStack this run started running
#   CREDBROKER_LOCALSTACK_PORT=4588 scripts/test.sh   # a LocalStack of its own on another port
#
# A LocalStack that was already running is reused and left alone; one this run started is
# stopped at the end, and then no process of it (nor any Lambda bootstrap) may be left. The
# tests get:
#   CREDBROKER_TEST_AWS_ENDPOINT=http://127.0.0.1:4566 (or the port above)
#   CREDBROKER_TEST_PG_URL=postgres://postgres@127.0.0.1:5432/test
#   CREDBROKER_TEST_MYSQL_URL=mysql://root@127.0.0.1:3306/test
#   AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1
set -euo pipefail

cd "$(dirname "$0")/.."

stage='setup'
started_localstack=0
localstack_port=${CREDBROKER_LOCALSTACK_PORT:-4566}
export CREDBROKER_LOCALSTACK_PORT=$localstack_port
output=""
start_time=$SECONDS

finish() {
  local rc=$?
  trap - EXIT INT TERM
  if [ "$started_localstack" = 1 ]; then
    if [ "${KEEP_LOCALSTACK:-0}" = 1 ]; then
      echo "test.sh: leaving LocalStack running (KEEP_LOCALSTACK=1): scripts/localstack.sh stop stops it"
    else
      if ! bash scripts/localstack.sh stop; then
        echo "test.sh: processes of the LocalStack this run started survive it" >&2
        if [ "$rc" = 0 ]; then rc=1; stage='cleanup'; fi
      fi
      local left
      left=$(leftover_bootstraps)
      if [ -n "$left" ]; then
        echo "test.sh: Lambda bootstrap processes outlive the suite: $left" >&2
        if [ "$rc" = 0 ]; then rc=1; stage='cleanup'; fi
      fi
    fi
  fi
  local counts=""
  if [ -n "$output" ] && [ -f "$output" ]; then
    # Add up libtest's "test result: ok. 3 passed; 0 failed; 1 ignored; ..." lines.
    counts=$(sed -e 's/\x1b\[[0-9;]*m//g' "$output" | awk '/^test result: / {
        for (i = 1; i <= NF; i++) {
          if ($(i) ~ /^passed/) p += $(i - 1)
          if ($(i) ~ /^failed/) f += $(i - 1)
          if ($(i) ~ /^ignored/) s += $(i - 1)
        }
        n++
      }
      END { if (n) printf "%d passed, %d failed, %d skipped", p, f, s }')
    rm -f "$output" "$output".*
  fi
  local took=$(( SECONDS - start_time ))
  if [ "$rc" = 0 ]; then
    echo "test.sh: PASSED in ${took} s"
  else
    echo "test.sh: FAILED in stage '$stage' (exit $rc) after ${took} s" >&2
  fi
  if [ -n "$counts" ]; then
    echo "test.sh: $counts"
  fi
  exit "$rc"
}
# Host-executor Lambda processes (scripts/fullstack-test.sh explains the markers).
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

# A suite's "<name>: N passed, N failed" line, added to the totals as libtest would print it.
add_counts() { # add_counts <log>
  sed -e 's/\x1b\[[0-9;]*m//g' "$1" | grep -E '^[a-z-]+: [0-9]+ passed, [0-9]+ failed$' | tail -n 1 \
    | sed -E 's/^[^:]+: ([0-9]+) passed, ([0-9]+) failed$/test result: x. \1 passed; \2 failed; 0 ignored/' \
    >> "$output" || true
}

# run_suite <name> <command...>: runs a non-cargo suite, adds its counts even when it fails.
run_suite() {
  local log="$output.$1" rc=0
  shift
  "$@" 2>&1 | tee "$log" || rc=$?
  add_counts "$log"
  rm -f "$log"
  return "$rc"
}

trap finish EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
  PATH=$HOME/.cargo/bin:$PATH
fi
command -v cargo >/dev/null 2>&1 || { echo "test.sh: cargo not found: install the Rust toolchain" >&2; exit 1; }

output=$(mktemp)

stage='static-checks'
run_suite static bash scripts/static-checks.sh

stage='databases'
bash scripts/databases.sh start

stage='localstack'
if ! bash scripts/localstack.sh status >/dev/null 2>&1; then
  started_localstack=1
fi
bash scripts/localstack.sh start

stage='build'
cargo build --workspace --bins

extra=()
if [ -n "${TEST_ARGS:-}" ]; then
  read -r -a extra <<< "$TEST_ARGS"
fi
extra+=("$@")

stage='test'
if [ -t 1 ] && [ -z "${CARGO_TERM_COLOR:-}" ]; then
  export CARGO_TERM_COLOR=always # keep colours although the output goes through tee
fi
env -u AWS_PROFILE -u AWS_DEFAULT_PROFILE -u AWS_SESSION_TOKEN \
  CREDBROKER_TEST_AWS_ENDPOINT="http://127.0.0.1:$localstack_port" \
  CREDBROKER_TEST_PG_URL=postgres://postgres@127.0.0.1:5432/test \
  CREDBROKER_TEST_MYSQL_URL=mysql://root@127.0.0.1:3306/test \
  AWS_ACCESS_KEY_ID=test \
  AWS_SECRET_ACCESS_KEY=test \
  AWS_REGION=us-east-1 \
  AWS_DEFAULT_REGION=us-east-1 \
  cargo test --workspace --all-targets --no-fail-fast -- "${extra[@]}" 2>&1 | tee -a "$output"

# The core crate once more with no feature at all: the workspace build unifies features, so the
# domain's paths for a function built without an adapter (token-exchange reads no database
# grant) run only here.
stage='core-alone'
cargo test -p credbroker-core --no-default-features --lib -- "${extra[@]}" 2>&1 | tee -a "$output"

stage='fullstack'
run_suite fullstack bash scripts/fullstack-test.sh
stage='done'
