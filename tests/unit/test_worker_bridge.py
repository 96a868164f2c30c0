"""The worker's bridges for llama-cpp-python (``worker/bridge.py``): the request rewrite, the
usage chunk added to a stream (events split at every byte), what the entry node's usage
accounting makes of it, and how the probe learns the backend kind (a real local server)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from aiohttp import web

from opentela.gateway.usage import SseUsage
from opentela.testing.serving import free_port
from opentela.worker import bridge
from opentela.worker.backend import Backend
from opentela.worker.framework import (
    LLAMA_CPP_PYTHON,
    is_llama_cpp_python,
    may_be_llama_cpp_python,
)

KIND = LLAMA_CPP_PYTHON


def _chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "model": "smollm2-135m",
        "created": 1796229202,
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }


def _sse(*objs: Any, sep: bytes = b"\r\n\r\n") -> bytes:
    """An event stream as llama-cpp-python's server (sse-starlette) writes it."""
    out = b""
    for o in objs:
        data = o if isinstance(o, bytes) else json.dumps(o).encode()
        out += b"data: " + data + sep
    return out


# A stream of three tokens, with the role chunk first and the finish chunk last, as recorded.
TOKENS = ["Hello", " there", "!"]
STREAM = _sse(
    _chunk({"role": "assistant"}),
    *(_chunk({"content": t}) for t in TOKENS),
    _chunk({}, "stop"),
    b"[DONE]",
)


def _chat(**extra: Any) -> bytes:
    return json.dumps(
        {"model": "smollm2-135m", "messages": [{"role": "user", "content": "hi"}], **extra}
    ).encode()


def _events(raw: bytes) -> list[bytes]:
    return [e for e in raw.replace(b"\r\n", b"\n").split(b"\n\n") if e]


# -- the request -------------------------------------------------------------------------------


def test_other_kinds_are_never_read() -> None:
    body = json.dumps(
        {"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": "x"}]}]}
    ).encode()
    for kind in ("", "vllm", "llama.cpp", "sglang"):
        assert bridge.plan(kind, "POST", "/v1/chat/completions", body) is None
    assert bridge.plan(KIND, "GET", "/v1/chat/completions", body) is None
    assert bridge.plan(KIND, "POST", "/v1/embeddings", body) is None
    assert bridge.plan(KIND, "POST", "/v1/chat/completions", b"{not json") is None
    assert bridge.plan(KIND, "POST", "/v1/chat/completions", b"[1]") is None
    # Nothing to bridge: the client's bytes go on unchanged (no plan at all).
    assert bridge.plan(KIND, "POST", "/v1/chat/completions", _chat()) is None
    assert bridge.plan(KIND, "POST", "/v1/chat/completions", _chat(stream=True)) is None


def test_text_parts_are_flattened_with_newlines() -> None:
    body = json.dumps(
        {
            "model": "m",
            "messages": [
                {"role": "system", "content": [{"type": "text", "text": "Be short."}]},
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "one"},
                        {"type": "text", "text": "two", "cache_control": {"type": "x"}},
                    ],
                },
                {"role": "assistant", "content": "plain"},
            ],
        }
    ).encode()
    plan = bridge.plan(KIND, "POST", "/v1/chat/completions?x=1", body)
    assert plan is not None and plan.usage is None
    sent = json.loads(plan.body)
    assert [m["content"] for m in sent["messages"]] == ["Be short.", "one\ntwo", "plain"]
    assert sent["model"] == "m"


