#!/usr/bin/env bash
# netns.sh - a private test network of N hosts in network namespaces, and packet loss on it.
#
#   PREFIX=otx SUBNET=10.231.77 N=4 bash scripts/netns.sh up
#   PREFIX=otx SUBNET=10.231.77 bash scripts/netns.sh loss 10      # every host drops 10 % in
#   PREFIX=otx SUBNET=10.231.77 bash scripts/netns.sh clear        # remove the loss rules
#   PREFIX=otx SUBNET=10.231.77 bash scripts/netns.sh down
#
# Added latency (a WAN link between "sites"):
#
#   PREFIX=otw SUBNET=10.231.78 bash scripts/netns.sh delay 2 40 [EXCLUDED_IP ...]
#   PREFIX=otw SUBNET=10.231.78 bash scripts/netns.sh undelay 2
#
#   delay I MS [IP ...]  every packet LEAVING host I on eth0 waits MS milliseconds, except
#                        those to the listed addresses (same-site peers). Delay two hosts by
#                        MS each and their round trip grows by 2*MS. Calling it again for
#                        host I replaces its delay. Env: JITTER_MS (default 0: each packet
#                        waits MS plus uniform 0..JITTER_MS, order kept), DELAY_MAX_S
#                        (default 900: the delayer exits by itself then, and packets pass
#                        undelayed), NFQ_PY (default .venv/bin/python of this repository).
#   undelay I            remove host I's rule and stop its delayer (by its PID).
#   `down` undelays every host first.
#
# How: an iptables chain OTELA_DELAY (from OUTPUT -o eth0; RETURN for each excluded address)
# sends the packets to NFQUEUE 100+I with --queue-bypass, and scripts/nfq_delay.py, started
# in the background inside host I's namespace, gives each its verdict MS later. (iptables, not
# nft: this kernel has no nft `queue` expression, but xt_NFQUEUE works.) The delayer's PID and
# log are ${RUN_DIR:-/tmp/otela-netns-$PREFIX}/delay-hI.{pid,log}. The first use installs
# Debian iptables and libnetfilter-queue-dev, and PyPI netfilterqueue into the venv (a C
# build, ~20 s).
#
# Hosts are namespaces ${PREFIX}-h1..hN with eth0 = ${SUBNET}.i/24 on a bridge in
# ${PREFIX}-sw. Nothing is attached to the root namespace, and the subnet is blackholed there
# first: a stray packet from the root namespace can never leave the machine. Run a process on
# host i with: ip netns exec ${PREFIX}-hI CMD. Needs root, iproute2 and nftables (installed
# with apt-get when missing). Loss uses nftables `numgen random` (this kernel has no netem).
set -euo pipefail
N=${N:-4}
PREFIX=${PREFIX:-otx}
SUBNET=${SUBNET:-10.231.77}
SW=${PREFIX}-sw
log() { echo "[netns] $*" >&2; }

need_nft() {
  command -v nft >/dev/null && return
  log "installing nftables"
  apt-get install -y -q nftables >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q nftables >/dev/null; }
}

REPO=$(cd "$(dirname "$0")/.." && pwd)
RUN_DIR=${RUN_DIR:-/tmp/otela-netns-$PREFIX}
NFQ_PY=${NFQ_PY:-$REPO/.venv/bin/python}

need_ipt() {
  command -v iptables >/dev/null && return
  log "installing iptables"
  apt-get install -y -q iptables >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q iptables >/dev/null; }
}

need_nfq() {
  "$NFQ_PY" -c 'import netfilterqueue' 2>/dev/null && return
  if [ ! -e /usr/include/libnetfilter_queue/libnetfilter_queue.h ]; then
    log "installing libnetfilter-queue-dev"
    apt-get install -y -q libnetfilter-queue-dev >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q libnetfilter-queue-dev >/dev/null; }
  fi
  log "installing netfilterqueue into $("$NFQ_PY" -c 'import sys; print(sys.prefix)')"
  "$NFQ_PY" -m pip install -q netfilterqueue >/dev/null
}

# The delayer of host $1, if its pid file names a live nfq_delay.py (not a reused PID).
delayer_pid() {
  local f="$RUN_DIR/delay-h$1.pid" pid
  [ -e "$f" ] || return 0
  pid=$(cat "$f")
  if tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -q nfq_delay.py; then echo "$pid"; fi
}

undelay() {
  local i=$1 ns=${PREFIX}-h$1 pid
  if ip netns exec "$ns" iptables -w -S OTELA_DELAY >/dev/null 2>&1; then
    ip netns exec "$ns" iptables -w -D OUTPUT -o eth0 -j OTELA_DELAY 2>/dev/null || true
    ip netns exec "$ns" iptables -w -F OTELA_DELAY
    ip netns exec "$ns" iptables -w -X OTELA_DELAY
  fi
  pid=$(delayer_pid "$i")
  if [ -n "$pid" ]; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$RUN_DIR/delay-h$i.pid"
}

