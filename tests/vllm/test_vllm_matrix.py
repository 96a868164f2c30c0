"""vLLM for real (``make conformance-vllm``, opt-in: ~4 min of install and ~1-2 min per start
on 2 CPU cores, more than CI's budget): the CPU build of vLLM serving SmolLM2-135M behind two
workers started with ``--subprocess``, each with an API key on the backend
(``VLLM_API_KEY``) that only its worker knows (``OTELA_SERVICE_API_KEY``); two entry nodes,
one routing by prefix affinity (the default), one at random.

Checked: model discovery and the ``vllm`` framework label; the backend's load as vLLM
reports it (``vllm:num_requests_running``); the API key (the backend refuses a client
without it, the pool's clients never need it); the conformance matrix direct and through the
pool; and that affinity routing shows in vLLM's own prefix-cache hit counters.

Needs ``OPENTELA_VLLM_PYTHON`` and ``OPENTELA_VLLM_MODEL`` (what ``scripts/vllm_cpu_up.sh``
prints); without them every test is skipped.
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import openai
import pytest
from conftest import Cluster, Node, free_port, http_json, wait_for
from openai_matrix import Target, report_matrix, user

from opentela.worker.metrics import parse_prometheus

VLLM_PYTHON = os.environ.get("OPENTELA_VLLM_PYTHON", "")
VLLM_MODEL = os.environ.get("OPENTELA_VLLM_MODEL", "")
MODEL = "smollm2-135m"
BACKEND = "vLLM 0.32.0 CPU (SmolLM2-135M, bf16, eager)"
REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = float(os.environ.get("OPENTELA_VLLM_START_TIMEOUT", "900"))
if not (VLLM_PYTHON and VLLM_MODEL):
    pytest.skip(
        "opt-in: make conformance-vllm (sets OPENTELA_VLLM_PYTHON and OPENTELA_VLLM_MODEL)",
        allow_module_level=True,
    )


@dataclass
class VllmPool:
    head: Node  # affinity routing (the default)
    head_random: Node
    workers: dict[str, str]  # peer id -> the vLLM server it fronts
    key: str  # the backends' --api-key, known to the workers only
    started_s: dict[str, float] = field(default_factory=dict)

    def client(self, node: Node | None = None) -> openai.OpenAI:
        base = (node or self.head).url
        return openai.OpenAI(base_url=f"{base}/v1", api_key="none", max_retries=0, timeout=300)


def vllm_metrics(backend: str) -> dict[str, float]:
    """vLLM's /metrics, summed over label sets (it serves one model here)."""
    with urllib.request.urlopen(f"{backend}/metrics", timeout=10) as r:
        text = r.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("vllm:") and " " in line:
            name = line.split("{", 1)[0].split(" ", 1)[0]
            out[name] = out.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
    return out


def running(backend: str) -> float:
    load = parse_prometheus(urllib.request.urlopen(f"{backend}/metrics", timeout=10).read())
    assert load is not None, "vLLM's /metrics has no running/waiting gauges"
    return float(load.total)


