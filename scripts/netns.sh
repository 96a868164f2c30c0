#!/usr/bin/env bash
# netns.sh - a private test network of N hosts in network namespaces, and packet loss on it.
#
#   PREFIX=otx SUBNET=10.231.77 N=4 bash scripts/netns.sh up
#   PREFIX=otx SUBNET=10.231.77 bash scripts/netns.sh loss 10      # every host drops 10 % in
#   PREFIX=otx SUBNET=10.231.77 bash scripts/netns.sh clear        # remove the loss rules
#   PREFIX=otx SUBNET=10.231.77 bash scripts/netns.sh down
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
  down)
    for ns in $(hosts) "$SW"; do ip netns del "$ns" 2>/dev/null || true; done
    ip route del blackhole "${SUBNET}.0/24" 2>/dev/null || true
    log "removed ${PREFIX}-*" ;;
  *) echo "usage: $0 up|loss PCT|clear|counters|down" >&2; exit 2 ;;
esac
