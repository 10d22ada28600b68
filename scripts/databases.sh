#!/usr/bin/env bash
# PostgreSQL and MariaDB for credbroker's tests.
#
#   scripts/databases.sh start   # idempotent: install if missing, start if stopped, then ensure
#                                # - PostgreSQL on 127.0.0.1:5432, role postgres trusted over
#                                #   127.0.0.1, database test
#                                # - MariaDB on 127.0.0.1:3306, root with an empty password over
#                                #   TCP, database test
#
# Both normally already run on this machine kind; then this is a quick check.
# Test machines only: it opens trust auth on 127.0.0.1 for PostgreSQL when that is missing.
set -euo pipefail

readonly PG_HOST=127.0.0.1 PG_PORT=5432
readonly MY_HOST=127.0.0.1 MY_PORT=3306
readonly WAIT_SECONDS=30

PROG=$(basename "$0")
readonly PROG

log() { printf '%s: %s\n' "$PROG" "$*" >&2; }
fail() { # fail <component> <what>
  printf '%s: %s failed to start: %s\n' "$PROG" "$1" "$2" >&2
  exit 1
}

as_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    printf '%s: need root to run: %s (no sudo available)\n' "$PROG" "$*" >&2
    return 1
  fi
}

APT_UPDATED=0
apt_install() { # apt_install <component> <package...>
  local component=$1
  shift
  log "$component: installing Debian packages: $*"
  if [ "$APT_UPDATED" = 0 ]; then
    as_root apt-get update -q >/dev/null || fail "$component" "apt-get update failed"
    APT_UPDATED=1
  fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null \
    || fail "$component" "apt-get install $* failed"
}

# wait_for <seconds> <command...>: retry until the command succeeds.
wait_for() {
  local deadline=$(( SECONDS + $1 ))
  shift
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$deadline" ] || return 1
    sleep 0.2
  done
}

# -------------------------------------------------------------------------------- PostgreSQL

pg_version() {
  local v
  v=$(find /etc/postgresql -mindepth 1 -maxdepth 1 -type d -printf '%f\n' 2>/dev/null | sort -V | tail -n 1)
  if [ -z "$v" ]; then
    v=$(find /usr/lib/postgresql -mindepth 1 -maxdepth 1 -type d -printf '%f\n' 2>/dev/null | sort -V | tail -n 1)
  fi
  printf '%s\n' "$v"
}

pg_tcp() { psql -h "$PG_HOST" -p "$PG_PORT" -U postgres -w -X -q "$@"; }
pg_local() { as_root runuser -u postgres -- psql -p "$PG_PORT" -X -q "$@"; }

start_postgres() {
  local ver="" hba
  if ! command -v pg_isready >/dev/null 2>&1 || ! command -v psql >/dev/null 2>&1; then
    apt_install PostgreSQL postgresql
  fi
  if ! pg_isready -q -h "$PG_HOST" -p "$PG_PORT"; then
    if ! command -v pg_ctlcluster >/dev/null 2>&1 || [ -z "$(pg_version)" ]; then
      apt_install PostgreSQL postgresql
    fi
    ver=$(pg_version)
    [ -n "$ver" ] || fail PostgreSQL "no PostgreSQL version found under /usr/lib/postgresql"
    if [ ! -d "/etc/postgresql/$ver/main" ]; then
      log "PostgreSQL: creating cluster $ver/main"
      as_root pg_createcluster "$ver" main >/dev/null || fail PostgreSQL "pg_createcluster $ver main failed"
    fi
    log "PostgreSQL: starting cluster $ver/main"
    as_root pg_ctlcluster --skip-systemctl-redirect "$ver" main start \
      || pg_isready -q -h "$PG_HOST" -p "$PG_PORT" \
      || fail PostgreSQL "pg_ctlcluster --skip-systemctl-redirect $ver main start failed (log: /var/log/postgresql/postgresql-$ver-main.log)"
    wait_for "$WAIT_SECONDS" pg_isready -q -h "$PG_HOST" -p "$PG_PORT" \
      || fail PostgreSQL "not accepting connections on $PG_HOST:$PG_PORT after ${WAIT_SECONDS} s (log: /var/log/postgresql/postgresql-$ver-main.log)"
  fi

  # Role postgres must get in over 127.0.0.1 without a password (a fresh install asks for one).
  if ! pg_tcp -d postgres -Atc 'select 1' >/dev/null 2>&1; then
    hba=$(pg_local -d postgres -Atc 'show hba_file') || fail PostgreSQL "cannot connect as postgres through the local socket"
    log "PostgreSQL: adding 'host all all 127.0.0.1/32 trust' at the top of $hba (test machine)"
    as_root sed -i '1i host all all 127.0.0.1/32 trust' "$hba" || fail PostgreSQL "cannot edit $hba"
    pg_local -d postgres -Atc 'select pg_reload_conf()' >/dev/null || fail PostgreSQL "reload failed"
    wait_for 10 pg_tcp -d postgres -Atc 'select 1' \
      || fail PostgreSQL "role postgres still cannot connect over $PG_HOST:$PG_PORT without a password"
  fi
  if [ "$(pg_tcp -d postgres -Atc "select 1 from pg_database where datname = 'test'")" != 1 ]; then
    log "PostgreSQL: creating database test"
    pg_tcp -d postgres -c 'create database test' || fail PostgreSQL "create database test failed"
  fi
  # Database credbroker_auth: every role but postgres/root must log in with its SCRAM password,
  # so the database-credential tests see real password checks and VALID UNTIL (trust, used
  # everywhere else here, ignores both).
  hba=$(pg_tcp -d postgres -Atc 'show hba_file') || fail PostgreSQL "cannot read hba_file"
  if ! as_root grep -q '^host credbroker_auth ' "$hba"; then
    log "PostgreSQL: requiring scram-sha-256 for database credbroker_auth in $hba (test machine)"
    as_root sed -i -e '1i host credbroker_auth postgres,root 127.0.0.1/32 trust' \
      -e '1i host credbroker_auth all 127.0.0.1/32 scram-sha-256' "$hba" || fail PostgreSQL "cannot edit $hba"
    pg_tcp -d postgres -Atc 'select pg_reload_conf()' >/dev/null || fail PostgreSQL "reload failed"
  fi
  if [ "$(pg_tcp -d postgres -Atc "select 1 from pg_database where datname = 'credbroker_auth'")" != 1 ]; then
    log "PostgreSQL: creating database credbroker_auth"
    pg_tcp -d postgres -c 'create database credbroker_auth' || fail PostgreSQL "create database credbroker_auth failed"
  fi
  log "PostgreSQL $(pg_tcp -d postgres -Atc 'show server_version' | cut -d' ' -f1) ready on $PG_HOST:$PG_PORT (postgres@test, trust; credbroker_auth: scram)"
}

