#!/usr/bin/env bash
# postgres-down.sh - stop the server scripts/postgres-up.sh started (by its data directory,
# never another PostgreSQL on the machine). --clean also deletes $OPENTELA_PG_DIR.
set -euo pipefail

DIR=${OPENTELA_PG_DIR:-/tmp/otela-pg}
DATA=$DIR/data

log() { echo "[postgres-down] $*" >&2; }

BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
[[ -n "$BIN" && -x "$BIN/pg_ctl" ]] || BIN=$(dirname "$(readlink -f "$(command -v pg_ctl || echo /nonexistent/pg_ctl)")")
if [[ $(id -u) -eq 0 ]]; then as_pg() { runuser -u postgres -- "$@"; }; else as_pg() { "$@"; }; fi

if [[ -d "$DATA" ]] && [[ -x "$BIN/pg_ctl" ]]; then
  cd "$DIR"
  if as_pg "$BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; then
    log "stopping the server in $DATA"
    as_pg "$BIN/pg_ctl" -D "$DATA" -m fast -w -t 30 stop >/dev/null
  else
    log "no server running in $DATA"
  fi
fi
if [[ "${1:-}" == "--clean" ]]; then
  cd /
  rm -rf "$DIR"
  log "removed $DIR"
fi
