"""Endpoints for the platform around the pool (what SwissAI's separate gateway serves today):
``/v1/usage``, ``/v1/statistics``, ``/v1/models_detailed``; and the access log.

The caller's identity is the ``KeyInfo`` the auth middleware put in ``request["otela.key"]``
(None with ``--auth off``). Store reads run in a thread: the gateway is asyncio-side.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import structlog
from aiohttp import web

from ..platform.labels import is_follower
from ..table.store import Entry, Snapshot
from .errors import ApiError
from .usage import ANONYMOUS_OWNER

log = structlog.get_logger("opentela.access")

MAX_DAYS = 366
_NO_STORE = object()
_LOOPBACK = ("127.", "::1", "::ffff:127.")


def _days(request: web.Request) -> int:
    raw = request.query.get("days", "30")
    try:
        days = int(raw)
    except ValueError:
        days = 0
    if not 1 <= days <= MAX_DAYS:
        raise ApiError(
            400,
            f"'days' must be an integer between 1 and {MAX_DAYS}, not {raw!r}",
            "invalid_request_error",
            "invalid_days",
        )
    return days


def _loopback(request: web.Request) -> bool:
    return (request.remote or "").startswith(_LOOPBACK)


def usage_scope(request: web.Request) -> tuple[str | None, str | None]:
    """(owner, key_id) filter of ``/v1/usage``: a key sees its owner's usage; an admin key (or,
    with auth off, a loopback caller) may ask for any ``owner=``; anyone else with auth off
    sees the anonymous usage only. Never another owner's rows otherwise."""
    key = request.get("otela.key")
    asked = request.query.get("owner")
    if key is None:
        if asked and not _loopback(request):
            raise _forbidden()
        return asked or ANONYMOUS_OWNER, None
    if asked and asked != key.owner:
        if not key.admin:
            raise _forbidden()
        return asked, None
    return key.owner, None


def _forbidden() -> ApiError:
    return ApiError(
        403,
        "only an admin key may read another owner's usage",
        "permission_error",
        "not_admin",
    )