# -------------------------------------------------------------------------------- MariaDB

my_client() {
  if command -v mariadb >/dev/null 2>&1; then printf 'mariadb\n'; else printf 'mysql\n'; fi
}
my_tcp() { "$(my_client)" --protocol=tcp -h "$MY_HOST" -P "$MY_PORT" -uroot --connect-timeout=3 "$@"; }
# As the Unix root user through the socket: works with a fresh install's unix_socket auth.
my_socket() { as_root "$(my_client)" -uroot "$@"; }
# The server answers at all (mariadb-admin ping succeeds even when access is denied).
my_alive() {
  local admin=mariadb-admin
  command -v "$admin" >/dev/null 2>&1 || admin=mysqladmin
  "$admin" --protocol=tcp -h "$MY_HOST" -P "$MY_PORT" -uroot --connect-timeout=2 ping >/dev/null 2>&1
}

start_mariadb() {
  if ! command -v mariadb >/dev/null 2>&1 && ! command -v mysql >/dev/null 2>&1; then
    apt_install MariaDB mariadb-server
  fi
  if ! my_alive; then
    if [ ! -x /usr/sbin/mariadbd ]; then
      apt_install MariaDB mariadb-server
    fi
    [ -x /usr/sbin/mariadbd ] || fail MariaDB "/usr/sbin/mariadbd missing after installing mariadb-server"
    # Runtime and log directories may be gone (tmpfs /run) on a machine that never ran it.
    as_root install -d -o mysql -g mysql -m 0755 /run/mysqld \
      || fail MariaDB "cannot create /run/mysqld owned by mysql"
    as_root install -d -o mysql -g adm -m 2750 /var/log/mysql 2>/dev/null || true
    if [ ! -d /var/lib/mysql/mysql ]; then
      log "MariaDB: initialising the data directory /var/lib/mysql"
      as_root mariadb-install-db --user=mysql --datadir=/var/lib/mysql >/dev/null \
        || fail MariaDB "mariadb-install-db failed"
    fi
    log "MariaDB: starting /usr/sbin/mariadbd"
    # --user=mysql: mariadbd refuses to run as root; it drops privileges itself.
    as_root start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd -- --user=mysql \
      || fail MariaDB "start-stop-daemon --exec /usr/sbin/mariadbd failed"
    wait_for "$WAIT_SECONDS" my_alive \
      || fail MariaDB "no answer on $MY_HOST:$MY_PORT after ${WAIT_SECONDS} s (see /var/log/mysql/error.log or journal)"
  fi

  # root with an empty password over TCP (a fresh install only lets the Unix root user in
  # through the socket, via unix_socket).
  if ! my_tcp -e 'select 1' >/dev/null 2>&1; then
    log "MariaDB: allowing root with an empty password over $MY_HOST (test machine)"
    my_socket -e "ALTER USER root@localhost IDENTIFIED VIA unix_socket OR mysql_native_password USING PASSWORD('');
CREATE USER IF NOT EXISTS root@'127.0.0.1' IDENTIFIED BY '';
GRANT ALL PRIVILEGES ON *.* TO root@'127.0.0.1' WITH GRANT OPTION;
FLUSH PRIVILEGES;" || fail MariaDB "cannot fix root's authentication through the socket"
    wait_for 10 my_tcp -e 'select 1' \
      || fail MariaDB "root still cannot connect over $MY_HOST:$MY_PORT without a password"
  fi
  my_tcp -e 'CREATE DATABASE IF NOT EXISTS test' || fail MariaDB "create database test failed"
  log "MariaDB ready on $MY_HOST:$MY_PORT (root@test, empty password)"
}

case "${1:-}" in
  start)
    start_postgres
    start_mariadb
    ;;
  *)
    echo "usage: $PROG start" >&2
    exit 2
    ;;
esac
