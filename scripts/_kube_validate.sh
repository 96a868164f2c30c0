# Sourced by k8s-validate.sh and helm-validate.sh (which define log and die): the project's
# venv ($VENV) with PyPI kubernetes-validate, the offline schema checker both scripts use.
KUBE_VALIDATE=kubernetes-validate==1.37.0
if [ ! -x "$VENV/bin/python" ]; then
  log "creating venv $VENV"
  python3 -m venv "$VENV" || die "cannot create venv $VENV"
fi
if [ ! -x "$VENV/bin/kubernetes-validate" ]; then
  log "installing kubernetes-validate into $VENV"
  "$VENV/bin/pip" install -q "$KUBE_VALIDATE" || die "pip install $KUBE_VALIDATE failed"
fi