def usage_body(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """serving-api's ``/v1/profile/usage`` shape: ``{"models": [...], "totals": {...}}``."""
    totals: dict[str, Any] = {
        "requests": 0,
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "total_tokens": 0,
        "last_active": None,
    }
    for r in rows:
        for k in ("requests", "prompt_tokens", "completion_tokens", "total_tokens"):
            totals[k] += int(r.get(k) or 0)
        la = r.get("last_active")
        if la is not None and (totals["last_active"] is None or la > totals["last_active"]):
            totals["last_active"] = la
    return {"models": rows, "totals": totals}


def device_label(gpus: Any) -> str:
    """GPUs grouped as ``"4x NVIDIA GH200 120GB"`` (several kinds joined by ``", "``)."""
    counts = Counter(g.name for g in gpus)
    return ", ".join(f"{n}x {name}" for name, n in counts.items())


def models_detailed(snap: Snapshot) -> list[dict[str, Any]]:
    """One entry per replica node and model (serving-api's shape), from the table alone: the
    record's labels say who launched it, where, until when and with which framework.

    A node whose backend is still loading has no models yet; it shows as ``pending`` under
    its ``served_model_name`` label when it has one. A follower of a multi-node replica
    advertises no service: it shows with ``has_service: false`` under its leader's models
    (same ``worker_group_id``) and its leader's status, so the replica reads as loading until
    the leader serves."""
    live = [(pid, e) for pid, e in sorted(snap.entries.items()) if e.alive]
    leaders = {
        e.record.labels["worker_group_id"]: e
        for _, e in live
        if e.record.labels.get("worker_group_id") and not is_follower(e.record.labels)
    }
    out: list[dict[str, Any]] = []
    for pid, entry in live:
        r = entry.record
        labels = r.labels
        base = {
            "object": "model",
            "peer_id": pid,
            "hostname": labels.get("hostname") or _host_of(r.http_addr),
            "otela_version": r.software.removeprefix("opentela/"),
            "labels": dict(sorted(labels.items())),
            "worker_group_id": labels.get("worker_group_id"),
            "launched_by": labels.get("launched_by"),
            "slurm_job_id": labels.get("slurm_job_id"),
            "framework": labels.get("framework"),
            "started_at": _int_or_none(labels.get("started_at")),
            "expires_at": _int_or_none(labels.get("expires_at")),
            "device": device_label(r.gpus),
        }
        if is_follower(labels):
            leader = leaders.get(labels.get("worker_group_id", ""))
            found = (_served(leader) if leader is not None else {}) or _named(labels, None)
        else:  # a backend still loading has no models yet: its served_model_name label
            found = _served(entry) or (_named(labels, r.services[0].name) if r.services else {})
        has_service = not is_follower(labels)
        out.extend(
            {
                "id": m,
                "has_service": has_service,
                "service": svc if has_service else None,
                "status": st,
                **base,
            }
            for m, (svc, st) in found.items()
        )
    return out


Served = dict[str, tuple[str | None, str]]
"""model → (service name, ``ready`` or ``pending``)."""


def _served(entry: Entry) -> Served:
    """What ``entry`` advertises; a model ready in any of its services is ready."""
    out: Served = {}
    for s in entry.record.services:
        for m in s.models:
            ready = s.status == "ready" and entry.routable
            if m not in out or ready:
                out[m] = (s.name, "ready" if ready else "pending")
    return out


def _named(labels: Mapping[str, str], service: str | None) -> Served:
    """A loading node's model, as its ``served_model_name`` label names it: pending."""
    name = labels.get("served_model_name")
    return {name: (service, "pending")} if name else {}


def _host_of(url: str) -> str:
    host = url.split("://", 1)[-1].rsplit(":", 1)[0]
    return host.strip("[]")


def _int_or_none(v: str | None) -> int | None:
    try:
        return int(float(v)) if v else None
    except ValueError:
        return None


def add_usage_routes(
    app: web.Application,
    store: Callable[[], Any],
    snapshot: Callable[[], Snapshot],
    clock: Callable[[], float] = time.time,
) -> None:
    """``store()`` returns the Store (or None: no usage store, the usage endpoints answer 503);
    ``/v1/models_detailed`` needs only the table."""

    def call(fn: Callable[[Any], Any]) -> Any:
        s = store()  # in the thread: the first call may open the store
        return _NO_STORE if s is None else fn(s)

    async def read(fn: Callable[[Any], Any]) -> Any:
        try:
            got = await asyncio.get_running_loop().run_in_executor(None, call, fn)
        except Exception as exc:  # the database is down or unreadable: say so, no traceback
            log.warning("usage.read_failed", error=str(exc)[:300])
            raise ApiError(
                503, "the usage store is unavailable", "service_unavailable", "store_unavailable"
            ) from exc
        if got is _NO_STORE:
            raise ApiError(503, "usage accounting has no store", "service_unavailable", "no_store")
        return got

    async def usage(request: web.Request) -> web.Response:
        days = _days(request)
        owner, key_id = usage_scope(request)
        now = clock()
        rows = await read(lambda s: s.usage_by_model(days, now, owner=owner, key_id=key_id))
        return web.json_response({"owner": owner, "days": days, **usage_body(rows)})

    async def statistics(request: web.Request) -> web.Response:
        days = _days(request)
        now = clock()
        rows = await read(lambda s: s.statistics(days, now))
        return web.json_response({"object": "list", "days": days, "data": rows})

    async def detailed(request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": models_detailed(snapshot())})

    app.router.add_get("/v1/usage", usage)
    app.router.add_get("/v1/statistics", statistics)
    app.router.add_get("/v1/models_detailed", detailed)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def access_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """One ``access`` line per request (health probes excepted): never the prompt or the key.
    Outermost, so the status is what the client got (errors already made responses)."""
    started = time.perf_counter()
    rid = request.headers.get("X-Request-Id", "")[:64] or uuid.uuid4().hex[:16]
    request["otela.request_id"] = rid
    status = 499  # the handler was cancelled: the client went away
    try:
        resp = await handler(request)
        status = resp.status
        return resp
    except web.HTTPException as exc:
        status = exc.status
        raise
    except Exception:
        status = 500
        raise
    finally:
        if not request.path.startswith("/v1/health"):
            _log_access(request, rid, status, started)


def _log_access(request: web.Request, rid: str, status: int, started: float) -> None:
    key = request.get("otela.key")
    obs = request.get("otela.usage")
    row = obs.row if obs is not None else None
    log.info(
        "access",
        request_id=rid,
        method=request.method,
        path=request.path,
        key_id=getattr(key, "id", "-"),
        owner=getattr(key, "owner", ANONYMOUS_OWNER),
        model=obs.model if obs is not None else None,
        peer=obs.peer if obs is not None else None,
        status=status,
        ttft_s=round(obs.first_byte - started, 4)
        if obs is not None and obs.first_byte is not None
        else None,
        duration_s=round(time.perf_counter() - started, 4),
        prompt_tokens=row.prompt_tokens if row is not None else None,
        completion_tokens=row.completion_tokens if row is not None else None,
        estimated=bool(row.estimated) if row is not None else None,
        retries=obs.retries if obs is not None else 0,
    )
