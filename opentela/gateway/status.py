"""The status page's JSON (``GET /v1/status``): the pool at a glance, per model and per node.

Pure: :func:`status_body` builds the answer from a table snapshot, the wall clock ``now``, each
peer's age (seconds since this node last heard of it) and this node's recent performance
window; the handler in ``app.py`` gathers those and nothing here reads a clock or a socket.

A *replica* is what serves one copy of a model: a single node, or the nodes of a multi-node
Slurm job that share a ``worker_group_id`` (only the leader advertises the model; followers
show under it, ``models_detailed`` in ``platform.py`` decides which entries belong where). It
counts once however many nodes it spans, and it is ``ready`` when its leader serves the model,
else ``pending`` (loading, or a follower whose leader is not up yet).

The recent TTFT and tokens/s are what *this* node measured on the requests it forwarded
(:class:`RecentPerf`, fed by ``UsageRecorder``'s listeners when each request ends): the node
you ask sees only its own traffic, and says so with ``perf_scope: "this node"``. A bounded
window in memory (``WINDOW_S``, ``MAX_SAMPLES`` per model, ``MAX_MODELS``): nothing grows with
traffic, nothing is written anywhere.
"""

from __future__ import annotations

import time
from collections import Counter, OrderedDict, deque
from collections.abc import Mapping
from dataclasses import dataclass
from statistics import median
from typing import Any

from ..table.store import Snapshot
from .platform import device_label, models_detailed

WINDOW_S = 300.0
"""How far back the recent TTFT / tokens/s reach (seconds)."""
MAX_SAMPLES = 512
"""Finished requests kept per model: the median of a full window costs well under 1 ms."""
MAX_MODELS = 256
"""Models with samples kept; the one least recently used goes first."""
REFRESH_S = 5
"""How often the page asks again (seconds), told to it in the answer."""

TIMES = " \u00d7 "
"""Between the counts of a topology, as SwissAI's page writes it (a multiplication sign)."""
SLURM = "slurm"
ALWAYS_ON = "always-on"


# -- the recent performance window ----------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    """One finished request: when it ended (wall clock), its time to first token (streams
    only: a non-streamed answer's first byte is its last) and its generation speed."""

    at: float
    ttft_s: float | None
    tokens_per_s: float | None


def sample_of(obs: Any, end_s: float, at: float) -> Sample | None:
    """The sample of a finished request's ``UsageObserver`` (``end_s``: ``perf_counter()`` at
    the end, the observer's clock; ``at``: wall clock), or None for a request that failed,
    was cut short or carried no generated tokens. Streams: TTFT from the observer's start to
    the first body byte, speed from ``decode_rate`` (the replica's per-token pace). Not
    streamed: no TTFT, speed = completion tokens over the whole request."""
    status, row = obs.status, obs.row
    if status is None or status >= 400 or not obs.complete or row is None or row.errors:
        return None
    started, first = obs.started, obs.first_byte
    if obs.sse is not None:
        ttft = first - started if first is not None else None
        rate = obs.decode_rate()
    else:
        ttft = None
        span = end_s - started
        rate = row.completion_tokens / span if span > 0 and row.completion_tokens else None
    if ttft is None and rate is None:
        return None
    return Sample(at, ttft if ttft is None or ttft >= 0 else None, rate)


@dataclass(frozen=True)
class Perf:
    """A model's recent figures (None: no request in the window measured it)."""

    requests: int
    ttft_p50_s: float | None
    tokens_per_s: float | None


