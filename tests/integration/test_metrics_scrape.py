"""``/metrics`` of a real pool after known traffic: counts by model, route and status, latency
histograms, tokens, failovers by reason (checked against what the failing worker itself
counted), the pool's members and replicas, and ``/metrics/targets`` for Prometheus."""

from __future__ import annotations

import json
import urllib.request

from conftest import Cluster, http_json, wait_for
from prometheus_client.parser import text_string_to_metric_families

MODEL = "m"
CHAT = "/v1/chat/completions"
TOKENS = 8  # the fake upstream's completion tokens per answer


def scrape(url: str) -> dict[tuple[str, frozenset], float]:
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as r:
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = r.read().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def total(samples: dict, name: str, **labels: str) -> float:
    """Sum over the series of ``name`` whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


def chat(url: str, stream: bool = False, n: int = 0) -> tuple[int, str]:
    """One call; ``n`` varies the prompt (the default policy keeps a prompt on one replica)."""
    msg = {"role": "user", "content": f"hello number {n}"}
    body = {"model": MODEL, "messages": [msg], "stream": stream}
    req = urllib.request.Request(
        f"{url}{CHAT}", json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            r.read()
            return r.status, r.headers.get("X-Computing-Node", "")
    except urllib.error.HTTPError as e:
        return e.code, ""


def test_metrics_count_known_traffic_and_failovers(cluster: Cluster) -> None:
    head = cluster.node("head", "127.0.0.2")
    # w0's backend refuses its first 3 calls with a 503: each is a failover at the entry.
    _, bad = cluster.upstream(
        "up0", MODEL, "127.0.0.1", 0, "--tokens", str(TOKENS), "--fail-status", "503",
        "--fail-count", "3",
    )  # fmt: skip
    _, good = cluster.upstream("up1", MODEL, "127.0.0.1", 0, "--tokens", str(TOKENS))
    w0 = cluster.node("w0", "127.0.0.10", "--bootstrap", head.maddr, "--service.port", str(bad))
    w1 = cluster.node("w1", "127.0.0.11", "--bootstrap", head.maddr, "--service.port", str(good))
    wait_for(
        lambda: http_json(f"{head.url}/v1/models")[2]["data"][0]["replicas"] == 2,
        20, what="two replicas",
    )  # fmt: skip

    served: dict[str, int] = {}
    sent = 0

    def w0_refused() -> float:
        return value(scrape(w0.url), "opentela_worker_requests_total", model=MODEL, status="503")

    # Until w0 has refused its three (bounded: routing spreads over both replicas).
    while w0_refused() < 3 and sent < 60:
        status, peer = chat(head.url, n=sent)
        assert status == 200, status
        served[peer] = served.get(peer, 0) + 1
        sent += 1
    assert w0_refused() == 3, f"w0 refused {w0_refused()} of {sent}: {served}"
    for i in range(3):
        status, peer = chat(head.url, stream=True, n=100 + i)
        assert status == 200
        served[peer] = served.get(peer, 0) + 1
    assert http_json(f"{head.url}/v1/chat/completions", "POST", {"model": "nope"})[0] == 400
    status, peer = chat(head.url, n=99)
    assert status == 200
    served[peer] = served.get(peer, 0) + 1
    served_total = sent + 3 + 1

    m = scrape(head.url)
    ok = value(m, "opentela_http_requests_total", model=MODEL, route=CHAT, status="200")
    assert ok == served_total
    assert value(m, "opentela_http_requests_total", model="", route=CHAT, status="400") == 1
    assert value(m, "opentela_failovers_total", reason="backend_error") == 3
    assert value(m, "opentela_time_to_first_token_seconds_count", model=MODEL) == 3
    assert value(m, "opentela_time_to_first_byte_seconds_count", model=MODEL) == served_total
    assert value(m, "opentela_request_duration_seconds_count", model=MODEL) == served_total
    assert value(m, "opentela_completion_tokens_total", model=MODEL) == TOKENS * served_total
    assert value(m, "opentela_members", state="alive") == 3
    assert value(m, "opentela_model_replicas", model=MODEL) == 2
    assert total(m, "opentela_node_info", role="head") == 1
    assert value(m, "opentela_http_requests_in_flight") == 1  # the scrape itself
    assert total(m, "process_resident_memory_bytes") > 0
    # Each worker counted what it served, by model (w0 also its three refusals).
    for w in (w0, w1):
        wm = scrape(w.url)
        got = value(wm, "opentela_worker_requests_total", model=MODEL, status="200")
        assert got == served.get(w.peer_id, 0), (w.proc.name, got, served)
        assert value(wm, "opentela_backend_up") == 1

    # A kill: every failover of the requests after it is counted, by reason, none lost.
    w1.proc.popen.kill()
    for i in range(10):
        assert chat(head.url, n=200 + i)[0] == 200
    m = scrape(head.url)
    _, _, stats = http_json(f"{head.url}/v1/dnt/stats")
    assert total(m, "opentela_failovers_total") == stats["forward"]["retries"]
    assert value(m, "opentela_forward_exhausted_total") == stats["forward"]["failed"] == 0
    ok = value(m, "opentela_http_requests_total", model=MODEL, route=CHAT, status="200")
    assert ok == served_total + 10

    # Prometheus discovery: every live member, with labels for relabelling.
    wait_for(lambda: len(http_json(f"{head.url}/metrics/targets")[2]) == 2, 20, what="w1 dropped")
    groups = http_json(f"{head.url}/metrics/targets")[2]
    assert sorted(g["targets"][0] for g in groups) == sorted(
        f"{n.host}:{n.http_port}" for n in (head, w0)
    )
    assert {g["labels"]["__meta_opentela_role"] for g in groups} == {"head", "worker"}
