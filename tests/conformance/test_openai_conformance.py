"""OpenAI conformance against a real model: `opentela-node demo` (a head and two llama.cpp
workers serving SmolLM2-135M) driven with the official openai SDK through the head."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from conftest import free_port, http_json, wait_for
from openai_matrix import NO_EOS

MODEL = "smollm2-135m"


class DemoPool:
    def __init__(self, proc: subprocess.Popen, base: str, log: Path) -> None:
        self.proc, self.base, self.log = proc, base, log

    def client(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.base}/v1", api_key="none", max_retries=0, timeout=120)

    def worker_stats(self) -> list[dict]:
        _, _, table = http_json(f"{self.base}/v1/dnt/table")
        urls = [n["http_address"] for n in table.values() if n["role"] == "worker"]
        return [http_json(f"{u}/v1/dnt/stats")[2]["worker"] for u in urls]

    def worker_log(self, peer_id: str) -> str:
        """The log of the demo worker ``peer_id`` (its node's lines and its backend's, which
        the node prefixes with ``[backend]``)."""
        logs = re.search(r"logs in (\S+)\)", self.log.read_text()).group(1)  # type: ignore[union-attr]
        for path in sorted(Path(logs).glob("worker*.log")):
            text = path.read_text(errors="replace")
            if f'"peer_id": "{peer_id}"' in text:
                return text
        raise AssertionError(f"no demo worker log for {peer_id} in {logs}")

    def backend_url(self, peer_id: str) -> str:
        for line in self.worker_log(peer_id).splitlines():
            if '"node.ready"' in line:
                return json.loads(line)["backend"]
        raise AssertionError(f"{peer_id} never logged node.ready")


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoPool]:
    port = free_port()
    log = tmp_path_factory.mktemp("demo") / "demo.log"
    with log.open("wb") as f:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "opentela.cli",
                "demo",
                "--workers",
                "2",
                "--http-port",
                str(port),
            ],
            stdout=f,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            # The llama.cpp server's own prints (e.g. a client disconnecting) reach its log now.
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(
            lambda: any(
                m["id"] == MODEL and m["replicas"] == 2
                for m in http_json(f"{base}/v1/models")[2]["data"]
            ),
            240,
            interval_s=0.5,
            what="two SmolLM2 replicas",
        )
        yield DemoPool(proc, base, log)
    except BaseException:
        print(log.read_text(errors="replace")[-4000:])
        raise
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 0, log.read_text(errors="replace")[-4000:]
    assert "stopped." in log.read_text()


def test_models_list(pool: DemoPool) -> None:
    assert [m.id for m in pool.client().models.list().data] == [MODEL]


def test_chat_non_streaming(pool: DemoPool) -> None:
    raw = pool.client().chat.completions.with_raw_response.create(
        model=MODEL,
        max_tokens=16,
        temperature=0,
        messages=[{"role": "user", "content": "Name a color."}],
    )
    resp = raw.parse()
    assert resp.choices[0].message.content.strip()
    assert resp.usage.completion_tokens > 0
    assert raw.headers["x-computing-node"].startswith("12D3KooW")


def test_chat_streaming_with_usage_option(pool: DemoPool) -> None:
    chunks = list(
        pool.client().chat.completions.create(
            model=MODEL,
            max_tokens=16,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
            messages=[{"role": "user", "content": "Count to three."}],
        )
    )
    content = [c for c in chunks if c.choices and c.choices[0].delta.content]
    assert "".join(c.choices[0].delta.content for c in content).strip()
    assert 0 < len(content) <= 16  # max_tokens still applies with stream_options present
    # llama-cpp-python 0.3.x ignores include_usage; the worker adds the usage chunk it asked
    # for (worker/bridge.py): last, with no choices, counting the streamed tokens.
    assert chunks[-2].choices[0].finish_reason in ("stop", "length")
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    assert last.usage.completion_tokens == len(content)
    assert last.usage.prompt_tokens > 0


def test_streams_without_a_usage_chunk_are_counted_as_estimated(pool: DemoPool) -> None:
    """llama-cpp-python sends no usage chunk and applies its chat template where nobody can
    count it: the worker's usage chunk says ``estimated`` (its prompt tokens are), and the
    entry node marks the row estimated (issue 11)."""

    def estimated() -> int:
        _, _, stats = http_json(f"{pool.base}/v1/statistics?days=1")
        return sum(r["estimated"] for r in stats["data"] if r["model"] == MODEL)

    before = estimated()
    chunks = list(
        pool.client().chat.completions.create(
            model=MODEL,
            max_tokens=8,
            stream=True,
            messages=[{"role": "user", "content": "Say hello."}],
        )
    )
    assert chunks
    # Usage is written in batches of at most 1 s.
    wait_for(lambda: estimated() > before, 10, what="an estimated usage row for the stream")


def test_completions_streaming_and_not(pool: DemoPool) -> None:
    c = pool.client()
    plain = c.completions.create(model=MODEL, prompt="1, 2, 3,", max_tokens=6, temperature=0)
    streamed = "".join(
        ch.choices[0].text
        for ch in c.completions.create(
            model=MODEL, prompt="1, 2, 3,", max_tokens=6, temperature=0, stream=True
        )
    )
    assert plain.choices[0].text.strip()
    assert streamed == plain.choices[0].text  # temperature 0: the same tokens either way


def test_unknown_model_is_not_found(pool: DemoPool) -> None:
    with pytest.raises(openai.NotFoundError) as exc:
        pool.client().chat.completions.create(
            model="no-such-model", messages=[{"role": "user", "content": "x"}]
        )
    assert MODEL in str(exc.value)


def test_malformed_body_is_bad_request(pool: DemoPool) -> None:
    with pytest.raises(openai.BadRequestError):
        pool.client().chat.completions.create(model=MODEL, messages="not a list")  # type: ignore[arg-type]
    with pytest.raises(openai.BadRequestError):
        pool.client().post(
            "/chat/completions",
            cast_to=dict,
            content=b"{not json",
            options={"headers": {"Content-Type": "application/json"}},
        )


def test_closing_a_stream_aborts_generation(pool: DemoPool) -> None:
    """The worker cancels, and the backend itself stops generating: checked on the llama.cpp
    server, not only on opentela's counters."""
    before = sum(w["cancelled"] for w in pool.worker_stats())
    max_tokens = 1500
    raw = pool.client().chat.completions.with_raw_response.create(
        model=MODEL,
        max_tokens=max_tokens,
        stream=True,
        logit_bias=NO_EOS,
        messages=[{"role": "user", "content": "Write a very long story."}],
    )
    peer = raw.headers["x-computing-node"]
    stamps = []
    stream = raw.parse()
    for _ in stream:
        stamps.append(time.monotonic())
        if len(stamps) == 21:
            break
    stream.close()
    # How long the backend would stay busy if it went on with the abandoned generation.
    rate = (len(stamps) - 1) / (stamps[-1] - stamps[0])
    busy_for_s = (max_tokens - len(stamps)) / rate
    wait_for(
        lambda: sum(w["cancelled"] for w in pool.worker_stats()) > before,
        10,
        what="worker cancelled the request",
    )
    wait_for(
        lambda: all(w["in_flight"] == 0 for w in pool.worker_stats()),
        10,
        what="no generation in flight",
    )
    # The backend is free again at once. The demo runs llama.cpp with --interrupt_requests
    # False, one generation at a time: a request sent straight to that same backend would queue
    # behind an abandoned generation for ~busy_for_s; it must come back in a fraction of that.
    t0 = time.monotonic()
    status, _, body = http_json(
        f"{pool.backend_url(peer)}/v1/chat/completions",
        "POST",
        {"model": MODEL, "max_tokens": 4, "messages": [{"role": "user", "content": "Hi"}]},
        timeout=120,
    )
    took = time.monotonic() - t0
    assert status == 200, body
    assert body["choices"][0]["message"]["content"] is not None
    assert took < busy_for_s / 4, f"backend still busy: {took:.1f}s (generation: {busy_for_s:.0f}s)"
    # And the backend says it saw the client go (llama-cpp-python's server prints this).
    wait_for(
        lambda: "[backend] Disconnected from client" in pool.worker_log(peer),
        10,
        what="the backend logging the disconnect",
    )
