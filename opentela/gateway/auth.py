"""``AuthGate``: API keys and their limits, enforced at the entry node before anything is
forwarded (issue 11; the arithmetic is ``access/quota.py``, the keys live in the store).

Two steps, because the model is in the body and only the handlers parse it:

1. the middleware (every request): with ``--auth required`` every route but ``/v1/health*``
   (and ``GET /v1/models``, ``/v1/status`` and ``/metrics*`` with ``--auth-models open``, and the status
   page's static files always) needs a key; an absent, unknown or
   revoked key is a 401 ``invalid_api_key``. The key's ``KeyInfo`` goes into
   ``request["otela.key"]`` (None with ``--auth off``) for the handlers and the admin API;
2. ``admit(request, model)``, called by the forwarding handlers right before they forward:
   403 for a model outside the key's patterns, 429 for rpm/tpm/budget.

Why a short cache and not none: a database round trip per request would cost more than the
0.2 ms this gate may add. What a key is, and its window and budget, are fetched together in
one executor call at most every ``CACHE_S`` per key (unknown keys too, so a flood of bad keys
costs one lookup per key text per ``CACHE_S``); concurrent requests of one key share the
fetch. ``CACHE_S`` < 1 s, so a key revoked on any entry node sharing the database is refused
everywhere within 1 s. Between fetches the window is the fetched one plus what this node
admitted since, plus the usage writer's unflushed counts: the overshoot bound is in
docs/frontend.md.

The key is read from ``Authorization: Bearer sk-...`` (OpenAI's SDKs) or ``X-Api-Key``
(Anthropic-style clients). Azure's ``api-key`` header is not accepted: the forwarder does not
strip it, and a key must never reach a backend.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog
from aiohttp import web

from ..access import quota
from ..ui import is_page
from .errors import ApiError

log = structlog.get_logger("opentela.auth")

CACHE_S = 0.5
"""Longest a key's lookup (valid, revoked or unknown), window and budget are reused."""
TOUCH_S = 5.0
"""``last_used_at`` is written at most this often (batched over every key used)."""
MODES = ("off", "required")
MODELS_MODES = ("open", "key")
KEY_ATTR = "otela.key"
MAX_KEY_CHARS = 200

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class KeyStore(Protocol):
    """The store methods the gate uses (``opentela.store.Store``); synchronous."""

    def lookup_key(self, text: str) -> Any: ...
    def window_usage(self, key_id: str, now: float) -> tuple[int, int]: ...
    def budget_used(self, key_id: str, since: float) -> int: ...
    def touch_keys(self, last_used: dict[str, float]) -> None: ...


Pending = Callable[[str, float, float | None], tuple[float, float]]
"""The usage writer's not-yet-flushed (requests, tokens) of a key."""


@dataclass
class _Entry:
    key: Any  # KeyInfo | None (unknown)
    window: tuple[float, float]
    budget_used: int
    fetched_at: float
    admitted: int = 0  # requests this node admitted since the fetch
    period_start: float = 0.0
    # Requests that were nowhere in the database at the fetch: still running on this node, or
    # ended and waiting in the usage writer. Counted once each; see _fetch.
    local_requests: int = 0


@dataclass
class GateStats:
    lookups: int = 0
    refused: dict[int, int] = field(default_factory=dict)
    store_errors: int = 0


