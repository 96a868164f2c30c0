"""Routes of the HTTP API; every node serves all of them.

OpenAI:   POST /v1/chat/completions, /v1/completions, /v1/embeddings (routed by ``model``),
          GET /v1/models (the pool's union).
Upstream: ANY /v1/service/<svc>/<path>, ANY /v1/p2p/<peer>/<path>, GET /v1/dnt/table,
          /v1/dnt/peers, /v1/dnt/bootstraps, /v1/dnt/stats, /v1/health.
Status:   GET / and /ui (the page, opentela/ui), GET /v1/status (its JSON, gateway/status.py).
Fleet:    GET /v1/fleet (desired vs running replicas per catalogued model; opentela/fleet).
Metrics:  GET /metrics (Prometheus), GET /metrics/targets (Prometheus http_sd; opentela/metrics).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog
from aiohttp import web

from ..fleet.runtime import Fleet
from ..metrics.endpoint import NodeMetrics
from ..metrics.requests import MODEL_KEY
from ..platform.labels import slurm_view
from ..routing.match import max_tier
from ..routing.plan import Target, models, plan
from ..routing.restrict import IDENTITY_GROUP_HEADER, SITE_HEADER, Restriction, parse
from ..table.store import Entry, Snapshot
from ..ui import add_ui_routes
from .admin import add_admin_routes, admin_check
from .auth import AuthGate
from .balancer import Balancer
from .errors import MAX_JSON_DEPTH, ApiError, json_depth_exceeds
from .forward import Forwarder
from .hold import HoldExpired, into_sink, wait_for_targets
from .platform import access_middleware, add_usage_routes
from .server import JsonErrorRunner, errors_middleware
from .status import RecentPerf, perf_listener, status_body
from .usage import UsageRecorder, forward_counted

log = structlog.get_logger("opentela.gateway")


@dataclass
class NodeView:
    """What the gateway may see of the node: read-only callables, no table writes."""

    peer_id: str
    version: str
    snapshot: Callable[[], Snapshot]
    addrs: Callable[[], list[str]]
    connected: Callable[[], list[str]]
    stats: Callable[[], dict[str, Any]]
    now: Callable[[], float]
    joined: Callable[[], bool]
    # When membership last heard from a peer, on the ``now`` clock (None: never / forgotten).
    last_heard: Callable[[str], float | None] = lambda _peer: None


def shape_problem(path: str, obj: dict[str, Any]) -> str | None:
    """The few checks worth doing at the edge: a request no backend could accept fails with a
    clear 400 here, instead of a backend-specific error (or crash) after a network hop."""
    if path.endswith("/chat/completions"):
        messages = obj.get("messages")
        if not isinstance(messages, list) or not messages:
            return "'messages' must be a non-empty list of message objects"
        if not all(isinstance(m, dict) and isinstance(m.get("role"), str) for m in messages):
            return "each message must be an object with a 'role'"
    elif path.endswith("/completions"):
        if "prompt" in obj and not isinstance(obj["prompt"], str | list):
            return "'prompt' must be a string or a list"
    elif path.endswith("/embeddings") and not isinstance(obj.get("input"), str | list):
        return "'input' must be a string or a list"
    if "stream" in obj and not isinstance(obj["stream"], bool):
        return "'stream' must be a boolean"
    return None


class Gateway:
    def __init__(
        self,
        node: NodeView,
        forwarder: Forwarder,
        balancer: Balancer,
        max_body_bytes: int,
        auth: AuthGate | None = None,
        usage: UsageRecorder | None = None,
        usage_store: Callable[[], Any] = lambda: None,
        metrics: NodeMetrics | None = None,
        fleet: Fleet | None = None,
    ) -> None:
        self.node = node
        self.metrics = metrics
        self.fleet = fleet  # models it catalogues are held while they start, not refused
        self.usage = usage  # None: calls are not counted
        self.usage_store = usage_store
        self.auth = auth if auth is not None else AuthGate("off", "open", lambda: None)
        self.fwd = forwarder
        self.balancer = balancer
        self.max_body = max_body_bytes
        self.recent = RecentPerf()  # the status page's TTFT and tokens/s, this node's traffic
        if usage is not None:
            usage.listeners.append(perf_listener(self.recent))
            if metrics is not None:
                usage.listeners.append(metrics.requests.observe)
        self._runner: web.AppRunner | None = None

    def app(self) -> web.Application:
        middlewares = [access_middleware, errors_middleware, self.auth.middleware]
        if self.metrics is not None:  # outermost: it counts what the client got
            middlewares.insert(0, self.metrics.requests.middleware)
        app = web.Application(middlewares=middlewares, client_max_size=self.max_body + 1)
        r = app.router
        for path in ("/v1/chat/completions", "/v1/completions", "/v1/embeddings"):
            r.add_post(path, self.openai)
        r.add_get("/v1/models", self.list_models)
        r.add_route("*", "/v1/service/{service}/{tail:.*}", self.service)
        r.add_route("*", "/v1/p2p/{peer}/{tail:.*}", self.p2p)
        r.add_get("/v1/dnt/table", self.table)
        r.add_get("/v1/dnt/peers", self.peers)
        r.add_get("/v1/dnt/bootstraps", self.bootstraps)
        r.add_get("/v1/dnt/stats", self.stats)
        r.add_get("/v1/health", self.health)
        r.add_get("/v1/health/ready", self.ready)
        add_usage_routes(app, self.usage_store, self.node.snapshot)
        add_admin_routes(app, self.usage_store, admin_check(self.auth.required))
        r.add_get("/v1/status", self.status)
        if self.fleet is not None:
            r.add_get("/v1/fleet", self.fleet_status)
        if self.metrics is not None:
            self.metrics.add_routes(app)
        add_ui_routes(app)
        return app

    def runner(self, **kwargs: Any) -> web.AppRunner:
        """The node's HTTP runner (``kwargs`` go to ``web.AppRunner``): errors of aiohttp's own
        parser are JSON too (server.py); no access log; a handler whose client left is
        cancelled."""
        kwargs.setdefault("access_log", None)
        kwargs.setdefault("handler_cancellation", True)
        return JsonErrorRunner(self.app(), **kwargs)

    async def serve(
        self, host: str, port: int, shutdown_timeout_s: float, reuse_port: bool = False
    ) -> None:
        """Listen (asyncio side). Handlers still running when ``close`` is called get
        ``shutdown_timeout_s``, then are cancelled: the node's stop is bounded as a whole.
        ``reuse_port``: the node's HTTP workers share the port (``--http-workers``)."""
        self._runner = self.runner(shutdown_timeout=shutdown_timeout_s)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, reuse_address=True, reuse_port=reuse_port)
        await site.start()

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # -- request helpers -------------------------------------------------------------------------

    async def _body(self, request: web.Request) -> bytes:
        if request.content_length is not None and request.content_length > self.max_body:
            raise ApiError(
                413,
                f"request body of {request.content_length} bytes exceeds the limit of {self.max_body}",
                "invalid_request_error",
                "request_too_large",
            )
        data = bytearray()
        async for chunk in request.content.iter_any():
            data += chunk
            if len(data) > self.max_body:
                raise ApiError(
                    413,
                    f"request body exceeds the limit of {self.max_body} bytes",
                    "invalid_request_error",
                    "request_too_large",
                )
        return bytes(data)

    @staticmethod
    def _json(body: bytes, required: bool) -> dict[str, Any] | None:
        if not body:
            if required:
                raise ApiError(
                    400,
                    "request body is empty; expected JSON",
                    "invalid_request_error",
                    "invalid_json",
                )
            return None
        if json_depth_exceeds(body):
            if required:
                raise ApiError(
                    400,
                    f"JSON body nests deeper than {MAX_JSON_DEPTH} levels",
                    "invalid_request_error",
                    "json_too_deep",
                )
            return None  # not ours to parse (maybe not JSON at all): forwarded as is
        try:
            obj = json.loads(body)
        except RecursionError as exc:  # the depth check makes this unreachable; never a 500
            if required:
                raise ApiError(
                    400, "JSON body nests too deeply", "invalid_request_error", "json_too_deep"
                ) from exc
            return None
        except ValueError as exc:
            if required:
                raise ApiError(
                    400, f"malformed JSON body: {exc}", "invalid_request_error", "invalid_json"
                ) from exc
            return None
        if not isinstance(obj, dict):
            if required:
                raise ApiError(
                    400, "JSON body must be an object", "invalid_request_error", "invalid_json"
                )
            return None
        return obj

    @staticmethod
    def _restriction(request: web.Request) -> Restriction:
        """The client's ``X-Otela-Identity-Group`` / ``X-Otela-Site`` (routing/restrict.py)."""
        try:
            return parse(
                request.headers.getall(IDENTITY_GROUP_HEADER, []),
                request.headers.get(SITE_HEADER),
            )
        except ValueError as exc:
            raise ApiError(400, str(exc), "invalid_request_error", "invalid_header") from exc

    @staticmethod
    def _routed_model(
        restrict: Restriction, obj: dict[str, Any] | None, body: bytes
    ) -> tuple[str | None, dict[str, Any] | None, bytes]:
        """The model a request is routed by: the body's ``model``, else the header's
        ``model=``; both, and different: 400. A JSON body without a model gets the header's
        written in, so the backend is asked for the model it was routed by."""
        named = obj.get("model") if obj else None
        named = named if isinstance(named, str) and named else None
        if restrict.model is None or named == restrict.model:
            return named, obj, body
        if named is not None:
            raise ApiError(
                400,
                f"the body names model {named!r} but {IDENTITY_GROUP_HEADER} names "
                f"model={restrict.model}",
                "invalid_request_error",
                "model_mismatch",
            )
        if obj is not None:
            obj = {**obj, "model": restrict.model}
            body = json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()
        return restrict.model, obj, body

    def _targets(
        self,
        model: str | None,
        service: str | None,
        request: web.Request,
        body: dict[str, Any] | None,
        restrict: Restriction | None = None,
    ) -> list[Target]:
        snap = self.node.snapshot()
        fallback = request.headers.get("X-Otela-Fallback")
        restrict = restrict if restrict is not None and not restrict.empty else None
        targets = plan(
            snap,
            model,
            service=service,
            allowed_tier=max_tier(fallback),
            rng=self.fwd.rng,
            restrict=restrict,
        )
        if targets:
            if model is not None:
                request[MODEL_KEY] = model  # a model of the table: a bounded label value
            return self.balancer.arrange(snap, targets, body, request.headers)
        where = f" with {restrict.describe()}" if restrict is not None else ""
        known = any(
            (service is None or s.name == service)
            and (model is None or model in s.models)
            and (restrict is None or restrict.admits(s.identity_groups, e.record.labels))
            for e in snap.entries.values()
            for s in e.record.services
        )
        if known:
            if model is not None:
                request[MODEL_KEY] = model
            raise ApiError(
                503,
                f"no live replica serves {model or service!r}{where} right now",
                "service_unavailable",
                "no_live_replica",
                **{"Retry-After": "5"},
            )
        if not self.node.joined():
            # Restarted and not yet back in its pool: the model may well exist, so say
            # "retry" (clients and SDKs do) rather than "no such model".
            raise ApiError(
                503,
                "this node is still joining the pool; retry in a moment",
                "service_unavailable",
                "joining",
                **{"Retry-After": "1"},
            )
        available = sorted(models(snap))
        what = f"model {model!r}" if model else f"service {service!r}"
        raise ApiError(
            404,
            f"{what}{where} is not served by the pool; available models: "
            f"{', '.join(available) or 'none'}",
            "invalid_request_error",
            "model_not_found",
        )

    # -- OpenAI ------------------------------------------------------------------------------

    async def openai(self, request: web.Request) -> web.StreamResponse:
        body = await self._body(request)
        obj = self._json(body, required=True)
        assert obj is not None
        restrict = self._restriction(request)
        model, obj, body = self._routed_model(restrict, obj, body)
        if model is None:
            raise ApiError(
                400,
                f"the 'model' field is required (or {IDENTITY_GROUP_HEADER}: model=<id>)",
                "invalid_request_error",
                "missing_model",
            )
        assert obj is not None
        problem = shape_problem(request.path, obj)
        if problem:
            raise ApiError(400, problem, "invalid_request_error", "invalid_request")
        await self.auth.admit(request, model)
        try:
            targets = self._targets(model, None, request, obj, restrict)
        except ApiError as exc:
            if self.fleet is None or not self.fleet.catalogued(model):
                raise
            if exc.code not in ("model_not_found", "no_live_replica"):
                raise
            request[MODEL_KEY] = model  # catalogued: a bounded label value
            try:
                targets = await wait_for_targets(
                    request,
                    self.fleet,
                    model,
                    lambda: self._targets_or_none(model, request, obj, restrict),
                    obj.get("stream") is True,
                )
            except HoldExpired as expired:
                return expired.response
        resp = await forward_counted(
            self.fwd, self.usage, request, targets, request.path_qs, body, obj, model
        )
        return await into_sink(request, resp)

    def _targets_or_none(
        self,
        model: str,
        request: web.Request,
        obj: dict[str, Any] | None,
        restrict: Restriction | None,
    ) -> list[Target]:
        try:
            return self._targets(model, None, request, obj, restrict)
        except ApiError:
            return []

    async def list_models(self, request: web.Request) -> web.Response:
        """The pool's models; with a fleet, its catalogued models too, each with its
        ``state``: ``ready``, ``starting`` (a job is on its way), ``stopped`` or ``failing``
        (its last starts failed)."""
        pool = models(self.node.snapshot())
        data = [
            {
                "id": m,
                "object": "model",
                "created": 0,
                "owned_by": "opentela",
                "replicas": len(p),
                "state": "ready",
            }
            for m, p in sorted(pool.items())
        ]
        if self.fleet is not None:
            for spec in self.fleet.spec.models:
                if spec.id not in pool:
                    state = self.fleet.state(spec.id) or "stopped"
                    data.append(
                        {
                            "id": spec.id,
                            "object": "model",
                            "created": 0,
                            "owned_by": "opentela",
                            "replicas": 0,
                            "state": state,
                        }
                    )
        return web.json_response({"object": "list", "data": data})

    async def fleet_status(self, request: web.Request) -> web.Response:
        assert self.fleet is not None
        return web.json_response(self.fleet.status(), headers={"Cache-Control": "no-store"})

    # -- upstream-compatible -----------------------------------------------------------------

    async def service(self, request: web.Request) -> web.StreamResponse:
        body = await self._body(request)
        obj = self._json(body, required=False)
        restrict = self._restriction(request)
        model, obj, body = self._routed_model(restrict, obj, body)
        service = request.match_info["service"]
        await self.auth.admit(request, model)
        targets = self._targets(model, service, request, obj, restrict)
        return await forward_counted(
            self.fwd, self.usage, request, targets, self._tail(request), body, obj, model
        )

    async def p2p(self, request: web.Request) -> web.StreamResponse:
        body = await self._body(request)
        if self.auth.required:
            obj = self._json(body, required=False)
            model = obj.get("model") if obj else None
            await self.auth.admit(request, model if isinstance(model, str) and model else None)
        peer = request.match_info["peer"]
        entry = self.node.snapshot().entries.get(peer)
        if entry is None or not entry.routable:
            raise ApiError(
                404,
                f"peer {peer} is not a live member of the pool",
                "invalid_request_error",
                "peer_not_found",
            )
        ready = [s for s in entry.record.services if s.status == "ready"]
        if not ready:
            raise ApiError(
                503,
                f"peer {peer} serves nothing right now",
                "service_unavailable",
                "no_live_replica",
                **{"Retry-After": "5"},
            )
        return await self.fwd.forward(
            request, [Target(peer, ready[0].name, 1)], self._tail(request), body
        )

    @staticmethod
    def _tail(request: web.Request) -> str:
        """The path after ``/v1/p2p/<peer>`` or ``/v1/service/<svc>``, as the client sent it:
        ``match_info`` is percent-decoded (``%2e%2e`` -> ``..``, ``%2F`` -> ``/``), which
        would change what the backend sees; the worker checks the raw form (httppaths)."""
        raw = request.rel_url
        parts = raw.raw_path.split("/", 4)  # "", "v1", "p2p"|"service", <peer|svc>, tail
        tail = "/" + (parts[4] if len(parts) > 4 else "")
        return tail + (f"?{raw.raw_query_string}" if raw.raw_query_string else "")

    # -- introspection -----------------------------------------------------------------------

    async def table(self, request: web.Request) -> web.Response:
        snap = self.node.snapshot()
        now_wall, now_mono = time.time(), self.node.now()
        out: dict[str, Any] = {}
        for pid, e in snap.entries.items():
            r = e.record
            out[f"/{pid}"] = {
                "id": pid,
                "role": r.role,
                "status": r.status,
                "state": e.state,
                "self": pid == snap.self_id,
                "connected": e.alive,
                "version": r.version,
                "load": snap.load(pid)[1],
                "load_version": snap.load(pid)[0],
                "software": r.software,
                "service": [
                    {
                        "name": s.name,
                        "status": s.status,
                        "host": "",
                        "port": 0,
                        "identity_group": list(s.identity_groups),
                    }
                    for s in r.services
                ],
                "hardware": {
                    "gpus": [
                        {
                            "name": g.name,
                            "total_memory": g.total_memory_mib,
                            "used_memory": g.used_memory_mib,
                        }
                        for g in r.gpus
                    ]
                },
                "last_seen": int(now_wall - max(0.0, now_mono - self._last_evidence(pid, e)))
                if pid != snap.self_id
                else int(now_wall),
                "public_address": r.addrs[0] if r.addrs else "",
                "addrs": list(r.addrs),
                "http_address": r.http_addr,
                "labels": dict(sorted(r.labels.items())),
                "reachability": r.reachability,
                "relays": list(r.relays),
                # The Slurm facts under their names from before labels, for existing readers.
                "slurm": slurm_view(r.labels),
            }
        return web.json_response(out)

    def _last_evidence(self, pid: str, e: Entry) -> float:
        """The latest sign of life from ``pid``: membership hearing from it (every probe round,
        so a healthy peer reads as seconds ago), or a new record from it (a peer membership
        has not reached yet)."""
        heard = self.node.last_heard(pid)
        return e.last_seen_s if heard is None else max(heard, e.last_seen_s)

    async def status(self, request: web.Request) -> web.Response:
        """The status page's JSON (gateway/status.py)."""
        snap = self.node.snapshot()
        now_wall, now_mono = time.time(), self.node.now()
        ages = {
            pid: max(0.0, now_mono - self._last_evidence(pid, e))
            for pid, e in snap.entries.items()
            if pid != snap.self_id
        }
        own = snap.entries.get(snap.self_id)
        node = {
            "peer_id": self.node.peer_id,
            "version": self.node.version,
            "role": own.record.role if own is not None else None,
        }
        body = status_body(
            snap, now_wall, ages, self.recent.summary(now_wall), node, self.recent.window_s
        )
        return web.json_response(body, headers={"Cache-Control": "no-store"})

    async def peers(self, request: web.Request) -> web.Response:
        snap = self.node.snapshot()
        connected = set(self.node.connected())
        data = [
            {
                "id": pid,
                "addrs": list(e.record.addrs),
                "alive": e.alive,
                "connected": pid in connected,
            }
            for pid, e in snap.entries.items()
            if pid != snap.self_id
        ]
        return web.json_response({"peers": data})

    async def bootstraps(self, request: web.Request) -> web.Response:
        snap = self.node.snapshot()
        addrs = list(self.node.addrs())
        for pid, e in snap.entries.items():
            if pid != snap.self_id and e.alive:
                addrs.extend(a if "/p2p/" in a else f"{a}/p2p/{pid}" for a in e.record.addrs)
        return web.json_response({"bootstraps": addrs})

    async def stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.node.stats())

    async def ready(self, request: web.Request) -> web.Response:
        """Readiness (e.g. for Kubernetes): joined the overlay, holds a table, not draining
        (a stopping node fails readiness so load balancers send new clients elsewhere)."""
        snap = self.node.snapshot()
        own = snap.entries.get(snap.self_id)
        ok = self.node.joined() and own is not None and own.record.status == "ready"
        return web.json_response(
            {"ready": ok, "peers": sum(1 for e in snap.entries.values() if e.alive) - 1},
            status=200 if ok else 503,
        )

    async def health(self, request: web.Request) -> web.Response:
        snap = self.node.snapshot()
        peers = sum(1 for pid, e in snap.entries.items() if pid != snap.self_id and e.alive)
        return web.json_response(
            {
                "status": "ok",
                "peer_id": self.node.peer_id,
                "addrs": self.node.addrs(),
                "peers": peers,
                "version": self.node.version,
            }
        )