hosts() { ip netns list | awk '{print $1}' | grep -E "^${PREFIX}-h[0-9]+$" || true; }

case "${1:-up}" in
  up)
    need_nft
    ip route replace blackhole "${SUBNET}.0/24"
    ip netns list | grep -qw "$SW" || ip netns add "$SW"
    ip -n "$SW" link set lo up
    ip -n "$SW" link show br0 >/dev/null 2>&1 || ip -n "$SW" link add br0 type bridge
    ip -n "$SW" link set br0 up
    for i in $(seq 1 "$N"); do
      ns=${PREFIX}-h$i
      ip netns list | grep -qw "$ns" || ip netns add "$ns"
      ip -n "$ns" link set lo up
      if ! ip -n "$ns" link show eth0 >/dev/null 2>&1; then
        ip -n "$SW" link add "veth-h$i" type veth peer name eth0 netns "$ns"
        ip -n "$SW" link set "veth-h$i" master br0 up
        ip -n "$ns" addr add "${SUBNET}.$i/24" dev eth0
        ip -n "$ns" link set eth0 up
      fi
    done
    log "up: ${PREFIX}-h[1-$N] on ${SUBNET}.0/24 (blackholed in the root namespace)" ;;
  loss)
    pct=${2:?loss PERCENT}
    for ns in $(hosts); do
      ip netns exec "$ns" nft delete table inet otela_loss 2>/dev/null || true
      ip netns exec "$ns" nft -f - <<NFT
table inet otela_loss {
  chain in { type filter hook input priority 0; policy accept;
    iifname "eth0" numgen random mod 100 lt $pct counter drop
  }
}
NFT
    done
    log "every host drops ${pct}% of incoming packets" ;;
  clear)
    for ns in $(hosts); do ip netns exec "$ns" nft delete table inet otela_loss 2>/dev/null || true; done
    log "loss rules removed" ;;
  counters)
    for ns in $(hosts); do echo "$ns: $(ip netns exec "$ns" nft list table inet otela_loss 2>/dev/null | grep -o 'packets [0-9]*' || echo none)"; done ;;
  delay)
    i=${2:?delay HOST-INDEX MS [EXCLUDED-IP ...]}; ms=${3:?delay HOST-INDEX MS [EXCLUDED-IP ...]}
    shift 3
    ns=${PREFIX}-h$i q=$((100 + i))
    ip netns list | grep -qw "$ns" || { echo "no namespace $ns (run: $0 up)" >&2; exit 2; }
    need_ipt; need_nfq
    undelay "$i"
    trap 'undelay "$i"' ERR  # a failed start leaves no rule and no delayer behind
    mkdir -p "$RUN_DIR"
    ip netns exec "$ns" "$NFQ_PY" "$REPO/scripts/nfq_delay.py" --queue "$q" --delay-ms "$ms" \
      --jitter-ms "${JITTER_MS:-0}" --max-seconds "${DELAY_MAX_S:-900}" \
      </dev/null >"$RUN_DIR/delay-h$i.log" 2>&1 &
    echo $! >"$RUN_DIR/delay-h$i.pid"
    for _ in $(seq 100); do grep -q ready "$RUN_DIR/delay-h$i.log" && break; sleep 0.05; done
    grep -q ready "$RUN_DIR/delay-h$i.log" || { cat "$RUN_DIR/delay-h$i.log" >&2; undelay "$i"; exit 1; }
    ipt() { ip netns exec "$ns" iptables -w "$@"; }
    ipt -N OTELA_DELAY
    for ip in "$@"; do ipt -A OTELA_DELAY -d "$ip" -j RETURN; done
    ipt -A OTELA_DELAY -j NFQUEUE --queue-num "$q" --queue-bypass
    ipt -A OUTPUT -o eth0 -j OTELA_DELAY
    log "$ns: packets out of eth0 wait ${ms} ms${*:+ (except to $*)}, delayer pid $(cat "$RUN_DIR/delay-h$i.pid")" ;;
  undelay)
    undelay "${2:?undelay HOST-INDEX}"
    log "${PREFIX}-h$2: delay removed" ;;
  down)
    for ns in $(hosts); do undelay "${ns##*-h}"; done
    for ns in $(hosts) "$SW"; do ip netns del "$ns" 2>/dev/null || true; done
    ip route del blackhole "${SUBNET}.0/24" 2>/dev/null || true
    log "removed ${PREFIX}-*" ;;
  *) echo "usage: $0 up|loss PCT|clear|counters|delay I MS [IP ...]|undelay I|down" >&2; exit 2 ;;
esac
