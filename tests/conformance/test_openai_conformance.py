"""OpenAI conformance against a real model: `opentela-node demo` (a head and two llama.cpp
workers serving SmolLM2-135M) driven with the official openai SDK through the head."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from conftest import free_port, http_json, wait_for

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
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip()
    assert chunks[-1].choices == [] or chunks[-1].choices[0].finish_reason is not None
    # llama-cpp-python 0.3.36 ignores include_usage; a backend that honours it must get it through.
    usage = [c.usage for c in chunks if c.usage is not None]
    assert all(u.completion_tokens > 0 for u in usage)


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
    before = sum(w["cancelled"] for w in pool.worker_stats())
    stream = pool.client().chat.completions.create(
        model=MODEL,
        max_tokens=1500,
        stream=True,
        messages=[{"role": "user", "content": "Write a very long story."}],
    )
    for i, _ in enumerate(stream):
        if i == 3:
            break
    stream.close()
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
    # The backend is free again at once: a new request is answered quickly.
    resp = pool.client().chat.completions.create(
        model=MODEL, max_tokens=4, messages=[{"role": "user", "content": "Hi"}]
    )
    assert resp.choices[0].message.content is not None