class RecentPerf:
    """Recent samples per model, bounded in age, count and number of models. Callers pass
    the wall clock; asyncio-side only (no lock)."""

    def __init__(
        self,
        window_s: float = WINDOW_S,
        max_samples: int = MAX_SAMPLES,
        max_models: int = MAX_MODELS,
    ) -> None:
        self.window_s = window_s
        self.max_samples = max_samples
        self.max_models = max_models
        self._by_model: OrderedDict[str, deque[Sample]] = OrderedDict()

    def add(self, model: str, sample: Sample) -> None:
        q = self._by_model.get(model)
        if q is None:
            if len(self._by_model) >= self.max_models:
                self._by_model.popitem(last=False)
            q = self._by_model[model] = deque(maxlen=self.max_samples)
        else:
            self._by_model.move_to_end(model)
        q.append(sample)

    def summary(self, now: float) -> dict[str, Perf]:
        """model → its figures over the samples of the last ``window_s`` (older ones are
        dropped here)."""
        out: dict[str, Perf] = {}
        for model, q in list(self._by_model.items()):
            while q and q[0].at < now - self.window_s:
                q.popleft()
            if not q:
                del self._by_model[model]
                continue
            ttfts = [s.ttft_s for s in q if s.ttft_s is not None]
            rates = [s.tokens_per_s for s in q if s.tokens_per_s is not None]
            out[model] = Perf(
                len(q), median(ttfts) if ttfts else None, median(rates) if rates else None
            )
        return out


def perf_listener(perf: RecentPerf, clock: Any = time.time) -> Any:
    """A ``UsageRecorder`` listener feeding ``perf`` when a counted request ends."""

    def listen(obs: Any) -> None:
        sample = sample_of(obs, time.perf_counter(), clock())
        if sample is not None:
            perf.add(obs.model, sample)

    return listen


# -- the answer -----------------------------------------------------------------------------------


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def topology(replicas: list[dict[str, Any]]) -> str:
    """``"2 replicas × 4x NVIDIA GH200 120GB"`` (× being :data:`TIMES`); multi-node replicas
    as ``"1 replica × 4 nodes × 4x NVIDIA GH200 120GB"``; replicas of different shapes joined
    by ``" + "``; a replica whose nodes report no GPU as ``"no GPU"``."""  # noqa: RUF002
    shapes = Counter((r["nodes"], r["device"] or "no GPU") for r in replicas)
    parts = []
    for (nodes, device), n in sorted(shapes.items(), key=lambda kv: (-kv[1], kv[0])):
        per = f"{_plural(nodes, 'node')}{TIMES}{device}" if nodes > 1 else device
        parts.append(f"{_plural(n, 'replica')}{TIMES}{per}")
    return " + ".join(parts)


def _kind(labels: Mapping[str, Any]) -> str:
    return SLURM if labels.get("slurm_job_id") else ALWAYS_ON