def key_text(request: web.Request) -> str | None:
    auth = request.headers.get("Authorization", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    other = request.headers.get("X-Api-Key", "").strip()
    return other or None


def _refuse(v: quota.Verdict) -> ApiError:
    return ApiError(v.status, v.message, v.type, v.code, **v.headers)


OPEN_WITH_MODELS = ("/v1/models", "/v1/status", "/v1/fleet", "/metrics", "/metrics/targets")


def _is_open(path: str, method: str, models_mode: str) -> bool:
    if path == "/v1/health" or path.startswith("/v1/health/"):
        return True
    if method not in ("GET", "HEAD"):
        return False
    if is_page(path):  # the status page's static files: nothing about the pool in them
        return True
    # The pool's status (models, replicas, nodes) and its metrics are as open as its model
    # list: they name nothing more than the models and the members serving them.
    return path in OPEN_WITH_MODELS and models_mode == "open"


class AuthGate:
    def __init__(
        self,
        mode: str,
        models_mode: str,
        store: Callable[[], KeyStore | None],
        pending: Pending | None = None,
        clock: Callable[[], float] = time.time,
        cache_s: float = CACHE_S,
    ) -> None:
        self.mode = mode
        self.models_mode = models_mode
        self._store = store
        self.pending = pending
        self._clock = clock
        self.cache_s = cache_s
        self._cache: dict[str, _Entry] = {}
        self._inflight: dict[str, asyncio.Future[_Entry]] = {}
        self._touched: dict[str, float] = {}
        self._running: dict[str, int] = {}  # admitted requests of a key not finished yet
        self._last_touch = 0.0
        self.stats = GateStats()

    @property
    def required(self) -> bool:
        return self.mode == "required"

    # -- step 1: the middleware -----------------------------------------------------------

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        request[KEY_ATTR] = None
        if not self.required:
            # The admin API and /v1/usage still honour a key presented with auth off.
            text = key_text(request)
            if (
                text
                and self._store() is not None
                and request.path.startswith(("/v1/admin/", "/v1/usage"))
            ):
                entry = await self._entry(text)
                if entry.key is not None and entry.key.revoked_at is None:
                    request[KEY_ATTR] = entry.key
            return await handler(request)
        if _is_open(request.path, request.method, self.models_mode):
            return await handler(request)
        text = key_text(request)
        if not text:
            raise self._count(_refuse(quota.invalid_key("no API key given")))
        if len(text) > MAX_KEY_CHARS or not text.startswith("sk-"):
            raise self._count(_refuse(quota.invalid_key("that is not an API key of this pool")))
        entry = await self._entry(text)
        if entry.key is None:
            raise self._count(_refuse(quota.invalid_key("unknown API key")))
        if entry.key.revoked_at is not None:
            raise self._count(_refuse(quota.invalid_key("this API key was revoked")))
        request[KEY_ATTR] = entry.key
        request["otela.key_text_hash"] = _hash(text)
        try:
            return await handler(request)
        finally:
            if request.get("otela.admitted"):
                left = self._running.get(entry.key.id, 1) - 1
                if left > 0:
                    self._running[entry.key.id] = left
                else:
                    self._running.pop(entry.key.id, None)

    # -- step 2: right before forwarding ------------------------------------------------------

    async def admit(self, request: web.Request, model: str | None) -> None:
        """Raise the ApiError that refuses this request (403/429), or count it as admitted."""
        key = request.get(KEY_ATTR)
        if key is None or not self.required:
            return
        if model is not None and not key.allows_model(model):
            raise self._count(_refuse(quota.model_not_allowed(model, key.models)))
        if key.rpm is None and key.tpm is None and key.budget_tokens is None:
            self._touch(key.id)
            return
        h = request["otela.key_text_hash"]
        entry = self._cache.get(h)
        now = self._clock()
        if entry is None or now - entry.fetched_at > self.cache_s:
            entry = await self._refresh(request)
        # Rows this node stored after the cached read are not in that read's window.
        pend_t = self.pending(key.id, now, entry.fetched_at)[1] if self.pending else 0
        requests = entry.window[0] + entry.local_requests + entry.admitted
        tokens = entry.window[1] + pend_t
        budget = entry.budget_used + pend_t
        if quota.period_start(key.budget_period, now) != entry.period_start:
            budget = pend_t  # a new period began since the fetch
        verdict = quota.check(key, (requests, tokens), budget, now)
        if not verdict.ok:
            raise self._count(_refuse(verdict))
        entry.admitted += 1
        request["otela.admitted"] = True
        self._running[key.id] = self._running.get(key.id, 0) + 1
        self._touch(key.id)

    # -- the cache --------------------------------------------------------------------------

    async def _refresh(self, request: web.Request) -> _Entry:
        """A fresh fetch for an admitted request whose cached entry aged: the key may have
        been revoked meanwhile."""
        text = key_text(request)
        assert text is not None
        entry = await self._entry(text)
        if entry.key is None or entry.key.revoked_at is not None:
            raise self._count(_refuse(quota.invalid_key("this API key was revoked")))
        return entry

    async def _entry(self, text: str) -> _Entry:
        h = _hash(text)
        now = self._clock()
        entry = self._cache.get(h)
        if entry is not None and now - entry.fetched_at <= self.cache_s:
            return entry
        return await self._fetch(h, lambda: text, now)

    async def _fetch(self, h: str, text: Callable[[], str], now: float) -> _Entry:
        running = self._inflight.get(h)
        if running is not None:
            return await asyncio.shield(running)
        store = self._store()
        if store is None:
            raise ApiError(
                503, "this node has no key store open", "service_unavailable", "store_unavailable"
            )
        fut: asyncio.Future[_Entry] = asyncio.get_running_loop().create_future()
        self._inflight[h] = fut
        touched, self._touched = self._flush_touches(now)
        try:
            entry = await asyncio.get_running_loop().run_in_executor(
                None, _load, store, text(), now, touched
            )
        except Exception as exc:
            self._touched = {**touched, **self._touched}  # try again next time
            self.stats.store_errors += 1
            log.error("auth.store_failed", error=str(exc).splitlines()[0][:300] if str(exc) else "")
            err = ApiError(
                503,
                "the key store cannot be read right now; retry in a moment",
                "service_unavailable",
                "store_unavailable",
                **{"Retry-After": "1"},
            )
            fut.set_exception(err)
            fut.exception()  # retrieved: no "never retrieved" warning when nobody waits
            raise err from exc
        finally:
            self._inflight.pop(h, None)
        self.stats.lookups += 1
        if entry.key is not None:
            pend_r = self.pending(entry.key.id, now, None)[0] if self.pending else 0
            entry.local_requests = pend_r + self._running.get(entry.key.id, 0)
        if len(self._cache) > 100_000:
            self._prune(now)
        self._cache[h] = entry
        fut.set_result(entry)
        return entry

    def _prune(self, now: float) -> None:
        for k in [k for k, e in self._cache.items() if now - e.fetched_at > self.cache_s]:
            del self._cache[k]

    def _touch(self, key_id: str) -> None:
        self._touched[key_id] = self._clock()

    def _flush_touches(self, now: float) -> tuple[dict[str, float], dict[str, float]]:
        """(what to write with this fetch, what to keep): last-used times go out at most
        every ``TOUCH_S``, riding on a lookup that runs in the executor anyway."""
        if not self._touched or now - self._last_touch < TOUCH_S:
            return {}, self._touched
        self._last_touch = now
        return self._touched, {}

    def _count(self, err: ApiError) -> ApiError:
        self.stats.refused[err.status] = self.stats.refused.get(err.status, 0) + 1
        return err


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _load(store: KeyStore, text: str, now: float, touched: dict[str, float]) -> _Entry:
    """One executor trip: the key, its window and its budget (and pending last-used times)."""
    if touched:
        store.touch_keys(touched)
    key = store.lookup_key(text)
    if key is None or key.revoked_at is not None:
        return _Entry(key, (0, 0), 0, now)
    window: tuple[float, float] = (0, 0)
    if key.rpm is not None or key.tpm is not None:
        window = store.window_usage(key.id, now)
    used, start = 0, quota.period_start(key.budget_period, now)
    if key.budget_tokens is not None:
        used = store.budget_used(key.id, start)
    return _Entry(key, window, used, now, period_start=start)
