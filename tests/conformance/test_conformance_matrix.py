"""A conformance matrix: each OpenAI feature against a backend DIRECTLY (its own port) and
THROUGH THE POOL (the head of ``opentela-node demo``: llama-cpp-python serving SmolLM2-135M).

Every cell is ok, unsupported (the backend answers the feature with an error, or ignores it)
or fail (an answer of the wrong shape). The pool must never make a backend look worse than it
is direct: every cell that works direct works through the pool, and the features the worker
bridges for llama-cpp-python (``worker/bridge.py``: text-part lists, the usage chunk of a
stream) work through the pool. The table is printed (``-s``) and written to the test's tmp dir
and ``.bench/conformance-matrix.json``.
"""

from __future__ import annotations

from pathlib import Path

import openai
from conftest import http_json, wait_for
from openai_matrix import MAX_TOKENS, Target, report_matrix, user
from test_openai_conformance import MODEL, DemoPool
from test_openai_conformance import pool as pool  # the demo fixture, shared, not copied

BACKEND = "llama-cpp-python (SmolLM2-135M, demo)"
BRIDGED = ("text_parts", "include_usage", "developer_role")
REPO = Path(__file__).resolve().parents[2]


def _workers(base: str) -> list[str]:
    _, _, table = http_json(f"{base}/v1/dnt/table")
    return sorted(pid.lstrip("/") for pid, n in table.items() if n["role"] == "worker")


def test_bridged_usage_is_counted_once(pool: DemoPool) -> None:
    """A stream the worker adds the usage chunk to is counted by the entry node once, with
    the chunk's numbers: exact for a completions prompt (the backend's tokenizer), so the
    row is not marked estimated."""

    def totals() -> tuple[int, int, int, int]:
        _, _, stats = http_json(f"{pool.base}/v1/statistics?days=1")
        rows = [r for r in stats["data"] if r["model"] == MODEL]
        return (
            sum(r["requests"] for r in rows),
            sum(r["prompt_tokens"] for r in rows),
            sum(r["completion_tokens"] for r in rows),
            sum(r["estimated"] for r in rows),
        )

    before = totals()
    chunks = list(
        pool.client().completions.create(
            model=MODEL,
            prompt="1, 2, 3,",
            max_tokens=MAX_TOKENS,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    usage = chunks[-1].usage
    assert usage is not None
    wait_for(lambda: totals()[0] > before[0], 10, what="the stream's usage row")
    after = totals()
    assert (after[1] - before[1], after[2] - before[2]) == (
        usage.prompt_tokens,
        usage.completion_tokens,
    )
    assert after[3] == before[3]  # exact: not estimated


def test_conformance_matrix(pool: DemoPool, tmp_path: Path) -> None:
    peer = _workers(pool.base)[0]
    backend = pool.backend_url(peer)
    direct = Target("direct", backend, MODEL, lambda _h: backend)
    through = Target("pool", pool.base, MODEL, lambda h: pool.backend_url(h["x-computing-node"]))
    out = (tmp_path / "conformance-matrix.json", REPO / ".bench" / "conformance-matrix.json")
    table, rows = report_matrix(BACKEND, direct, through, *out)
    bridged = [f for f in BRIDGED if rows[f]["pool"]["result"] != "ok"]
    assert not bridged, f"bridged features not working through the pool: {bridged}\n{table}"


def test_a_client_that_did_not_ask_gets_no_usage_chunk(pool: DemoPool) -> None:
    """The entry asks every stream for usage; the worker's added chunk is removed again for
    a client that did not ask, so it sees what the backend sent."""
    chunks = list(
        pool.client().chat.completions.create(
            model=MODEL, max_tokens=MAX_TOKENS, stream=True, messages=user("Say hello.")
        )
    )
    assert chunks and all(c.usage is None for c in chunks)
    assert chunks[-1].choices and chunks[-1].choices[0].finish_reason in ("stop", "length")


def test_a_worker_serving_its_own_client_bridges_too(pool: DemoPool) -> None:
    """A client that calls a worker's own HTTP address may be served by that worker's own
    backend (the entry's local path, no peer hop): the worker's bridges hold there as well, a
    list of text parts is answered and the stream gets its usage chunk."""
    _, _, table = http_json(f"{pool.base}/v1/dnt/table")
    peer, address = next(
        (pid.lstrip("/"), n["http_address"])
        for pid, n in sorted(table.items())
        if n["role"] == "worker"
    )
    client = openai.OpenAI(base_url=f"{address}/v1", api_key="none", max_retries=0, timeout=120)
    parts = [{"type": "text", "text": "Say hello"}, {"type": "text", "text": "in French."}]
    served_by = []
    for i in range(16):  # the session id moves the request between the two replicas
        raw = client.chat.completions.with_raw_response.create(
            model=MODEL,
            messages=[{"role": "user", "content": parts}],
            max_tokens=MAX_TOKENS,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
            extra_headers={"X-Session-ID": f"local-{i}"},
        )
        chunks = list(raw.parse())
        served_by.append(raw.headers.get("X-Computing-Node"))
        if served_by[-1] == peer:
            break
    else:
        raise AssertionError(f"{peer} never served its own client: {served_by}")
    contents = [c for c in chunks if c.choices and c.choices[0].delta.content]
    assert contents, "the stream carried no content"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == len(contents)