def _replicas(snap: Snapshot, now: float) -> dict[str, list[dict[str, Any]]]:
    """model → its replicas (a worker group counts once), from ``models_detailed``."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for d in models_detailed(snap):
        key = d["worker_group_id"] or d["peer_id"]
        groups.setdefault((d["id"], key), []).append(d)
    out: dict[str, list[dict[str, Any]]] = {}
    for (model, key), members in sorted(groups.items()):
        leaders = [d for d in members if d["has_service"]]
        lead = leaders[0] if leaders else members[0]
        labels = lead["labels"]
        expires = lead["expires_at"]
        out.setdefault(model, []).append(
            {
                "group": key,
                "peers": [d["peer_id"] for d in members],
                "leader": lead["peer_id"] if leaders else None,
                "nodes": len(members),
                "state": "ready" if any(d["status"] == "ready" for d in leaders) else "pending",
                "site": labels.get("site"),
                "kind": _kind(labels),
                "device": lead["device"],
                "hostname": lead["hostname"],
                "framework": lead["framework"],
                "slurm_job_id": lead["slurm_job_id"],
                "started_at": lead["started_at"],
                "expires_at": expires,
                "expires_in_s": max(0, int(expires - now)) if expires is not None else None,
                "load": snap.load(lead["peer_id"])[1] if leaders else None,
            }
        )
    return out


def _model(model: str, reps: list[dict[str, Any]], perf: Perf | None) -> dict[str, Any]:
    ready = [r for r in reps if r["state"] == "ready"]
    sites = sorted({r["site"] for r in reps if r["site"]})
    jobs = sorted({r["slurm_job_id"] for r in reps if r["slurm_job_id"]})
    ends = [r["expires_at"] for r in reps if r["expires_at"] is not None]
    loads = [r["load"] for r in ready if r["load"] is not None]
    soonest = min(ends) if ends else None
    return {
        "id": model,
        "state": "ready" if ready else "pending",
        "replicas": len(reps),
        "ready_replicas": len(ready),
        "topology": topology(reps),
        "sites": sites,
        "kinds": sorted({r["kind"] for r in reps}),
        "slurm_jobs": jobs,
        # The soonest end: when the first replica goes (each replica has its own below).
        "expires_at": soonest,
        "expires_in_s": min(r["expires_in_s"] for r in reps if r["expires_at"] == soonest)
        if soonest is not None
        else None,
        "load": sum(loads) if loads else None,
        "requests_recent": perf.requests if perf is not None else 0,
        "ttft_p50_s": _round(perf.ttft_p50_s) if perf is not None else None,
        "tokens_per_s": _round(perf.tokens_per_s, 1) if perf is not None else None,
        "replica_list": reps,
    }


def _round(v: float | None, digits: int = 4) -> float | None:
    return None if v is None else round(v, digits)


def _node(snap: Snapshot, pid: str, ages: Mapping[str, float], now: float) -> dict[str, Any]:
    e = snap.entries[pid]
    r = e.record
    live = e.state in ("alive", "suspect")
    labels = r.labels
    expires = labels.get("expires_at")
    try:
        end = int(float(expires)) if expires else None
    except ValueError:
        end = None
    age = ages.get(pid)
    return {
        "peer_id": pid,
        "self": pid == snap.self_id,
        "role": r.role,
        "group_role": labels.get("worker_group_role"),
        "state": "left" if r.status == "left" else e.state,
        "status": labels.get("status") or r.status,
        "site": labels.get("site"),
        "kind": _kind(labels),
        "hostname": labels.get("hostname"),
        "gpus": device_label(r.gpus) or None,
        "gpu_count": len(r.gpus),
        # What a departed node last advertised is not in the pool: no load, no models.
        "load": snap.load(pid)[1] if live else None,
        "models": sorted(r.models) if live else [],
        "slurm_job_id": labels.get("slurm_job_id"),
        "expires_at": end,
        "expires_in_s": max(0, int(end - now)) if end is not None else None,
        "last_seen_s": 0 if pid == snap.self_id else (round(age, 1) if age is not None else None),
        "version": r.software.removeprefix("opentela/") or None,
    }


STATE_ORDER = {"alive": 0, "suspect": 1, "dead": 2, "left": 3}


def status_body(
    snap: Snapshot,
    now: float,
    ages: Mapping[str, float],
    perf: Mapping[str, Perf],
    node: Mapping[str, Any],
    window_s: float = WINDOW_S,
) -> dict[str, Any]:
    """The ``/v1/status`` answer. ``now``: wall-clock seconds (``expires_at`` is one);
    ``ages``: peer → seconds since this node last heard of it; ``perf``: this node's recent
    figures per model (:meth:`RecentPerf.summary`); ``node``: who answers (peer ID,
    version, role). Every field a page shows is present; None means unknown."""
    reps = _replicas(snap, now)
    models = [_model(m, rs, perf.get(m)) for m, rs in sorted(reps.items())]
    nodes = [_node(snap, pid, ages, now) for pid in snap.entries]
    nodes.sort(key=lambda n: (STATE_ORDER.get(n["state"], 9), n["role"], n["peer_id"]))
    sites = sorted({n["site"] for n in nodes if n["site"]})
    live = [n for n in nodes if n["state"] in ("alive", "suspect")]
    return {
        "object": "status",
        "generated_at": round(now, 3),
        "refresh_s": REFRESH_S,
        "node": dict(node),
        "perf_scope": "this node",
        "perf_window_s": window_s,
        "sites": sites,
        "totals": {
            "models": len(models),
            "ready_models": sum(1 for m in models if m["state"] == "ready"),
            "nodes": len(live),
            "gpus": sum(n["gpu_count"] for n in live),
        },
        "models": models,
        "nodes": nodes,
    }
