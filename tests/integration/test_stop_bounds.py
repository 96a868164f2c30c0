"""Bounds a user can count on: ``--drain-timeout`` bounds the whole stop (drain plus shutdown),
a second signal cuts it to about a second, ``--read-timeout`` holds on every path."""

from __future__ import annotations

import signal
import threading
import time

import httpx
from conftest import Cluster, Node, http_json, wait_for

MSG = [{"role": "user", "content": "x"}]


def slow_pool(cluster: Cluster, *head_args: str) -> tuple[Node, Node]:
    # 400 tokens at 50 ms: a 20 s stream, far longer than any bound below.
    _, up = cluster.upstream(
        "up", "m-slow", "127.0.0.1", 0, "--tokens", "400", "--token-delay-ms", "50"
    )
    head = cluster.node("head", "127.0.0.2", *head_args)
    w = cluster.node("w", "127.0.0.3", "--bootstrap", head.maddr, "--service.port", str(up))
    wait_for(lambda: head.models() == ["m-slow"], 15, what="advertised")
    return head, w


def open_stream(node: Node) -> threading.Event:
    """Start a long stream through ``node`` in a thread; the event is set at its first byte."""
    first = threading.Event()

    def run() -> None:
        try:
            with httpx.stream(
                "POST",
                f"{node.url}/v1/chat/completions",
                json={"model": "m-slow", "messages": MSG, "stream": True},
                timeout=30,
            ) as r:
                for _ in r.iter_bytes():
                    first.set()
        except httpx.HTTPError:
            pass

    threading.Thread(target=run, daemon=True).start()
    assert first.wait(10), "stream did not start"
    return first


def exit_time(node: Node, limit_s: float) -> float:
    t0 = time.monotonic()
    node.proc.popen.wait(limit_s + 10)
    return time.monotonic() - t0


def test_drain_timeout_bounds_the_whole_stop(cluster: Cluster) -> None:
    head, _ = slow_pool(cluster, "--drain-timeout", "2")
    open_stream(head)
    t0 = time.monotonic()
    head.proc.signal(signal.SIGTERM)
    head.proc.popen.wait(15)
    took = time.monotonic() - t0
    # The drain gives up at ~1.5 s (the rest of the 2 s is for leaving and shutting down).
    assert took < 2 + 1.0, f"stop took {took:.1f}s with --drain-timeout 2\n{head.proc.tail()}"
    log = head.proc.log.read_text()
    assert '"node.drained"' in log and '"unfinished": 1' in log
    assert head.proc.popen.returncode == 0


def test_a_second_signal_cuts_the_stop_to_about_a_second(cluster: Cluster) -> None:
    head, _ = slow_pool(cluster, "--drain-timeout", "30")
    open_stream(head)
    head.proc.signal(signal.SIGTERM)
    wait_for(lambda: '"node.draining"' in head.proc.log.read_text(), 5, what="draining")
    t0 = time.monotonic()
    head.proc.signal(signal.SIGTERM)
    head.proc.popen.wait(15)
    took = time.monotonic() - t0
    assert took < 1.0 + 1.0, f"second signal: stop took {took:.1f}s\n{head.proc.tail()}"
    assert '"node.stop_cut_short"' in head.proc.log.read_text()


def test_read_timeout_holds_when_the_entry_serves_the_model_itself(cluster: Cluster) -> None:
    """The entry is the worker: no peer hop, straight to its backend, which stalls."""
    _, up = cluster.upstream("up", "m-stall", "127.0.0.1", 0, "--latency-ms", "5000")
    w = cluster.node("w", "127.0.0.3", "--service.port", str(up), "--read-timeout", "1")
    wait_for(lambda: w.models() == ["m-stall"], 15, what="advertised")
    t0 = time.monotonic()
    status, _, body = http_json(
        f"{w.url}/v1/chat/completions", "POST", {"model": "m-stall", "messages": MSG}, timeout=10
    )
    took = time.monotonic() - t0
    assert status == 503 and "Timeout" in body["error"]["message"], body
    assert took < 3.0, f"waited {took:.1f}s with --read-timeout 1"


def test_read_timeout_mid_stream_on_the_local_path_ends_with_an_sse_error(cluster: Cluster) -> None:
    _, up = cluster.upstream(
        "up", "m-gap", "127.0.0.1", 0, "--tokens", "3", "--token-delay-ms", "3000"
    )
    w = cluster.node("w", "127.0.0.3", "--service.port", str(up), "--read-timeout", "1")
    wait_for(lambda: w.models() == ["m-gap"], 15, what="advertised")
    t0 = time.monotonic()
    with httpx.stream(
        "POST",
        f"{w.url}/v1/chat/completions",
        json={"model": "m-gap", "messages": MSG, "stream": True},
        timeout=20,
    ) as r:
        body = b"".join(r.iter_bytes())
    assert b"stream_interrupted" in body, body
    assert time.monotonic() - t0 < 5.0
