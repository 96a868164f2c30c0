"""Rolling restarts heal: a head restarted after SIGTERM (every Kubernetes rollout), twice in a
row, and a worker restarted; a restarted node is not ready until it is back in its pool."""

from __future__ import annotations

import signal
import time

from conftest import Cluster, Node, http_json, wait_for

HEAL_S = 8.0  # "within a few seconds": restart to every node seeing the others, requests served


def chat(node: Node, model: str) -> tuple[int, dict, object]:
    return http_json(
        f"{node.url}/v1/chat/completions",
        "POST",
        {"model": model, "messages": [{"role": "user", "content": "hi"}]},
    )


def states(node: Node) -> dict[str, str]:
    _, _, table = http_json(f"{node.url}/v1/dnt/table")
    return {e["id"]: e["state"] for e in table.values()}


def sees_alive(node: Node, others: list[Node]) -> bool:
    s = states(node)
    return all(s.get(o.peer_id) == "alive" for o in others)


def pool(cluster: Cluster) -> tuple[Node, list[Node], list[list[str]]]:
    head = cluster.node("head", "127.0.0.2")
    workers, args = [], []
    for i in (1, 2):
        _, port = cluster.upstream(f"up{i}", f"m-{i}")
        a = ["--bootstrap", head.maddr, "--service.port", str(port)]
        workers.append(cluster.node(f"w{i}", f"127.0.0.{2 + i}", *a))
        args.append(a)
    wait_for(lambda: head.models() == ["m-1", "m-2"], 15, what="both models at the head")
    return head, workers, args


def stop(node: Node) -> None:
    node.proc.signal(signal.SIGTERM)
    assert node.proc.popen.wait(15) == 0, node.proc.tail()


def healed(head: Node, workers: list[Node], since: float) -> float:
    """Seconds from ``since`` until every node sees the others alive and the head serves both
    models; then no request through the head fails."""

    def ok() -> bool:
        return (
            sees_alive(head, workers)
            and all(sees_alive(w, [head, *[o for o in workers if o is not w]]) for w in workers)
            and all(chat(head, m)[0] == 200 for m in ("m-1", "m-2"))
        )

    wait_for(ok, HEAL_S, interval_s=0.1, what="pool healed")
    took = time.monotonic() - since
    for i in range(20):
        status, _, body = chat(head, f"m-{1 + i % 2}")
        assert status == 200, body
    return took


def test_head_restarted_after_sigterm_heals_even_twice_in_a_row(cluster: Cluster) -> None:
    head, workers, _ = pool(cluster)
    for _ in range(3):  # once, then twice in a row
        stop(head)
        t0 = time.monotonic()
        head = cluster.restart(head)
        took = healed(head, workers, t0)
        assert took < HEAL_S
        status, _, body = http_json(f"{head.url}/v1/health/ready")
        assert status == 200 and body["peers"] == 2, body


def test_worker_restarted_heals(cluster: Cluster) -> None:
    head, workers, args = pool(cluster)
    stop(workers[0])
    wait_for(lambda: head.models() == ["m-2"], 5, what="m-1 gone after its worker left")
    t0 = time.monotonic()
    workers[0] = cluster.restart(workers[0], *args[0])
    healed(head, workers, t0)


def test_head_alone_after_restart_is_not_ready_and_asks_to_retry(cluster: Cluster) -> None:
    """It remembers a pool (peers.json in its home), so alone it is still joining: readiness
    fails and requests get 503 + Retry-After instead of "no such model"."""
    head, workers, args = pool(cluster)
    stop(head)
    assert (head.home / "peers.json").exists()
    for w in workers:
        stop(w)
    head = cluster.restart(head)
    status, _, body = http_json(f"{head.url}/v1/health/ready")
    assert status == 503 and body["ready"] is False, body
    status, headers, body = chat(head, "m-1")
    assert status == 503 and body["error"]["code"] == "joining", body
    assert headers["Retry-After"]
    # A worker comes back (dials its bootstrap): the head is ready and serves again.
    workers[0] = cluster.restart(workers[0], *args[0])
    wait_for(lambda: http_json(f"{head.url}/v1/health/ready")[0] == 200, HEAL_S, what="ready")
    wait_for(lambda: chat(head, "m-1")[0] == 200, HEAL_S, what="served again")