@pytest.fixture(scope="module")
def vpool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VllmPool]:
    cluster = Cluster(tmp_path_factory.mktemp("vllm"))
    key = secrets.token_urlsafe(16)
    try:
        t0 = time.monotonic()
        head = cluster.node("head", "127.0.0.1")
        head_random = cluster.node(
            "head-random", "127.0.0.1", "--bootstrap", head.maddr, "--routing.policy", "random"
        )
        ports = [free_port(), free_port()]
        backends: dict[str, str] = {}
        for i, port in enumerate(ports):
            serve = [
                "env",
                "HF_HUB_OFFLINE=1",  # the model is a local directory: never ask a hub
                "VLLM_CPU_KVCACHE_SPACE=2",  # GiB of KV cache per server (default 4)
                VLLM_PYTHON,
                str(REPO / "scripts" / "vllm_cli.py"),
                "serve",
                VLLM_MODEL,
                "--served-model-name",
                MODEL,
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--max-model-len",
                "2048",
                "--dtype",
                "bfloat16",
                "--enforce-eager",  # 1 min to start instead of 4 (torch.compile)
                # As researchers serve tool-using models; without a parser vLLM refuses a
                # named tool_choice with 400.
                "--enable-auto-tool-choice",
                "--tool-call-parser",
                "hermes",
            ]
            worker_args = [
                "--bootstrap",
                head.maddr,
                "--service.port",
                str(port),
                "--subprocess",
                shlex.join(serve),
            ]
            # Keys by environment, not flags: on a shared node `ps` shows every user the
            # command lines. The server inherits the worker's environment.
            keys = {"OTELA_SERVICE_API_KEY": key, "VLLM_API_KEY": key}
            node = cluster.node(f"w{i}", "127.0.0.1", *worker_args, wait=False, env=keys)
            backends[node.peer_id] = f"http://127.0.0.1:{port}"
        # Both vLLM servers start at once: slower each on 2 cores, not slower in all.
        wait_for(
            lambda: _replicas(head) == 2,
            START_TIMEOUT_S,
            interval_s=1,
            what="two vLLM replicas in the table",
        )
        pool = VllmPool(head, head_random, backends, key)
        pool.started_s["two replicas ready"] = round(time.monotonic() - t0, 1)
        yield pool
    finally:
        cluster.close()


def _replicas(head: Node) -> int:
    _, _, body = http_json(f"{head.url}/v1/models")
    return sum(m.get("replicas", 0) for m in body["data"] if m["id"] == MODEL)


def test_models_and_framework_label(vpool: VllmPool) -> None:
    _, _, body = http_json(f"{vpool.head.url}/v1/models")
    (m,) = [m for m in body["data"] if m["id"] == MODEL]
    assert m["replicas"] == 2
    _, _, table = http_json(f"{vpool.head.url}/v1/dnt/table")
    workers = [r for r in table.values() if r["role"] == "worker"]
    assert [w["labels"]["framework"] for w in workers] == ["vllm", "vllm"]
    print(f"\nstart: {vpool.started_s}")


def test_the_backend_key_stays_with_the_worker(vpool: VllmPool) -> None:
    backend = next(iter(vpool.workers.values()))
    status, _, body = http_json(
        f"{backend}/v1/chat/completions",
        "POST",
        {"model": MODEL, "max_tokens": 2, "messages": user("Hi")},
    )
    assert status == 401, (status, body)
    resp = vpool.client().chat.completions.create(model=MODEL, max_tokens=2, messages=user("Hi"))
    assert resp.choices[0].message.content is not None


def test_load_is_read_from_vllm_metrics(vpool: VllmPool) -> None:
    """Four streams at once: vLLM reports them running, the worker's own /metrics says what
    it scraped, and the table carries it to the head."""
    done = threading.Event()

    def stream() -> None:
        try:
            for _ in vpool.client().chat.completions.create(
                model=MODEL,
                max_tokens=120,
                stream=True,
                logit_bias={"0": -100, "2": -100},
                messages=user("Write a long story."),
                extra_headers={"X-Session-ID": "load"},  # one replica gets all four
            ):
                if done.is_set():
                    break
        except openai.APIError:
            pass

    threads = [threading.Thread(target=stream) for _ in range(4)]
    for th in threads:
        th.start()
    try:
        seen = wait_for(
            lambda: max(running(b) for b in vpool.workers.values()) >= 2, 60, what="vLLM busy"
        )
        assert seen

        def scraped() -> float:
            total = 0.0
            _, _, table = http_json(f"{vpool.head.url}/v1/dnt/table")
            for rec in table.values():
                if rec["role"] != "worker":
                    continue
                with urllib.request.urlopen(f"{rec['http_address']}/metrics", timeout=10) as r:
                    for line in r.read().decode().splitlines():
                        if line.startswith("opentela_backend_requests_running"):
                            total += float(line.rsplit(" ", 1)[1])
            return total

        wait_for(lambda: scraped() >= 2, 30, what="the worker's scrape of vLLM's running")
        wait_for(
            lambda: max(r["load"] for r in _table(vpool.head) if r["role"] == "worker") >= 2,
            30,
            what="the load in the head's table",
        )
    finally:
        done.set()
        for th in threads:
            th.join(120)


