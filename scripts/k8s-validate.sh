#!/usr/bin/env bash
# k8s-validate.sh - offline checks of deploy/kubernetes (no API server needed).
#
#   bash scripts/k8s-validate.sh [K8S_VERSION]      # default 1.30.0
#
# 1. Renders the kustomize base with `kubectl kustomize` when kubectl is installed (that
#    subcommand works offline); without kubectl, takes the resource files listed in
#    kustomization.yaml as they are.
# 2. Validates every object, plus secret.example.yaml, with PyPI `kubernetes-validate --strict`
#    (bundled JSON schemas: wrong types and unknown fields fail). Installed into the
#    project's venv ($VENV, default .venv) when missing.
# Exits non-zero on any error.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BASE=$ROOT/deploy/kubernetes
KVER=${1:-1.30.0}
VENV=${VENV:-$ROOT/.venv}
log() { echo "[k8s-validate] $*" >&2; }
die() { echo "[k8s-validate] ERROR: $*" >&2; exit 1; }

[ -f "$BASE/kustomization.yaml" ] || die "no $BASE/kustomization.yaml"
# shellcheck source=scripts/_kube_validate.sh
. "$ROOT/scripts/_kube_validate.sh"

OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
files=()
if command -v kubectl >/dev/null; then
  log "rendering $BASE with kubectl kustomize"
  kubectl kustomize "$BASE" >"$OUT/rendered.yaml" || die "kubectl kustomize $BASE failed"
  files+=("$OUT/rendered.yaml")
else
  log "kubectl not found: validating the base's resource files without rendering"
  # the `resources:` list of kustomization.yaml, one "  - file.yaml" per line
  while read -r f; do
    [ -f "$BASE/$f" ] || die "kustomization.yaml lists missing file $f"
    files+=("$BASE/$f")
  done < <(sed -n '/^resources:/,/^[^ -]/{s/^ *- *\([^ #]*\).*/\1/p}' "$BASE/kustomization.yaml")
  [ ${#files[@]} -gt 0 ] || die "no resources found in kustomization.yaml"
fi
files+=("$BASE/secret.example.yaml")

n_obj=$(cat "${files[@]}" | grep -c '^kind:' || true)
log "validating $n_obj objects against Kubernetes $KVER (strict)"
"$VENV/bin/kubernetes-validate" --strict -k "$KVER" "${files[@]}" || die "validation failed"
log "OK: deploy/kubernetes renders and validates (strict, Kubernetes $KVER)"
