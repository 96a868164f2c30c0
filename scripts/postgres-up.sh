#!/usr/bin/env bash
# postgres-up.sh - a throwaway PostgreSQL server on loopback for opentela's store tests and CI.
# Idempotent: a server this script already started is reused.
#
#   url=$(bash scripts/postgres-up.sh | tail -1)     # postgresql://postgres@127.0.0.1:55432/opentela_test
#   OTELA_DB=$url opentela-node token list ...
#   bash scripts/postgres-down.sh [--clean]          # stop it (--clean: delete its files too)
#
# Debian's `postgresql` package, installed with apt-get when missing (no Docker, no systemd,
# the distribution's own cluster is left alone). The cluster lives in $OPENTELA_PG_DIR
# (default /tmp/otela-pg): data/, the server log and the Unix socket. It listens on
# 127.0.0.1:$OPENTELA_PG_PORT (default 55432, off the usual 5432) only, with trust
# authentication for the `postgres` role: it is a test server, reachable from this machine
# only. fsync is off (a test database need not survive a power cut; tests run faster).
# initdb refuses to run as root, so as root the server runs as the `postgres` user that the
# package creates. The last line of standard output is the database URL; the rest goes to
# standard error.
# Settings (environment): OPENTELA_PG_DIR, OPENTELA_PG_PORT, OPENTELA_PG_DB (opentela_test).
# (Not OTELA_*: every OTELA_* variable is a node setting.)
set -euo pipefail

DIR=${OPENTELA_PG_DIR:-/tmp/otela-pg}
PORT=${OPENTELA_PG_PORT:-55432}
DB=${OPENTELA_PG_DB:-opentela_test}
DATA=$DIR/data
LOG=$DIR/postgres.log

log() { echo "[postgres-up] $*" >&2; }
die() { echo "[postgres-up] ERROR: $*" >&2; exit 1; }

pg_bindir() {
  local d
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
  if [[ -n "$d" && -x "$d/pg_ctl" ]]; then echo "$d"; return; fi
  if command -v pg_ctl >/dev/null; then dirname "$(readlink -f "$(command -v pg_ctl)")"; fi
}

BIN=$(pg_bindir)
if [[ -z "$BIN" ]]; then
  [[ $(id -u) -eq 0 ]] || die "PostgreSQL is not installed and installing it needs root (apt-get install postgresql)"
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-cache policy postgresql 2>/dev/null | grep -q 'Candidate: [0-9]'; then
    log "apt lists lack postgresql: running apt-get update"
    apt-get update -qq || die "apt-get update failed"
  fi
  log "installing postgresql with apt-get"
  apt-get install -y -qq --no-install-recommends postgresql >/dev/null \
    || die "apt-get install postgresql failed"
  BIN=$(pg_bindir)
  [[ -n "$BIN" ]] || die "pg_ctl still missing after installing postgresql"
fi

# As root, the server runs as `postgres`; otherwise as whoever runs this script.
if [[ $(id -u) -eq 0 ]]; then
  id postgres >/dev/null 2>&1 || die "no 'postgres' user to run the server as (initdb refuses root)"
  as_pg() { runuser -u postgres -- "$@"; }
  OWNER=postgres
else
  as_pg() { "$@"; }
  OWNER=$(id -un)
fi

mkdir -p "$DIR"
chown "$OWNER" "$DIR"
chmod 700 "$DIR"
cd "$DIR"  # the server's user must be able to read its working directory

if [[ ! -s "$DATA/PG_VERSION" ]]; then
  rm -rf "$DATA"
  log "initdb in $DATA"
  as_pg "$BIN/initdb" -D "$DATA" -U postgres --auth=trust -E UTF8 --no-sync >/dev/null \
    || die "initdb failed"
fi

if as_pg "$BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; then
  running_port=$(sed -n 4p "$DATA/postmaster.pid" 2>/dev/null || true)
  [[ "$running_port" == "$PORT" ]] \
    || die "the server in $DATA runs on port $running_port, not $PORT; run scripts/postgres-down.sh first"
  log "already running on 127.0.0.1:$PORT"
else
  log "starting on 127.0.0.1:$PORT (log: $LOG)"
  opts="-c listen_addresses=127.0.0.1 -c port=$PORT -c unix_socket_directories=$DIR"
  opts+=" -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
  if ! as_pg "$BIN/pg_ctl" -D "$DATA" -l "$LOG" -w -t 60 -o "$opts" start >/dev/null; then
    tail -n 20 "$LOG" >&2 || true
    die "pg_ctl start failed (is port $PORT taken?)"
  fi
fi

psql=("$BIN/psql" -h 127.0.0.1 -p "$PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 -qtA)
if [[ "$("${psql[@]}" -c "SELECT 1 FROM pg_database WHERE datname = '$DB'")" != 1 ]]; then
  log "creating database $DB"
  "${psql[@]}" -c "CREATE DATABASE \"$DB\"" >/dev/null || die "CREATE DATABASE $DB failed"
fi
echo "postgresql://postgres@127.0.0.1:$PORT/$DB"
