#!/usr/bin/env bash
# Every benchmark in one run, then one table: benchmark, figure, floor, ratio, target, pass/fail.
#
#   scripts/bench.sh                      # all benchmarks (~20 min on 2 cores, plus release builds)
#   scripts/bench.sh exchange cold_init   # some of them (exchange db_mint revoker_sweep cold_init)
#   scripts/bench.sh --update-docs        # also write the table into docs/benchmarks.md
#
# Starts what the benchmarks need the way scripts/test.sh does (PostgreSQL, MariaDB, LocalStack;
# a LocalStack this run started is stopped at the end) and builds the release binaries the
# cold-init benchmark starts. Each bench prints its own detailed figures and appends its headline
# rows to a JSON-lines file (tests/src/bench.rs); the table is rendered from those rows. Exits 1
# when a figure misses its target (after printing everything).
set -euo pipefail

cd "$(dirname "$0")/.."

all=(exchange db_mint revoker_sweep cold_init)
benches=()
update_docs=0
for arg in "$@"; do
  case $arg in
    --update-docs) update_docs=1 ;;
    exchange|db_mint|revoker_sweep|cold_init) benches+=("$arg") ;;
    *) echo "bench.sh: unknown argument '$arg' (benches: ${all[*]}; --update-docs)" >&2; exit 2 ;;
  esac
done
if [ ${#benches[@]} -eq 0 ]; then
  benches=("${all[@]}")
fi
if [ "$update_docs" = 1 ] && [ ${#benches[@]} -ne ${#all[@]} ]; then
  echo "bench.sh: --update-docs needs every benchmark (the table replaces the whole one in the docs)" >&2
  exit 2
fi

if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
  PATH=$HOME/.cargo/bin:$PATH
fi
command -v cargo >/dev/null 2>&1 || { echo "bench.sh: cargo not found: install the Rust toolchain" >&2; exit 1; }

started_localstack=0
localstack_port=${CREDBROKER_LOCALSTACK_PORT:-4566}
export CREDBROKER_LOCALSTACK_PORT=$localstack_port
results=$(mktemp)
finish() {
  local rc=$?
  trap - EXIT INT TERM
  if [ "$started_localstack" = 1 ] && [ "${KEEP_LOCALSTACK:-0}" != 1 ]; then
    bash scripts/localstack.sh stop || rc=1
  fi
  rm -f "$results"
  exit "$rc"
}
trap finish EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

bash scripts/databases.sh start
if ! bash scripts/localstack.sh status >/dev/null 2>&1; then
  started_localstack=1
fi
bash scripts/localstack.sh start

for bench in "${benches[@]}"; do
  if [ "$bench" = cold_init ]; then
    # The functions and their floors, as deployed: release profile, stripped, each package
    # built alone (as `sam build` builds it). Built together, Cargo would give every function
    # the core-crate features of all three.
    for package in token-exchange revoker db-credentials credbroker-floors; do
      cargo build --release -p "$package"
    done
  fi
done

bench_args=()
for bench in "${benches[@]}"; do
  bench_args+=(--bench "$bench")
done
env -u AWS_PROFILE -u AWS_DEFAULT_PROFILE -u AWS_SESSION_TOKEN \
  CREDBROKER_BENCH_RESULTS="$results" \
  CREDBROKER_TEST_AWS_ENDPOINT="http://127.0.0.1:$localstack_port" \
  CREDBROKER_TEST_PG_URL=postgres://postgres@127.0.0.1:5432/test \
  CREDBROKER_TEST_MYSQL_URL=mysql://root@127.0.0.1:3306/test \
  AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1 \
  cargo bench -p credbroker-tests "${bench_args[@]}"

machine="$(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo)"
table=$(python3 scripts/bench-table.py "$results" "$(date -u +%Y-%m-%d)" "$machine")
echo
echo "$table"

if [ "$update_docs" = 1 ]; then
  python3 - "$table" docs/benchmarks.md <<'EOF'
import sys
table, path = sys.argv[1], sys.argv[2]
text = open(path).read()
start, end = "<!-- bench-table:start -->", "<!-- bench-table:end -->"
head, rest = text.split(start, 1)
_, tail = rest.split(end, 1)
open(path, "w").write(f"{head}{start}\n{table}\n{end}{tail}")
EOF
  echo "bench.sh: table written to docs/benchmarks.md"
fi

if grep -q '"pass":false' "$results"; then
  echo "bench.sh: some figures miss their targets (FAIL rows above)" >&2
  exit 1
fi
