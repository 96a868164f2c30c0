#!/usr/bin/env bash
# slurm-down.sh - stop the Slurm cluster started by scripts/slurm-up.sh. Idempotent.
#
#   bash scripts/slurm-down.sh           # cancel its jobs, stop its daemons, keep logs/state
#   bash scripts/slurm-down.sh --purge   # ... and delete $OTELA_SLURM_DIR
#
# Only the daemons recorded in $OTELA_SLURM_DIR/run/*.pid and munge/munged.pid are stopped,
# each by its pid (checked to still be that program); any other Slurm or munge is untouched.
set -uo pipefail
DIR=${OTELA_SLURM_DIR:-/tmp/otela-slurm}
log() { echo "[slurm-down] $*" >&2; }
export SLURM_CONF=$DIR/slurm.conf

alive() {  # alive PIDFILE NAMES: as in slurm-up.sh
  local p
  [ -s "$1" ] || return 1
  p=$(cat "$1" 2>/dev/null) || return 1
  [[ $p =~ ^[0-9]+$ ]] && kill -0 "$p" 2>/dev/null && [[ $(cat "/proc/$p/comm" 2>/dev/null) =~ ^($2)$ ]]
}
running() {  # running PID: exists and is not a zombie waiting for init to reap it
  local st
  read -r _ _ st _ <"/proc/$1/stat" 2>/dev/null || return 1
  [ "$st" != Z ]
}
stop_pidfiles() {  # stop_pidfiles NAMES FILE...: SIGTERM all at once, 5 s, then SIGKILL
  local name=$1 f p pids=()
  shift
  for f in "$@"; do
    [ -e "$f" ] || continue
    if alive "$f" "$name"; then
      p=$(cat "$f"); log "stopping $(cat "/proc/$p/comm") (pid $p)"; kill "$p" 2>/dev/null || true; pids+=("$p")
    else
      log "not running: $f (stale pidfile removed)"
    fi
    rm -f "$f"
  done
  for _ in $(seq 50); do
    for p in "${pids[@]}"; do running "$p" && { sleep 0.1; continue 2; }; done
    return 0
  done
  for p in "${pids[@]}"; do
    running "$p" && { log "pid $p ignored SIGTERM for 5 s: SIGKILL"; kill -9 "$p" 2>/dev/null || true; }
  done
  return 0
}

if [ ! -d "$DIR" ]; then
  log "nothing to do: $DIR does not exist"
  exit 0
fi

# Cancel this cluster's jobs first, so their steps end (and their processes are stopped by
# slurmstepd) before the slurmds go away.
if alive "$DIR/run/slurmctld.pid" slurmctld && command -v scancel >/dev/null; then
  if [ -n "$(squeue -h -o %i 2>/dev/null)" ]; then
    log "cancelling jobs: $(squeue -h -o %i 2>/dev/null | tr '\n' ' ')"
    scancel --user="$(id -un)" 2>/dev/null || true
    for _ in $(seq 100); do [ -z "$(squeue -h -o %i 2>/dev/null)" ] && break; sleep 0.2; done
    [ -n "$(squeue -h -o %i 2>/dev/null)" ] && log "jobs still listed after 20 s: stopping anyway"
  fi
fi
shopt -s nullglob
stop_pidfiles 'slurmd|slurmctld' "$DIR"/run/slurmd-*.pid "$DIR/run/slurmctld.pid"
shopt -u nullglob
stop_pidfiles munged "$DIR/munge/munged.pid"

if [ "${1:-}" = --purge ]; then
  log "removing $DIR"
  rm -rf "${DIR:?}"
fi
log "done"
