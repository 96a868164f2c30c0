#!/usr/bin/env bash
# slurm-up.sh - a real single-host Slurm cluster for opentela's tests and CI. Idempotent.
#
#   bash scripts/slurm-up.sh                        # 3 nodes n1..n3, 2 fake GPUs each
#   OTELA_SLURM_NODES=2 OTELA_SLURM_GPUS=1 bash scripts/slurm-up.sh
#   export SLURM_CONF=/tmp/otela-slurm/slurm.conf   # or: source /tmp/otela-slurm/env
#   sinfo; sbatch --wrap hostname; ...
#   bash scripts/slurm-down.sh                      # stop what this script started
#
# Debian's slurm-wlm 22.05 + munge, installed with apt-get when missing. No systemd: the
# daemons are started directly, as root. Everything lives under $OTELA_SLURM_DIR (default
# /tmp/otela-slurm): slurm.conf, gres.conf, a private munged (own key and socket), controller
# state, slurmd spool, logs, pidfiles and the fake GPU device files. Nothing under /etc is
# written, and daemons of another Slurm or munge on the machine are left alone; clients
# find this cluster through SLURM_CONF (the env file sets it).
#
# Simulated nodes n1..nN all run on 127.0.0.1: one `slurmd -N nX` each, on ports PORT+1..
# PORT+N; slurmctld listens on PORT (default 6917, off Slurm's usual 6817 so a system Slurm
# can coexist). Fake GPUs: gres/gpu backed by char devices $DIR/dev/gpuK (copies of
# /dev/null), so `--gpus=1` / `--gres=gpu:1` jobs see CUDA_VISIBLE_DEVICES, SLURM_JOB_GPUS.
#
# Settings (environment): OTELA_SLURM_DIR, OTELA_SLURM_NODES (3), OTELA_SLURM_GPUS (2 per
# node), OTELA_SLURM_CPUS (nproc), OTELA_SLURM_MEM_MB (4000), OTELA_SLURM_PORT (6917),
# OTELA_SLURM_PARTITION (debug).
# Re-running with the same settings and live daemons changes nothing; other settings rewrite
# the config and restart this cluster's daemons (by their pidfiles) with fresh state.
set -euo pipefail

DIR=${OTELA_SLURM_DIR:-/tmp/otela-slurm}
NODES=${OTELA_SLURM_NODES:-3}
GPUS=${OTELA_SLURM_GPUS:-2}
CPUS=${OTELA_SLURM_CPUS:-$(nproc)}
MEM=${OTELA_SLURM_MEM_MB:-4000}
PORT=${OTELA_SLURM_PORT:-6917}
PARTITION=${OTELA_SLURM_PARTITION:-debug}

log() { echo "[slurm-up] $*" >&2; }
die() { echo "[slurm-up] ERROR: $*" >&2; exit 1; }
t0=$(date +%s)

[ "$(id -u)" = 0 ] || die "must run as root (slurmd and munged need it)"
for v in NODES GPUS CPUS MEM PORT; do
  [[ ${!v} =~ ^[0-9]+$ ]] || die "OTELA_SLURM_$v must be a number, got '${!v}'"
