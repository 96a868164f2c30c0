"""The admin HTTP API for API keys: the CLI's ``keys`` commands over HTTP (issue 11).

``GET/POST /v1/admin/keys``, ``GET/DELETE /v1/admin/keys/{id}``, ``POST
/v1/admin/keys/{id}/rotate``. It answers a request that carries an admin key (the auth
middleware puts the caller's ``KeyInfo`` in ``request["otela.key"]``), or one from loopback
while auth is off (the operator on the head's own machine); anything else is a 403 before the
store is touched. The handlers run on the asyncio side; the store is synchronous, so every call
goes to a worker thread (``run_in_executor``) and never blocks the event loop.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
from collections.abc import Callable
from functools import partial
from typing import Any

from aiohttp import web

from .errors import error_body

KEY_SLOT = "otela.key"
"""Where the auth middleware leaves the caller's ``KeyInfo`` (absent: no key was sent)."""

MAX_BODY = 64 * 1024

IsAdmin = Callable[[web.Request], bool]
StoreGetter = Callable[[], Any]


def is_loopback(remote: str | None) -> bool:
    if not remote:
        return False
    try:
        addr = ipaddress.ip_address(remote.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.is_loopback


def admin_check(auth_required: bool) -> IsAdmin:
    """The rule: a loopback peer while auth is off, or an admin key that is not revoked.
    (``request.remote`` is the TCP peer: a forwarded-for header cannot claim loopback.)"""

    def is_admin(request: web.Request) -> bool:
        if not auth_required and is_loopback(request.remote):
            return True
        key = request.get(KEY_SLOT)
        return (
            key is not None
            and bool(getattr(key, "admin", False))
            and getattr(key, "revoked_at", 1) is None
        )

    return is_admin


def _error(status: int, message: str, type_: str, code: str) -> web.Response:
    return web.json_response(error_body(message, type_, code), status=status)


def _forbidden() -> web.Response:
    return _error(
        403,
        "the admin API needs an admin key (keys create --admin), or a request from this "
        "machine while --auth is off",
        "permission_error",
        "admin_required",
    )


def _bad(message: str) -> web.Response:
    return _error(400, message, "invalid_request_error", "invalid_request")


def _key_json(info: Any, secret: str | None = None) -> dict[str, Any]:
    d = {"object": "api_key", **info.to_json()}
    if secret is not None:
        d["key"] = secret  # shown once, in the answer that created it
    return d


CREATE_FIELDS = ("owner", "models", "rpm", "tpm", "budget_tokens", "budget_period", "admin")


def parse_create(body: Any) -> dict[str, Any]:
    """The keyword arguments of ``Store.create_key`` from a POST body. Raises ValueError with
    a message fit for the client; the store checks the values themselves."""
    if not isinstance(body, dict):
        raise ValueError("the body must be a JSON object")
    unknown = sorted(set(body) - set(CREATE_FIELDS))
    if unknown:
        raise ValueError(
            f"unknown field(s) {', '.join(unknown)}; known: {', '.join(CREATE_FIELDS)}"
        )
    owner = body.get("owner")
    if not isinstance(owner, str):
        raise ValueError("owner is required: a string such as alice@ethz.ch")
    models = body.get("models", [])
    if isinstance(models, str):
        models = [models]
    if not isinstance(models, list) or not all(isinstance(m, str) for m in models):
        raise ValueError("models must be a list of glob patterns (strings)")
    admin = body.get("admin", False)
    if not isinstance(admin, bool):
        raise ValueError("admin must be true or false")
    out = {"owner": owner, "models": models, "admin": admin}
    for f in ("rpm", "tpm", "budget_tokens", "budget_period"):
        out[f] = body.get(f)
    return out


def add_admin_routes(
    app: web.Application, store_getter: StoreGetter, is_admin: IsAdmin | None = None
) -> None:
    """Register the admin routes on ``app``. ``store_getter()`` returns the node's Store (None:
    no store, 503); ``is_admin`` decides who may call (default: :func:`admin_check` with auth
    off)."""
    allowed = is_admin or admin_check(auth_required=False)

    async def call(fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(None, partial(fn, *args, **kw))

    def guarded(handler: Callable[[web.Request, Any], Any]) -> Any:
        async def wrapper(request: web.Request) -> web.StreamResponse:
            if not allowed(request):
                return _forbidden()
            store = store_getter()
            if store is None:
                return _error(503, "this node has no store", "server_error", "store_unavailable")
            from ..store import KeyRevoked, StoreError, UnknownKey

            try:
                return await handler(request, store)
            except UnknownKey as exc:
                return _error(404, str(exc), "invalid_request_error", "key_not_found")
            except KeyRevoked as exc:
                return _error(409, str(exc), "invalid_request_error", "key_revoked")
            except ValueError as exc:
                return _bad(str(exc))
            except StoreError as exc:
                return _error(503, str(exc), "server_error", "store_unavailable")

        return wrapper

    async def list_keys(request: web.Request, store: Any) -> web.Response:
        infos = await call(store.list_keys)
        return web.json_response({"object": "list", "data": [_key_json(k) for k in infos]})

    async def create_key(request: web.Request, store: Any) -> web.Response:
        raw = await request.content.read(MAX_BODY + 1)
        if len(raw) > MAX_BODY:
            return _error(413, "the body is too large", "invalid_request_error", "body_too_large")
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            return _bad("the body is not valid JSON")
        secret, info = await call(store.create_key, **parse_create(body))
        return web.json_response(_key_json(info, secret), status=201)

    async def get_key(request: web.Request, store: Any) -> web.Response:
        return web.json_response(_key_json(await call(store.get_key, request.match_info["id"])))

    async def revoke_key(request: web.Request, store: Any) -> web.Response:
        info = await call(store.revoke_key, request.match_info["id"])
        return web.json_response(_key_json(info))

    async def rotate_key(request: web.Request, store: Any) -> web.Response:
        secret, info = await call(store.rotate_key, request.match_info["id"])
        return web.json_response(_key_json(info, secret), status=201)

    app.router.add_get("/v1/admin/keys", guarded(list_keys))
    app.router.add_post("/v1/admin/keys", guarded(create_key))
    app.router.add_get("/v1/admin/keys/{id}", guarded(get_key))
    app.router.add_delete("/v1/admin/keys/{id}", guarded(revoke_key))
    app.router.add_post("/v1/admin/keys/{id}/rotate", guarded(rotate_key))
