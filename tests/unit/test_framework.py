"""Which framework a backend is, from its own ``/v1/models`` answer (captured from vLLM,
SGLang, llama.cpp's server and llama-cpp-python) or from the ``--subprocess`` command; and
the probe (``Backend.list_models``) remembering it, against a real local HTTP server."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from aiohttp import web

from opentela.testing.serving import free_port
from opentela.worker.backend import Backend
from opentela.worker.framework import framework_of_answer, framework_of_command

# GET /v1/models as each server answers it (ids and numbers from real runs, trimmed).
VLLM = {
    "object": "list",
    "data": [
        {
            "id": "meta-llama/Llama-3.1-70B-Instruct",
            "object": "model",
            "created": 1764660000,
            "owned_by": "vllm",
            "root": "meta-llama/Llama-3.1-70B-Instruct",
            "parent": None,
            "max_model_len": 131072,
            "permission": [
                {
                    "id": "modelperm-3f0c",
                    "object": "model_permission",
                    "created": 1764660000,
                    "allow_sampling": True,
                    "organization": "*",
                    "group": None,
                    "is_blocking": False,
                }
            ],
        }
    ],
}
SGLANG = {
    "object": "list",
    "data": [
        {
            "id": "Qwen/Qwen2.5-7B-Instruct",
            "object": "model",
            "created": 1764660000,
            "owned_by": "sglang",
            "root": "Qwen/Qwen2.5-7B-Instruct",
            "max_model_len": 32768,
        }
    ],
}
LLAMA_SERVER = {
    "models": [
        {"name": "smollm2.gguf", "model": "smollm2.gguf", "type": "model", "capabilities": []}
    ],
    "object": "list",
    "data": [
        {
            "id": "smollm2.gguf",
            "object": "model",
            "created": 1764660000,
            "owned_by": "llamacpp",
            "meta": {"vocab_type": 2, "n_vocab": 49152, "n_ctx_train": 8192, "n_params": 134515008},
        }
    ],
}
LLAMA_CPP_PYTHON = {
    "object": "list",
    "data": [{"id": "smollm2", "object": "model", "owned_by": "me", "permissions": []}],
}
OPENAI_PROXY = {
    "object": "list",
    "data": [{"id": "gpt-4o", "object": "model", "owned_by": "openai"}],
}


@pytest.mark.parametrize(
    ("answer", "server", "expected"),
    [
        (VLLM, "uvicorn", "vllm"),
        (SGLANG, "uvicorn", "sglang"),
        (LLAMA_SERVER, "llama.cpp", "llama.cpp"),
        ({"object": "list", "data": []}, "llama.cpp", "llama.cpp"),  # the header alone
        (LLAMA_CPP_PYTHON, "uvicorn", ""),  # "me" says nothing: the command decides
        (OPENAI_PROXY, "", ""),
        ({"data": "junk"}, "", ""),
        ([1, 2], "", ""),
        ({"data": [None, {"owned_by": 3}, {"owned_by": "VLLM"}]}, "", "vllm"),
    ],
)
def test_framework_of_answer(answer: Any, server: str, expected: str) -> None:
    assert framework_of_answer(answer, server) == expected


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        (
            "vllm serve meta-llama/Llama-3.1-8B-Instruct --port 8000 --tensor-parallel-size 4",
            "vllm",
        ),
        ("/opt/venv/bin/vllm serve /models/x", "vllm"),
        ("python -m vllm.entrypoints.openai.api_server --model m", "vllm"),
        ("python3 -m sglang.launch_server --model-path Qwen/Qwen2.5-7B --port 30000", "sglang"),
        ("sglang serve --model-path m", "sglang"),
        ("llama-server -m /models/smollm2.gguf --port 8080", "llama.cpp"),
        ("/usr/local/bin/llama-server -m m.gguf", "llama.cpp"),
        ("python -m llama_cpp.server --model m.gguf", "llama.cpp"),
        ("bash -c 'source env.sh && exec vllm serve m'", "vllm"),
        ("python serve.py --model /scratch/vllm/weights", ""),  # a path, not the program
        ("python -m opentela.testing.fake_upstream --model m", ""),
        ("", ""),
    ],
)
def test_framework_of_command(command: str, expected: str) -> None:
    assert framework_of_command(command) == expected


def test_the_probe_remembers_what_the_backend_said() -> None:
    """A real HTTP server answering like llama.cpp's, then like llama-cpp-python: the
    framework comes from the answer and an answer that says nothing keeps what was known."""
    answers = [(LLAMA_SERVER, "llama.cpp"), (LLAMA_CPP_PYTHON, "uvicorn")]

    async def models(_request: web.Request) -> web.Response:
        body, server = answers[0]
        return web.Response(
            body=json.dumps(body), content_type="application/json", headers={"Server": server}
        )

    async def main() -> list[Any]:
        app = web.Application()
        app.router.add_get("/v1/models", models)
        runner = web.AppRunner(app)
        await runner.setup()
        port = free_port("127.0.0.1")
        await web.TCPSite(runner, "127.0.0.1", port).start()
        backend = Backend(f"http://127.0.0.1:{port}")
        await backend.open()
        try:
            seen = [backend.framework]
            seen.append((await backend.list_models(), backend.framework))
            answers.pop(0)
            seen.append((await backend.list_models(), backend.framework))
            return seen
        finally:
            await backend.close()
            await runner.cleanup()

    assert asyncio.run(main()) == [
        "",
        (("smollm2.gguf",), "llama.cpp"),
        (("smollm2",), "llama.cpp"),
    ]