done
[ "$NODES" -ge 1 ] || die "OTELA_SLURM_NODES must be >= 1"
case $DIR in /*) ;; *) die "OTELA_SLURM_DIR must be an absolute path, got '$DIR'" ;; esac

# 1. packages --------------------------------------------------------------------------
need_pkgs=0
for c in slurmctld slurmd munged munge sbatch sinfo squeue scontrol srun; do
  command -v "$c" >/dev/null || { need_pkgs=1; break; }
done
if [ $need_pkgs = 1 ]; then
  export DEBIAN_FRONTEND=noninteractive
  pkgs=(slurm-wlm slurm-client munge)
  if ! apt-cache policy slurm-wlm 2>/dev/null | grep -q 'Candidate: [0-9]'; then
    log "apt lists lack slurm-wlm: running apt-get update"
    apt-get update -qq || die "apt-get update failed"
  fi
  log "installing ${pkgs[*]} with apt-get"
  if ! apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null 2>&1; then
    log "install failed (stale apt lists?): running apt-get update and retrying"
    apt-get update -qq || die "apt-get update failed"
    apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null \
      || die "apt-get install ${pkgs[*]} failed"
  fi
  for c in slurmctld slurmd munged sbatch; do
    command -v "$c" >/dev/null || die "$c still missing after installing ${pkgs[*]}"
  done
  log "packages installed after $(( $(date +%s) - t0 ))s"
fi
t_pkgs=$(date +%s)

# helpers: pidfile daemons -------------------------------------------------------------
# alive PIDFILE NAMES: the pid in PIDFILE runs and its program is one of NAMES ("a|b");
# guards against a stale pidfile whose pid now belongs to something else.
alive() {
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
# stop_pidfiles NAMES FILE...: SIGTERM every live daemon recorded in FILEs at once, wait
# up to 5 s for all of them, SIGKILL what is left; only those pids, never anything else.
stop_pidfiles() {
  local name=$1 f p pids=()
  shift
  for f in "$@"; do
    if alive "$f" "$name"; then
      p=$(cat "$f"); log "stopping $(cat "/proc/$p/comm") (pid $p)"; kill "$p" 2>/dev/null || true; pids+=("$p")
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

mkdir -p "$DIR"/{run,log,state,spool,dev,munge}
chmod 0755 "$DIR" "$DIR"/{run,log,state,spool,dev}
chmod 0700 "$DIR/munge"

# 2. munge (private: own key, socket and pidfile; the system's munged, if any, is untouched)
M=$DIR/munge                  # key, seed, log, pidfile: root only
MSOCK=$DIR/run/munge.socket   # the socket's directory must be searchable by job users
if [ ! -s "$M/munge.key" ]; then
  log "creating munge key $M/munge.key"
  (umask 077; dd if=/dev/urandom of="$M/munge.key" bs=1 count=1024 status=none)
  chmod 0400 "$M/munge.key"
fi
start_munged() {
  log "starting munged (socket $MSOCK)"
  rm -f "$MSOCK" "$MSOCK.lock" "$M/munged.pid"
  munged --key-file="$M/munge.key" --socket="$MSOCK" --pid-file="$M/munged.pid" \
    --log-file="$M/munged.log" --seed-file="$M/munged.seed" --force \
    || die "munged failed to start; see $M/munged.log"
}
munge_ok() { munge -S "$MSOCK" -n </dev/null 2>/dev/null | unmunge -S "$MSOCK" >/dev/null 2>&1; }
wait_munge() { for _ in $(seq 50); do munge_ok && return 0; sleep 0.1; done; return 1; }
if ! alive "$M/munged.pid" munged; then
  start_munged
elif ! munge_ok; then  # ours, but not on the expected socket (older layout) or wedged
  stop_pidfiles munged "$M/munged.pid"
  start_munged
fi
wait_munge || die "munge credentials do not round-trip on $MSOCK; see $M/munged.log"

# 3. config ----------------------------------------------------------------------------
CONF=$DIR/slurm.conf
GRES=$DIR/gres.conf
new_conf=$(mktemp "$DIR/.slurm.conf.XXXXXX"); new_gres=$(mktemp "$DIR/.gres.conf.XXXXXX")
trap 'rm -f "$new_conf" "$new_gres"' EXIT
gres_line=""
[ "$GPUS" -gt 0 ] && gres_line="Gres=gpu:$GPUS"
{
  cat <<EOF
# generated by opentela scripts/slurm-up.sh (nodes=$NODES gpus=$GPUS cpus=$CPUS port=$PORT)
ClusterName=otela
SlurmctldHost=$(hostname -s)(127.0.0.1)
SlurmctldPort=$PORT
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$MSOCK
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool/%n
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd-%n.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MailProg=/bin/true
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
KillWait=5
MinJobAge=300
GresTypes=gpu
EOF
  for i in $(seq 1 "$NODES"); do
    echo "NodeName=n$i NodeHostname=n$i NodeAddr=127.0.0.1 Port=$((PORT + i)) CPUs=$CPUS RealMemory=$MEM $gres_line State=UNKNOWN"
  done
  echo "PartitionName=$PARTITION Nodes=ALL Default=YES MaxTime=INFINITE State=UP"
} >"$new_conf"
{
  echo "AutoDetect=off"
  if [ "$GPUS" -gt 0 ]; then
    echo "Name=gpu File=$DIR/dev/gpu[0-$((GPUS - 1))]"
  fi
} >"$new_gres"
for k in $(seq 0 $((GPUS - 1))); do
  [ -e "$DIR/dev/gpu$k" ] || mknod "$DIR/dev/gpu$k" c 1 3 2>/dev/null || touch "$DIR/dev/gpu$k"
done

changed=0
cmp -s "$new_conf" "$CONF" || changed=1
cmp -s "$new_gres" "$GRES" || changed=1
if [ $changed = 1 ]; then
  log "writing $CONF and $GRES"
  install -m 0644 "$new_conf" "$CONF"
  install -m 0644 "$new_gres" "$GRES"
fi
printf 'export SLURM_CONF=%s\n' "$CONF" >"$DIR/env"
export SLURM_CONF=$CONF

# 4. daemons ---------------------------------------------------------------------------
if [ $changed = 1 ]; then
  shopt -s nullglob
  stop_pidfiles 'slurmd|slurmctld' "$DIR"/run/slurmd-*.pid "$DIR/run/slurmctld.pid"
  shopt -u nullglob
  rm -rf "${DIR:?}"/state/* "${DIR:?}"/spool/*  # node list may have changed: fresh state
fi
started=0
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
if ! alive "$DIR/run/slurmctld.pid" slurmctld; then
  port_busy "$PORT" && die "port $PORT is taken by another program; set OTELA_SLURM_PORT"
  log "starting slurmctld on 127.0.0.1:$PORT"
  slurmctld -f "$CONF" || die "slurmctld failed to start; see $DIR/log/slurmctld.log"
  started=1
fi
for i in $(seq 1 "$NODES"); do
  if ! alive "$DIR/run/slurmd-n$i.pid" slurmd; then
    port_busy $((PORT + i)) && die "port $((PORT + i)) is taken by another program; set OTELA_SLURM_PORT"
    mkdir -p "$DIR/spool/n$i"
    log "starting slurmd -N n$i on 127.0.0.1:$((PORT + i))"
    slurmd -f "$CONF" -N "n$i" || die "slurmd n$i failed to start; see $DIR/log/slurmd-n$i.log"
    started=1
  fi
done
[ $started = 0 ] && log "all daemons already running with this config: nothing to start"

# 5. wait until every node is usable ---------------------------------------------------
ok_re='^(idle|mixed|allocated|completing)$'
n_ok=0; states=""
for _ in $(seq 80); do  # at most ~40 s
  out=$(sinfo -h -N -o '%N %T' 2>/dev/null || true)
  states=$(awk '{print $2}' <<<"$out" | sort | uniq -c | awk '{printf "%s=%s ", $2, $1}')
  n_ok=$(awk '{print $2}' <<<"$out" | grep -cE "$ok_re" || true)
  [ "$n_ok" = "$NODES" ] && break
  # a node left down/drained by an earlier run comes back on its own with ReturnToService=2,
  # except after an unclean stop: resume it
  for n in $(sinfo -h -N -t drain,down -o '%N' 2>/dev/null); do
    scontrol update nodename="$n" state=resume 2>/dev/null || true
  done
  sleep 0.5
done
if [ "$n_ok" != "$NODES" ]; then
  sinfo -N -l >&2 || true
  die "only $n_ok of $NODES nodes ready (states: ${states:-none}); logs in $DIR/log"
fi
log "ready in $(( $(date +%s) - t_pkgs ))s (total $(( $(date +%s) - t0 ))s): $NODES node(s), $GPUS fake GPU(s) each, states: $states"
log "use it with: export SLURM_CONF=$CONF   (or: source $DIR/env)"
sinfo -N