def _table(node: Node) -> list[dict]:
    _, _, table = http_json(f"{node.url}/v1/dnt/table")
    return list(table.values())


def test_conformance_matrix_vllm(vpool: VllmPool, tmp_path: Path) -> None:
    backend = sorted(vpool.workers.values())[0]
    direct = Target(
        "direct",
        backend,
        MODEL,
        lambda _h: backend,
        api_key=vpool.key,
        backend_key=vpool.key,
        running=running,
    )
    through = Target(
        "pool",
        vpool.head.url,
        MODEL,
        lambda h: vpool.workers[h["x-computing-node"]],
        backend_key=vpool.key,
        running=running,
    )
    out = (tmp_path / "conformance-matrix.json", REPO / ".bench" / "conformance-matrix-vllm.json")
    report_matrix(BACKEND, direct, through, *out)


# ~960 tokens each: vLLM's CPU backend caches whole blocks of 128 tokens, so a prompt must be
# several blocks long for a repeat to hit.
def _system_prompt(i: int) -> str:
    facts = " ".join(
        f"Fact {i}.{j}: the value of item {j} in set {i} is {j * 7 + i}." for j in range(40)
    )
    return f"You are assistant number {i}. Remember these facts. {facts}"


def _prefix_hits(pool: VllmPool) -> tuple[float, float]:
    hits = queries = 0.0
    for backend in pool.workers.values():
        m = vllm_metrics(backend)
        hits += m.get("vllm:prefix_cache_hits_total", 0.0)
        queries += m.get("vllm:prefix_cache_queries_total", 0.0)
    return hits, queries


def test_affinity_shows_in_vllms_prefix_cache_hits(vpool: VllmPool) -> None:
    """The same workload (4 system prompts, each asked 4 questions, in turn) through the entry
    that routes by prefix affinity and through the one that routes at random, each with its
    own prompts: affinity sends each prompt to one replica, so vLLM's own counters show more
    of the prompt tokens served from its cache."""
    results = {}
    for name, node, offset in (("affinity", vpool.head, 0), ("random", vpool.head_random, 100)):
        before = _prefix_hits(vpool)
        served_by: dict[int, set[str]] = {}
        for q in range(4):
            for i in range(offset, offset + 4):
                raw = vpool.client(node).chat.completions.with_raw_response.create(
                    model=MODEL,
                    max_tokens=1,
                    messages=[
                        {"role": "system", "content": _system_prompt(i)},
                        *user(f"Question {q}: what is item {q} in set {i}?"),
                    ],
                )
                served_by.setdefault(i, set()).add(raw.headers["x-computing-node"])
        after = _prefix_hits(vpool)
        hits, queries = after[0] - before[0], after[1] - before[1]
        results[name] = {
            "hit_rate": round(hits / queries, 3) if queries else 0.0,
            "hit_tokens": hits,
            "query_tokens": queries,
            "replicas_per_prompt": sorted(len(s) for s in served_by.values()),
        }
    print(f"\nprefix cache through the pool: {json.dumps(results)}")
    path = REPO / ".bench" / "vllm-prefix-affinity.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")
    assert results["affinity"]["replicas_per_prompt"] == [1, 1, 1, 1]
    # 3 of 4 asks of a prompt find it cached; at random the replica often has not seen it.
    assert results["affinity"]["hit_rate"] > results["random"]["hit_rate"], results
