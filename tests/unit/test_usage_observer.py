"""Usage accounting of one response (gateway/usage.py): pure SSE/JSON cases, no network."""

from __future__ import annotations

import json
from typing import Any

import pytest

from opentela.gateway.usage import SseUsage, UsageRecorder, counted
from opentela.store.usage import UsageRow

SSE = [("Content-Type", "text/event-stream"), ("X-Computing-Node", "peerA")]
JSON = [("Content-Type", "application/json")]


def ev(obj: Any) -> bytes:
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"


def content(i: int, text: str) -> bytes:
    return ev({"id": "c", "choices": [{"index": 0, "delta": {"content": text}}]})


USAGE = {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
USAGE_EV = ev({"id": "c", "choices": [], "usage": USAGE})
DONE = b"data: [DONE]\n\n"


def stream(with_usage: bool) -> bytes:
    parts = [
        ev({"id": "c", "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}),
        content(0, "a"),
        content(1, " b"),
        content(2, " c"),
    ]
    if with_usage:
        parts.append(USAGE_EV)
    return b"".join([*parts, DONE])


def splits(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


class Sink(list[UsageRow]):
    def __call__(self, row: UsageRow) -> None:
        self.append(row)


def run(
    body: dict[str, Any], chunks: list[bytes], headers=SSE, status=200, complete=True
) -> tuple[bytes, bytes, UsageRow]:
    sink = Sink()
    rec = UsageRecorder(sink, clock=lambda: 1_700_000_000.0)
    sent, obs = rec.prepare(body, None, "m", body.get("stream") is True)
    obs.on_head(status, headers)
    out = b"".join(obs.on_body(c) for c in chunks)
    obs.on_end(complete)
    obs.done()
    assert len(sink) == 1
    return sent, out, sink[0]


CHAT = {"model": "m", "messages": [{"role": "user", "content": "x" * 40}]}


@pytest.mark.parametrize("size", [1, 3, 7, 64, 10_000])
def test_client_asked_gets_identical_bytes(size: int) -> None:
    body = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
    data = stream(with_usage=True)
    sent, out, row = run(body, splits(data, size))
    assert out == data
    assert json.loads(sent) == body
    assert (row.prompt_tokens, row.completion_tokens, row.estimated) == (7, 3, 0)


@pytest.mark.parametrize("size", [1, 5, 64, 10_000])
def test_usage_chunk_stripped_when_not_asked(size: int) -> None:
    body = {**CHAT, "stream": True}
    sent, out, row = run(body, splits(stream(with_usage=True), size))
    assert out == stream(with_usage=False)
    assert json.loads(sent)["stream_options"] == {"include_usage": True}
    assert (row.prompt_tokens, row.completion_tokens, row.estimated) == (7, 3, 0)


def test_include_usage_merged_never_overwrites() -> None:
    body = {**CHAT, "stream": True, "stream_options": {"continuous_usage_stats": True}}
    sent, _, _ = run(body, [stream(True)])
    assert json.loads(sent)["stream_options"] == {
        "continuous_usage_stats": True,
        "include_usage": True,
    }
    assert body["stream_options"] == {"continuous_usage_stats": True}  # caller's object kept


def test_unchanged_body_forwarded_as_sent() -> None:
    rec = UsageRecorder(Sink())
    raw = b'{"model": "m",  "messages": [{"role":"user","content":"hi"}]}'
    sent, _ = rec.prepare(json.loads(raw), None, "m", False, raw=raw)
    assert sent is raw


def test_chunk_with_choices_and_usage_keeps_choices() -> None:
    mixed = {"id": "c", "choices": [{"index": 0, "delta": {"content": " z"}}], "usage": USAGE}
    data = content(0, "a") + ev(mixed) + DONE
    _, out, row = run({**CHAT, "stream": True}, splits(data, 4))
    no_usage = {k: v for k, v in mixed.items() if k != "usage"}
    assert out == content(0, "a") + ev(no_usage) + DONE
    assert row.completion_tokens == 3


def test_null_usage_fields_left_alone() -> None:
    data = ev({"id": "c", "choices": [{"index": 0, "delta": {"content": "a"}}], "usage": None})
    _, out, _ = run({**CHAT, "stream": True}, [data + DONE])
    assert out == data + DONE


def test_crlf_events_and_non_json_data() -> None:
    data = (
        b": keep-alive\r\n\r\n"
        + b"data: not json\r\n\r\n"
        + b'data: {"choices":[],"usage":{"prompt_tokens":2,"completion_tokens":1}}\r\n\r\n'
        + b"data: [DONE]\r\n\r\n"
    )
    _, out, row = run({**CHAT, "stream": True}, splits(data, 2))
    assert out == b": keep-alive\r\n\r\ndata: not json\r\n\r\ndata: [DONE]\r\n\r\n"
    assert (row.prompt_tokens, row.completion_tokens) == (2, 1)


def test_no_usage_backend_is_estimated() -> None:
    # llama-cpp-python: no usage chunk even when asked; one token per content chunk.
    _, out, row = run({**CHAT, "stream": True}, splits(stream(False), 9))
    assert out == stream(False)
    assert (row.prompt_tokens, row.completion_tokens, row.estimated) == (10, 3, 1)


def test_aborted_stream_counted_up_to_where_it_stopped() -> None:
    data = stream(False)
    cut = data.index(content(2, " c"))
    _, _, row = run({**CHAT, "stream": True}, [data[:cut]], complete=False)
    assert (row.aborted, row.completion_tokens, row.estimated, row.errors) == (1, 2, 1, 0)


def test_error_status_counted_as_error() -> None:
    err = b'{"error":{"message":"no","type":"server_error","code":null}}'
    _, out, row = run(CHAT, [err], headers=JSON, status=500)
    assert out == err
    assert (row.requests, row.errors, row.prompt_tokens, row.completion_tokens) == (1, 1, 0, 0)


def test_error_event_mid_stream_counts_what_came_before() -> None:
    data = content(0, "a") + content(1, " b") + ev({"error": {"message": "oom"}})
    _, out, row = run({**CHAT, "stream": True}, [data])
    assert out == data
    assert (row.errors, row.completion_tokens, row.estimated, row.aborted) == (1, 2, 1, 0)


def test_non_stream_counted_from_usage() -> None:
    answer = json.dumps({"choices": [{"message": {"content": "hi"}}], "usage": USAGE}).encode()
    _, out, row = run(CHAT, splits(answer, 10), headers=JSON)
    assert out == answer
    assert (row.prompt_tokens, row.completion_tokens, row.estimated) == (7, 3, 0)


def test_embeddings_counted_from_prompt_tokens() -> None:
    answer = json.dumps({"data": [], "usage": {"prompt_tokens": 5, "total_tokens": 5}}).encode()
    _, _, row = run({"model": "m", "input": "a b"}, [answer], headers=JSON)
    assert (row.prompt_tokens, row.completion_tokens, row.estimated) == (5, 0, 0)


def test_gone_before_head_is_aborted_not_error() -> None:
    sink = Sink()
    _, obs = UsageRecorder(sink).prepare(CHAT, None, "m", False)
    obs.done(None)
    obs.done(None)  # once only
    assert len(sink) == 1 and sink[0].aborted == 1 and sink[0].errors == 0
    assert (sink[0].key_id, sink[0].owner) == ("-", "anonymous")


def test_key_identity_used() -> None:
    class Key:
        id, owner = "key_1234abcd", "alice@ethz.ch"

    sink = Sink()
    _, obs = UsageRecorder(sink).prepare(CHAT, Key(), "m", False)
    obs.done(502)
    assert (sink[0].key_id, sink[0].owner, sink[0].errors) == ("key_1234abcd", "alice@ethz.ch", 1)


def test_partial_event_held_back_only_when_stripping() -> None:
    p = SseUsage(strip=True)
    assert p.feed(b"data: {") == b""
    assert p.feed(b'"choices":[]}\n\n') == b'data: {"choices":[]}\n\n'
    q = SseUsage(strip=False)
    assert q.feed(b"data: {") == b"data: {"


def test_endless_event_not_buffered_without_bound() -> None:
    p = SseUsage(strip=True)
    big = b"data: " + b"x" * (2 * 1024 * 1024)
    assert p.feed(big) == big
    assert p.feed(b"\n\n") == b"\n\n"


def test_counted_paths() -> None:
    assert counted("/v1/chat/completions")
    assert counted("/v1/completions?x=1")
    assert counted("/v1/embeddings")
    assert not counted("/v1/models")
    assert not counted("/v1/audio/transcriptions")
