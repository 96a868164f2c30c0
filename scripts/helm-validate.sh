#!/usr/bin/env bash
# helm-validate.sh - offline checks of the Helm chart deploy/helm/opentela (no cluster needed).
#
#   bash scripts/helm-validate.sh [K8S_VERSION]      # default 1.30.0
#
# 1. Lints the chart (strict) and renders it for 1 head, 3 heads, and 3 heads of a closed pool
#    with hostPort announce, NodePort Service and a shared database: `helm lint` / `helm
#    template` when a helm binary is on PATH, else Helm's own engine from PyPI
#    (helm-python-sdk, through scripts/helm_render.py; installed into $VENV, default .venv).
# 2. Validates every rendered object with PyPI `kubernetes-validate --strict`.
# Exits non-zero on any error; 3 when no Helm engine can be installed.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CHART=$ROOT/deploy/helm/opentela
KVER=${1:-1.30.0}
VENV=${VENV:-$ROOT/.venv}
HELM_SDK=helm-python-sdk==0.2.2
log() { echo "[helm-validate] $*" >&2; }
die() { echo "[helm-validate] ERROR: $*" >&2; exit "${2:-1}"; }

[ -f "$CHART/Chart.yaml" ] || die "no $CHART/Chart.yaml"
# shellcheck source=scripts/_kube_validate.sh
. "$ROOT/scripts/_kube_validate.sh"

if command -v helm >/dev/null; then
  log "using $(command -v helm)"
  lint() { helm lint --strict "$CHART" "$@"; }
  render() { helm template opentela "$CHART" --namespace opentela "$@"; }
else
  if ! "$VENV/bin/python" -c 'import helm_python' 2>/dev/null; then
    log "no helm binary: installing Helm's engine ($HELM_SDK) into $VENV"
    "$VENV/bin/pip" install -q "$HELM_SDK" || die "cannot install $HELM_SDK" 3
  fi
  lint() { "$VENV/bin/python" "$ROOT/scripts/helm_render.py" "$CHART" --lint "$@"; }
  render() { "$VENV/bin/python" "$ROOT/scripts/helm_render.py" "$CHART" "$@"; }
fi

OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
CLOSED=(--set heads.replicas=3 --set closedPool.authority=ed25519:AAAA
        --set closedPool.authorityKeySecret=opentela-authority --set swarmKeySecret=opentela-swarm
        --set dbSecret=opentela-db --set p2p.hostPort=true
        --set 'p2p.announce=/ip4/$(HOST_IP)/tcp/43905' --set service.type=NodePort
        --set service.nodePort=30892)
lint >/dev/null || die "helm lint failed"
render --set heads.replicas=1 >"$OUT/one.yaml" || die "render (1 head) failed"
render --set heads.replicas=3 >"$OUT/three.yaml" || die "render (3 heads) failed"
render "${CLOSED[@]}" >"$OUT/closed.yaml" || die "render (closed pool) failed"
for f in one three closed; do
  n_obj=$(grep -c '^kind:' "$OUT/$f.yaml" || true)
  log "$f: $n_obj objects, validating against Kubernetes $KVER (strict)"
  "$VENV/bin/kubernetes-validate" --strict -k "$KVER" "$OUT/$f.yaml" >"$OUT/$f.log" 2>&1 \
    || { cat "$OUT/$f.log" >&2; die "validation of $f failed"; }
done
log "OK: deploy/helm/opentela lints, renders and validates (strict, Kubernetes $KVER)"
