"""Which serving framework a backend is (the ``framework`` label): ``vllm``, ``sglang`` or
``llama.cpp``. Pure: read from what the backend says about itself, else from the command
that starts it.

The backend's answer comes first. vLLM, SGLang and llama.cpp's server answer ``GET
/v1/models`` in the same shape and on overlapping default ports; what tells them apart is the
name each writes into ``owned_by`` (vLLM ``"vllm"``, SGLang ``"sglang"``, llama.cpp
``"llamacpp"``) and llama.cpp's ``Server: llama.cpp`` header. Other values (``"me"`` from
llama-cpp-python, ``"openai"``, a proxy's own name) say nothing, and the ``--subprocess``
command decides (:func:`framework_of_command`). The probe already reads ``/v1/models``, so
knowing the framework costs no extra request.

The backend *kind* (``Backend.kind``) is finer than the label: llama-cpp-python keeps the
``llama.cpp`` label (it runs llama.cpp) but lacks what llama.cpp's own server has, and the
worker bridges that (``worker/bridge.py``). Its ``owned_by`` is a hard-coded ``"me"`` and its
``Server`` header is uvicorn's, neither unique; what is its own is the title of its FastAPI
schema, ``GET /openapi.json``: ``"🦙 llama.cpp Python API"`` (:func:`is_llama_cpp_python`).
That is read once, and only when ``owned_by`` is ``"me"``.
"""

from __future__ import annotations

import re
from typing import Any

VLLM = "vllm"
SGLANG = "sglang"
LLAMA_CPP = "llama.cpp"
LLAMA_CPP_PYTHON = "llama-cpp-python"  # a kind (``Backend.kind``), not a framework label

_OWNED_BY = {"vllm": VLLM, "sglang": SGLANG, "llamacpp": LLAMA_CPP, "llama.cpp": LLAMA_CPP}


def framework_of_answer(models: Any, server_header: str = "") -> str:
    """The framework a ``/v1/models`` answer (parsed JSON) and its ``Server`` header name,
    or "" when they do not say."""
    items = models.get("data") if isinstance(models, dict) else None
    for item in items if isinstance(items, list) else ():
        owner = item.get("owned_by") if isinstance(item, dict) else None
        if isinstance(owner, str) and owner.lower() in _OWNED_BY:
            return _OWNED_BY[owner.lower()]
    if server_header.lower().startswith("llama.cpp"):
        return LLAMA_CPP
    return ""


def framework_of_command(command: str) -> str:
    """The framework a ``--subprocess`` command starts, or "". Reads program and module
    names (the last part of each word, so ``/opt/venv/bin/vllm`` counts and a model under
    ``/scratch/vllm/`` does not), also inside ``bash -c '...'``."""
    for word in re.split(r"[\s;&|()\"']+", command):
        name = word.rsplit("/", 1)[-1].lower()
        if name == "vllm" or name.startswith("vllm.entrypoints"):
            return VLLM
        if name == "sglang" or name.startswith("sglang.launch_server"):
            return SGLANG
        if name in ("llama-server", "llama_cpp.server"):
            return LLAMA_CPP
    return ""


def may_be_llama_cpp_python(models: Any) -> bool:
    """Whether a ``/v1/models`` answer looks like llama-cpp-python's (every ``owned_by`` is
    ``"me"``), so that its ``/openapi.json`` is worth reading."""
    items = models.get("data") if isinstance(models, dict) else None
    owners = (
        [i.get("owned_by") for i in items if isinstance(i, dict)] if isinstance(items, list) else []
    )
    return bool(owners) and all(o == "me" for o in owners)


def is_llama_cpp_python(openapi: Any) -> bool:
    """Whether a ``GET /openapi.json`` answer (parsed) is llama-cpp-python's server's."""
    info = openapi.get("info") if isinstance(openapi, dict) else None
    title = info.get("title") if isinstance(info, dict) else None
    return isinstance(title, str) and "llama.cpp python api" in title.lower()
