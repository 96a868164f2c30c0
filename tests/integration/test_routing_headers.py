"""Routing by header and by place with real nodes: ``X-Otela-Identity-Group`` and
``X-Otela-Site`` restrict routing without the body naming a model, never reach a backend, and
an entry with a ``--site`` prefers its own site's replica at equal load."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections import Counter

from conftest import Cluster, Node, http_json, wait_for

MODEL = "m-place"


def post(entry: Node, body: dict, **headers: str) -> tuple[int, dict, dict]:
    req = urllib.request.Request(
        f"{entry.url}/v1/chat/completions",
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json", **{k.replace("_", "-"): v for k, v in headers.items()}},
    )  # fmt: skip
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            return r.status, dict(r.headers), json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), json.loads(e.read())


def pool(cluster: Cluster, entry_site: str) -> tuple[Node, dict[str, str], dict[str, int]]:
    """An entry in ``entry_site`` and two workers of one model: bristen (labelled
    framework=vllm) and clariden. Returns the entry, peer id -> site, site -> upstream port."""
    ports = {}
    for site in ("bristen", "clariden"):
        _, ports[site] = cluster.upstream(f"up-{site}", MODEL)
    entry = cluster.node("entry", "127.0.0.2", "--site", entry_site)
    a = cluster.node("w-bristen", "127.0.0.3", "--bootstrap", entry.maddr, "--site", "bristen",
                     "--label", "framework=vllm", "--backend", f"http://127.0.0.1:{ports['bristen']}")  # fmt: skip
    b = cluster.node("w-clariden", "127.0.0.4", "--bootstrap", entry.maddr, "--site", "clariden",
                     "--backend", f"http://127.0.0.1:{ports['clariden']}")  # fmt: skip
    wait_for(
        lambda: any(
            m["id"] == MODEL and m["replicas"] == 2
            for m in http_json(f"{entry.url}/v1/models")[2]["data"]
        ),
        20,
        what="both replicas routable",
    )
    return entry, {a.peer_id: "bristen", b.peer_id: "clariden"}, ports


MSGS = [{"role": "user", "content": "hello"}]


def test_headers_restrict_routing_and_stay_at_the_entry(cluster: Cluster) -> None:
    entry, site_of, ports = pool(cluster, "bristen")
    # The site header picks clariden's replica every time, against the entry's own site.
    for _ in range(6):
        status, headers, _ = post(
            entry, {"model": MODEL, "messages": MSGS}, X_Otela_Site="clariden"
        )
        assert status == 200
        assert site_of[headers["X-Computing-Node"]] == "clariden"
    seen = http_json(f"http://127.0.0.1:{ports['clariden']}/stats")[2]["last_headers"]
    assert not any(k.startswith("x-otela-") for k in seen), seen
    # A model from the header alone, narrowed by a label: bristen's (framework=vllm).
    for _ in range(4):
        status, headers, out = post(
            entry, {"messages": MSGS}, X_Otela_Identity_Group=f"model={MODEL},framework=vllm"
        )
        assert status == 200, out
        assert site_of[headers["X-Computing-Node"]] == "bristen"
        assert out["model"] == MODEL  # the backend was asked for the routed model
    seen = http_json(f"http://127.0.0.1:{ports['bristen']}/stats")[2]["last_headers"]
    assert "x-otela-identity-group" not in seen, seen
    # Mistakes and misses, OpenAI-shaped.
    status, _, out = post(
        entry, {"model": "other", "messages": MSGS}, X_Otela_Identity_Group=f"model={MODEL}"
    )
    assert status == 400 and out["error"]["code"] == "model_mismatch"
    status, _, out = post(entry, {"model": MODEL, "messages": MSGS}, X_Otela_Site="nowhere")
    assert status == 404 and "site 'nowhere'" in out["error"]["message"], out


def test_an_entry_prefers_its_own_site_at_equal_load(cluster: Cluster) -> None:
    entry, site_of, _ = pool(cluster, "clariden")
    served: Counter = Counter()
    for i in range(20):  # one at a time: both replicas idle, equal load
        # Distinct prompts: affinity alone would spread them over both replicas.
        msgs = [{"role": "user", "content": f"question {i}"}]
        status, headers, _ = post(entry, {"model": MODEL, "messages": msgs})
        assert status == 200
        served[site_of[headers["X-Computing-Node"]]] += 1
    assert served == Counter({"clariden": 20}), served
