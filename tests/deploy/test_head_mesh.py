"""The multi-head design of deploy/kubernetes and deploy/helm, with real nodes on loopback.

Every head gets the same environment as in the StatefulSet: ``OTELA_PUBLIC_ADDR`` is its own
``/dns4/`` name and ``OTELA_BOOTSTRAP`` lists every head, itself included. So:
- a head alone (replicas 1) whose list names only itself is ready at once;
- heads given the same list find each other with no seed and no start order;
- a worker that bootstraps by URL through ONE head (what the client Service hands it) gets
  the other heads' announced addresses and is routable from every head.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from conftest import NODE, Cluster, http_json, wait_for

from opentela.testing.serving import free_port

HOST = "127.0.0.1"


def _identity(home: Path) -> str:
    home.mkdir(parents=True, exist_ok=True)
    subprocess.run([*NODE, "init", "--home", str(home)], check=True, capture_output=True)
    return subprocess.run(
        [*NODE, "peer-id", "--home", str(home)], check=True, capture_output=True, text=True
    ).stdout.strip()


def _heads(cluster: Cluster, n: int) -> list[tuple[str, int, int]]:
    """Start ``n`` heads as the StatefulSet does; (peer ID, http port, p2p port) of each."""
    specs = []
    for i in range(n):
        pid = _identity(cluster.tmp / f"head-{i}")
        specs.append((pid, free_port(HOST), free_port(HOST)))
    bootstrap = ",".join(f"/dns4/localhost/tcp/{p2p}/p2p/{pid}" for pid, _, p2p in specs)
    for i, (_, http, p2p) in enumerate(specs):
        cluster.spawn(
            f"head-{i}",
            [
                *NODE,
                "start",
                "--home",
                str(cluster.tmp / f"head-{i}"),
                "--role",
                "head",
                "--http-host",
                HOST,
                "--http-port",
                str(http),
                "--p2p-host",
                HOST,
                "--p2p-port",
                str(p2p),
                "--log-format",
                "json",
            ],
            env={
                "OTELA_PUBLIC_ADDR": f"/dns4/localhost/tcp/{p2p}",
                "OTELA_BOOTSTRAP": bootstrap,
            },
        )
    return specs


def _ready(http: int) -> bool:
    return http_json(f"http://{HOST}:{http}/v1/health/ready", timeout=2)[0] == 200


def test_a_lone_head_listing_only_itself_is_ready(cluster: Cluster) -> None:
    [(_, http, _)] = _heads(cluster, 1)
    wait_for(lambda: _ready(http), 30, what="the only head ready")


def test_heads_find_each_other_and_a_worker_joins_through_one(cluster: Cluster) -> None:
    (id0, http0, _p2p0), (id1, http1, p2p1) = _heads(cluster, 2)
    try:
        wait_for(lambda: _ready(http0) and _ready(http1), 40, what="both heads ready")
        # What a worker's --bootstrap-url gets from head 0: the other head's announced name too.
        _, _, body = http_json(f"http://{HOST}:{http0}/v1/dnt/bootstraps")
        assert f"/dns4/localhost/tcp/{p2p1}/p2p/{id1}" in body["bootstraps"], body
        assert any(a.endswith(f"/p2p/{id0}") for a in body["bootstraps"]), body

        _, port = cluster.upstream("up", "mesh-model")
        cluster.node(
            "worker",
            HOST,
            "--backend",
            f"http://{HOST}:{port}",
            "--bootstrap-url",
            f"http://{HOST}:{http0}/v1/dnt/bootstraps",
        )
        for http in (http0, http1):
            wait_for(
                lambda http=http: (
                    "mesh-model"
                    in [m["id"] for m in http_json(f"http://{HOST}:{http}/v1/models")[2]["data"]]
                ),
                30,
                what=f"the worker's model listed by the head on :{http}",
            )
    except AssertionError:
        raise AssertionError(cluster.dump()) from None