@pytest.mark.parametrize(
    "content",
    [
        [{"type": "text", "text": "look"}, {"type": "image_url", "image_url": {"url": "x"}}],
        [{"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}],
        [],
        [{"type": "text"}],
        ["text"],
        None,
    ],
)
def test_content_that_is_not_only_text_is_left_as_is(content: Any) -> None:
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": content}]}).encode()
    assert bridge.plan(KIND, "POST", "/v1/chat/completions", body) is None


def test_completions_are_not_flattened_and_get_an_exact_prompt_count() -> None:
    opts = {"stream": True, "stream_options": {"include_usage": True}}
    body = json.dumps({"model": "m", "prompt": "1, 2, 3,", **opts}).encode()
    plan = bridge.plan(KIND, "POST", "/v1/completions", body)
    assert plan is not None and plan.usage is not None
    assert plan.body == body  # unchanged bytes
    assert (plan.tokenize, plan.model) == ("1, 2, 3,", "m")
    one = json.dumps({"model": "m", "prompt": ["a b"], **opts}).encode()
    assert bridge.plan(KIND, "POST", "/v1/completions", one).tokenize == "a b"  # type: ignore[union-attr]
    two = json.dumps({"model": "m", "prompt": ["a", "b"], **opts}).encode()
    assert bridge.plan(KIND, "POST", "/v1/completions", two).tokenize is None  # type: ignore[union-attr]


def test_a_chat_stream_asking_for_usage_is_planned_with_an_estimate() -> None:
    body = _chat(stream=True, stream_options={"include_usage": True})
    plan = bridge.plan(KIND, "POST", "/v1/chat/completions", body)
    assert plan is not None and plan.usage is not None and plan.tokenize is None
    assert plan.body == body
    assert plan.usage.prompt_tokens == 1  # "hi": four characters a token, rounded up
    assert plan.usage.estimated
    # Not asked, or not a stream: nothing to add.
    for extra in (
        {"stream": True, "stream_options": {"include_usage": False}},
        {"stream": False, "stream_options": {"include_usage": True}},
    ):
        assert bridge.plan(KIND, "POST", "/v1/chat/completions", _chat(**extra)) is None


# -- the stream --------------------------------------------------------------------------------


def _synth(**kw: Any) -> bridge.UsageSynth:
    s = bridge.UsageSynth(prompt_tokens=7, **kw)
    return s


def _run(synth: bridge.UsageSynth, pieces: list[bytes]) -> bytes:
    return b"".join(synth.feed(p) for p in pieces) + synth.finish()


def test_the_usage_chunk_comes_just_before_done() -> None:
    synth = _synth()
    synth.exact_prompt(12)
    out = _run(synth, [STREAM])
    events = _events(out)
    assert out.startswith(STREAM[: STREAM.index(b"data: [DONE]")])
    assert events[-1] == b"data: [DONE]"
    usage = json.loads(events[-2][len(b"data: ") :])
    assert usage == {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1796229202,
        "model": "smollm2-135m",
        "choices": [],
        "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15},
    }
    assert out.endswith(b"\r\n\r\ndata: [DONE]\r\n\r\n")  # the backend's own separator


def test_every_split_point_gives_the_same_bytes() -> None:
    whole = _run(_synth(), [STREAM])
    for cut in range(1, len(STREAM)):
        assert _run(_synth(), [STREAM[:cut], STREAM[cut:]]) == whole, cut
    for a, b in ((3, 200), (50, 51), (len(STREAM) - 5, len(STREAM) - 1)):
        assert _run(_synth(), [STREAM[:a], STREAM[a:b], STREAM[b:]]) == whole
    assert _run(_synth(), [STREAM[i : i + 1] for i in range(len(STREAM))]) == whole


def test_complete_events_go_out_at_once_and_partial_ones_wait() -> None:
    synth = _synth()
    first = STREAM.index(b"\r\n\r\n") + 4
    assert synth.feed(STREAM[: first + 10]) == STREAM[:first]
    assert synth.feed(b"") == b""


def test_comments_and_lf_separators_pass_through() -> None:
    stream = (
        b": ping - 2026-12-02 16:33:02\n\n"
        + _sse(_chunk({"content": "a"}), b"[DONE]", sep=b"\n\n")
        + b""
    )
    out = _run(_synth(), [stream])
    assert out.startswith(b": ping - 2026-12-02 16:33:02\n\n")
    assert out.endswith(b"\n\ndata: [DONE]\n\n")
    assert json.loads(_events(out)[-2][6:])["usage"]["completion_tokens"] == 1


def test_completion_and_tool_call_chunks_count_as_tokens() -> None:
    text = {"id": "cmpl-1", "object": "text_completion", "choices": [{"text": "x", "index": 0}]}
    tool = _chunk({"tool_calls": [{"index": 0, "function": {"arguments": "{"}}]})
    empty = _chunk({"content": ""})
    out = _run(_synth(), [_sse(text, text, tool, empty, b"[DONE]")])
    usage_chunk = json.loads(_events(out)[-2][6:])
    assert usage_chunk["usage"]["completion_tokens"] == 3
    assert usage_chunk["object"] == "chat.completion.chunk"  # from the last chunk seen


@pytest.mark.parametrize(
    "stream",
    [
        # The backend sends usage itself (it honours include_usage now): never a second one.
        _sse(
            _chunk({"content": "a"}),
            {**_chunk({}), "choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 1}},
            b"[DONE]",
        ),
        # An error event: the stream failed, no usage is invented for it.
        _sse(_chunk({"content": "a"}), {"error": {"message": "boom"}}, b"[DONE]"),
        # No [DONE]: a broken stream (the entry node estimates, as before).
        _sse(_chunk({"content": "a"}), _chunk({}, "stop")),
    ],
)
def test_nothing_is_added_when_it_would_be_wrong(stream: bytes) -> None:
    assert _run(_synth(), [stream]) == stream


def test_a_partial_tail_goes_out_at_the_end() -> None:
    stream = _sse(_chunk({"content": "a"})) + b'data: {"trunc'
    assert _run(_synth(), [stream]) == stream


def test_an_oversized_event_is_passed_on_and_reading_stops() -> None:
    synth = _synth()
    big = b"data: " + b"x" * (bridge.MAX_SSE_EVENT + 1)
    assert synth.feed(big) == big
    rest = _sse(_chunk({"content": "a"}), b"[DONE]")
    assert synth.feed(rest) == rest  # nothing added after that
    assert synth.finish() == b""


def test_stop_lists_and_estimated_prompts_are_marked() -> None:
    exact = _synth()
    exact.exact_prompt(4)
    assert "estimated" not in exact.usage()
    stop = _synth(has_stop=True)
    stop.exact_prompt(4)
    assert stop.usage()["estimated"] is True
    assert _synth().usage()["estimated"] is True


# -- what the entry node makes of it -------------------------------------------------------------


def test_the_entry_strips_it_for_a_client_that_did_not_ask_and_counts_it_once() -> None:
    synth = _synth()
    synth.exact_prompt(12)
    to_entry = _run(synth, [STREAM])
    entry = SseUsage(strip=True)
    to_client = b"".join(entry.feed(to_entry[i : i + 7]) for i in range(0, len(to_entry), 7))
    assert to_client == STREAM  # exactly what the backend sent
    assert entry.usage == (12, 3)
    assert entry.content_chunks == 3


def test_a_client_that_asked_gets_it_and_the_entry_reads_it() -> None:
    synth = _synth()
    synth.exact_prompt(12)
    to_entry = _run(synth, [STREAM])
    entry = SseUsage(strip=False)
    assert entry.feed(to_entry) == to_entry
    assert entry.usage == (12, 3)


# -- learning the kind ---------------------------------------------------------------------------

ME = {"object": "list", "data": [{"id": "smollm2", "object": "model", "owned_by": "me"}]}
OPENAPI = {"openapi": "3.1.0", "info": {"title": "🦙 llama.cpp Python API", "version": "0.3.36"}}


def test_kind_from_answers() -> None:
    assert may_be_llama_cpp_python(ME)
    assert not may_be_llama_cpp_python({"data": [{"id": "x", "owned_by": "vllm"}]})
    assert not may_be_llama_cpp_python({"data": []})
    assert is_llama_cpp_python(OPENAPI)
    assert not is_llama_cpp_python({"info": {"title": "FastAPI"}})
    assert not is_llama_cpp_python([])


def test_the_probe_learns_llama_cpp_python_and_its_tokenizer() -> None:
    """A real HTTP server answering as llama-cpp-python does: the kind is learned from its
    /openapi.json (read once), and the tokenizer count is read from /extras/tokenize/count."""
    calls: list[str] = []
    answers: list[dict[str, Any]] = [ME, ME, {"data": [{"id": "m", "owned_by": "vllm"}]}]

    async def models(_r: web.Request) -> web.Response:
        return web.json_response(answers[0], headers={"Server": "uvicorn"})

    async def openapi(_r: web.Request) -> web.Response:
        calls.append("openapi")
        return web.json_response(OPENAPI)

    async def count(r: web.Request) -> web.Response:
        body = await r.json()
        calls.append(f"count {body}")
        return web.json_response({"count": len(body["input"].split())})

    async def main() -> list[Any]:
        app = web.Application()
        app.router.add_get("/v1/models", models)
        app.router.add_get("/openapi.json", openapi)
        app.router.add_post("/extras/tokenize/count", count)
        runner = web.AppRunner(app)
        await runner.setup()
        port = free_port("127.0.0.1")
        await web.TCPSite(runner, "127.0.0.1", port).start()
        backend = Backend(f"http://127.0.0.1:{port}")
        await backend.open()
        try:
            seen: list[Any] = [backend.kind]
            for _ in range(3):
                await backend.list_models()
                seen.append((backend.kind, backend.framework))
                answers.pop(0)
            seen.append(await backend.count_tokens("one two three", "m"))
            return seen
        finally:
            await backend.close()
            await runner.cleanup()

    assert asyncio.run(main()) == [
        "",
        (LLAMA_CPP_PYTHON, ""),
        (LLAMA_CPP_PYTHON, ""),
        ("vllm", "vllm"),
        3,
    ]
    assert calls == ["openapi", "count {'input': 'one two three', 'model': 'm'}"]


def test_a_backend_without_openapi_is_not_bridged_and_the_probe_still_succeeds() -> None:
    async def models(_r: web.Request) -> web.Response:
        return web.json_response(ME)

    async def main() -> tuple[tuple[str, ...], str, int | None]:
        app = web.Application()
        app.router.add_get("/v1/models", models)
        runner = web.AppRunner(app)
        await runner.setup()
        port = free_port("127.0.0.1")
        await web.TCPSite(runner, "127.0.0.1", port).start()
        backend = Backend(f"http://127.0.0.1:{port}")
        await backend.open()
        try:
            ids = await backend.list_models()
            return ids, backend.kind, await backend.count_tokens("x", None)
        finally:
            await backend.close()
            await runner.cleanup()

    assert asyncio.run(main()) == (("smollm2",), "", None)
