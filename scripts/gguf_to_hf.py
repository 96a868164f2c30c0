"""Dequantize a llama-architecture GGUF into a Hugging Face safetensors directory, for servers
that cannot load GGUF (vLLM's CPU build): no hub access needed.

    python scripts/gguf_to_hf.py MODEL.gguf OUT_DIR

Needs ``transformers``, ``gguf``, ``accelerate`` and torch (the vLLM venv has them).
"""

import os
import sys
import time

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


def main(src: str, out: str) -> None:
    t0 = time.monotonic()
    folder, name = os.path.dirname(os.path.abspath(src)), os.path.basename(src)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    quantized = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.bfloat16)
    config = quantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # transformers refuses to save a "GGUF-quantized" model
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    _, unexpected = model.load_state_dict(quantized.state_dict(), strict=False)
    if unexpected:
        raise SystemExit(f"unexpected tensors: {unexpected}")
    model.tie_weights()
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    print(f"converted in {time.monotonic() - t0:.1f}s: {sorted(os.listdir(out))}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    main(sys.argv[1], sys.argv[2])
