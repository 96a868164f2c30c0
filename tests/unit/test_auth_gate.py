"""AuthGate in an aiohttp app with a fake store: 401/403/429/503 codes, shapes, headers; the
short cache (revocation refused within 1 s). No pytest-asyncio: each test runs its own loop."""

from __future__ import annotations

import asyncio
import fnmatch
import hashlib
from dataclasses import dataclass, replace
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from opentela.gateway.auth import AuthGate
from opentela.gateway.server import errors_middleware

GOOD = "sk-otela-" + "A" * 32


@dataclass(frozen=True)
class Key:
    id: str = "key_00000001"
    prefix: str = GOOD[:13]
    owner: str = "alice@example.org"
    models: tuple[str, ...] = ()
    rpm: int | None = None
    tpm: int | None = None
    budget_tokens: int | None = None
    budget_period: str | None = None
    admin: bool = False
    revoked_at: float | None = None

    def allows_model(self, m: str) -> bool:
        return not self.models or any(fnmatch.fnmatchcase(m, p) for p in self.models)


class FakeStore:
    def __init__(self, key: Key) -> None:
        self.keys = {hashlib.sha256(GOOD.encode()).hexdigest(): key}
        self.window = (0, 0)
        self.used = 0
        self.lookups = 0
        self.fail = False
        self.touched: dict[str, float] = {}

    def lookup_key(self, text: str) -> Any:
        self.lookups += 1
        if self.fail:
            raise RuntimeError("database down\nDETAIL: x")
        return self.keys.get(hashlib.sha256(text.encode()).hexdigest())

    def window_usage(self, key_id: str, now: float) -> tuple[int, int]:
        return self.window

    def budget_used(self, key_id: str, since: float) -> int:
        return self.used

    def touch_keys(self, last_used: dict[str, float]) -> None:
        self.touched.update(last_used)


class Clock:
    t = 1_800_000_000.0

    def __call__(self) -> float:
        return self.t


def run(gate: AuthGate, scenario) -> None:
    async def chat(request: web.Request) -> web.Response:
        obj = await request.json()
        await gate.admit(request, obj.get("model"))
        return web.json_response({"ok": True})

    async def ok(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def main() -> None:
        app = web.Application(middlewares=[errors_middleware, gate.middleware])
        app.router.add_post("/v1/chat/completions", chat)
        app.router.add_get("/v1/health", ok)
        app.router.add_get("/v1/models", ok)
        app.router.add_get("/v1/dnt/table", ok)
        async with TestClient(TestServer(app)) as client:
            await scenario(client)

    asyncio.run(asyncio.wait_for(main(), 20))


def gate_for(store: FakeStore | None, clock: Clock, models_mode: str = "open", pending=None):
    return AuthGate("required", models_mode, lambda: store, pending=pending, clock=clock)


BODY = {"model": "swiss-ai/apertus", "messages": [{"role": "user", "content": "hi"}]}
AUTH = {"Authorization": f"Bearer {GOOD}"}


async def error_of(resp) -> dict:
    body = await resp.json()
    assert set(body["error"]) >= {"message", "type", "code"}
    return body["error"]


def test_missing_unknown_and_malformed_keys_are_401():
    store, clock = FakeStore(Key()), Clock()

    async def scenario(client):
        for headers in (
            {},
            {"Authorization": "Bearer sk-otela-nope"},
            {"Authorization": "Basic x"},
            {"Authorization": "Bearer not-a-key"},
        ):
            r = await client.post("/v1/chat/completions", json=BODY, headers=headers)
            assert r.status == 401, headers
            err = await error_of(r)
            assert err["code"] == "invalid_api_key" and err["type"] == "invalid_request_error"
        r = await client.post("/v1/chat/completions", json=BODY, headers=AUTH)
        assert r.status == 200
        r = await client.post("/v1/chat/completions", json=BODY, headers={"X-Api-Key": GOOD})
        assert r.status == 200

    run(gate_for(store, clock), scenario)


def test_open_routes_and_models_flag():
    store, clock = FakeStore(Key()), Clock()

    async def scenario_open(client):
        assert (await client.get("/v1/health")).status == 200
        assert (await client.get("/v1/models")).status == 200
        assert (await client.get("/v1/dnt/table")).status == 401

    async def scenario_key(client):
        assert (await client.get("/v1/health")).status == 200
        assert (await client.get("/v1/models")).status == 401
        assert (await client.get("/v1/models", headers=AUTH)).status == 200

    run(gate_for(store, clock, "open"), scenario_open)
    run(gate_for(store, clock, "key"), scenario_key)


def test_auth_off_lets_everything_through_without_a_store():
    async def scenario(client):
        r = await client.post("/v1/chat/completions", json=BODY)
        assert r.status == 200

    run(AuthGate("off", "open", lambda: None), scenario)


def test_model_outside_patterns_is_403():
    store, clock = FakeStore(Key(models=("swiss-ai/*",))), Clock()

    async def scenario(client):
        r = await client.post("/v1/chat/completions", json=BODY, headers=AUTH)
        assert r.status == 200
        r = await client.post(
            "/v1/chat/completions", json={**BODY, "model": "meta/llama"}, headers=AUTH
        )
        assert r.status == 403
        err = await error_of(r)
        assert (err["code"], err["type"]) == ("model_not_allowed", "permission_error")

    run(gate_for(store, clock), scenario)


def test_rpm_counts_admitted_requests_between_fetches_and_sets_headers():
    store, clock = FakeStore(Key(rpm=3)), Clock()

    async def scenario(client):
        for _ in range(3):
            assert (
                await client.post("/v1/chat/completions", json=BODY, headers=AUTH)
            ).status == 200
        r = await client.post("/v1/chat/completions", json=BODY, headers=AUTH)
        assert r.status == 429
        err = await error_of(r)
        assert (err["code"], err["type"]) == ("rate_limit_exceeded", "requests")
        assert int(r.headers["Retry-After"]) >= 1
        assert r.headers["X-RateLimit-Limit-Requests"] == "3"
        assert r.headers["X-RateLimit-Remaining-Requests"] == "0"
        assert "X-RateLimit-Reset-Requests" in r.headers
        assert store.lookups == 1  # one fetch served all four

    run(gate_for(store, clock), scenario)


def test_tpm_counts_the_store_window_and_the_writers_pending_tokens():
    store, clock = FakeStore(Key(tpm=100)), Clock()
    pending = {"t": 0}

    async def scenario(client):
        store.window = (1, 60)
        assert (await client.post("/v1/chat/completions", json=BODY, headers=AUTH)).status == 200
        pending["t"] = 40  # 60 in the database + 40 not yet flushed = the limit
        r = await client.post("/v1/chat/completions", json=BODY, headers=AUTH)
        assert r.status == 429
        assert r.headers["X-RateLimit-Limit-Tokens"] == "100"
        assert (await error_of(r))["type"] == "tokens"

    run(gate_for(store, clock, pending=lambda k, now, after=None: (0, pending["t"])), scenario)


def test_budget_is_429_insufficient_quota():
    store, clock = FakeStore(Key(budget_tokens=1000, budget_period="month")), Clock()
    store.used = 1000

    async def scenario(client):
        r = await client.post("/v1/chat/completions", json=BODY, headers=AUTH)
        assert r.status == 429
        err = await error_of(r)
        assert (err["code"], err["type"]) == ("insufficient_quota", "insufficient_quota")
        assert int(r.headers["Retry-After"]) > 0

    run(gate_for(store, clock), scenario)


def test_revoked_key_refused_within_one_second():
    store, clock = FakeStore(Key()), Clock()
    h = next(iter(store.keys))

    async def scenario(client):
        assert (await client.post("/v1/chat/completions", json=BODY, headers=AUTH)).status == 200
        store.keys[h] = replace(store.keys[h], revoked_at=clock.t)
        clock.t += 0.99
        r = await client.post("/v1/chat/completions", json=BODY, headers=AUTH)
        assert r.status == 401
        assert "revoked" in (await error_of(r))["message"]

    run(gate_for(store, clock), scenario)


def test_unknown_keys_are_cached_too():
    store, clock = FakeStore(Key()), Clock()
    bad = {"Authorization": "Bearer sk-otela-unknown"}

    async def scenario(client):
        for _ in range(5):
            assert (await client.post("/v1/chat/completions", json=BODY, headers=bad)).status == 401
        assert store.lookups == 1
        clock.t += 1
        assert (await client.post("/v1/chat/completions", json=BODY, headers=bad)).status == 401
        assert store.lookups == 2

    run(gate_for(store, clock), scenario)


def test_concurrent_requests_share_one_lookup():
    store, clock = FakeStore(Key()), Clock()

    async def scenario(client):
        rs = await asyncio.gather(
            *(client.post("/v1/chat/completions", json=BODY, headers=AUTH) for _ in range(20))
        )
        assert [r.status for r in rs] == [200] * 20
        assert store.lookups <= 2

    run(gate_for(store, clock), scenario)


def test_store_down_is_503_not_a_crash():
    store, clock = FakeStore(Key()), Clock()
    store.fail = True

    async def scenario(client):
        r = await client.post("/v1/chat/completions", json=BODY, headers=AUTH)
        assert r.status == 503
        err = await error_of(r)
        assert err["code"] == "store_unavailable"
        assert "DETAIL" not in err["message"]
        store.fail = False
        assert (await client.post("/v1/chat/completions", json=BODY, headers=AUTH)).status == 200

    run(gate_for(store, clock), scenario)


def test_last_used_is_batched():
    store, clock = FakeStore(Key()), Clock()

    async def scenario(client):
        for _ in range(3):
            assert (
                await client.post("/v1/chat/completions", json=BODY, headers=AUTH)
            ).status == 200
        assert store.touched == {}
        clock.t += 6
        assert (await client.post("/v1/chat/completions", json=BODY, headers=AUTH)).status == 200
        assert "key_00000001" in store.touched

    run(gate_for(store, clock), scenario)


def test_requests_unflushed_or_running_at_a_refetch_still_count():
    store, clock = FakeStore(Key(rpm=3)), Clock()
    unflushed = {"r": 0}

    async def scenario(client):
        assert (await client.post("/v1/chat/completions", json=BODY, headers=AUTH)).status == 200
        assert (await client.post("/v1/chat/completions", json=BODY, headers=AUTH)).status == 200
        unflushed["r"] = 2  # both ended; the writer has not stored them yet
        clock.t += 1  # the next request fetches again: the database still shows nothing
        assert (await client.post("/v1/chat/completions", json=BODY, headers=AUTH)).status == 200
        r = await client.post("/v1/chat/completions", json=BODY, headers=AUTH)
        assert r.status == 429

    run(gate_for(store, clock, pending=lambda k, now, after=None: (unflushed["r"], 0)), scenario)


def test_config_fields_are_validated():
    from opentela.config import ConfigError, load

    assert (load(None, flags={}).auth, load(None, flags={}).auth_models) == ("off", "open")
    cfg = load(None, flags={"auth": "required", "auth_models": "key"})
    assert (cfg.auth, cfg.auth_models) == ("required", "key")
    with pytest.raises(ConfigError, match="auth"):
        load(None, flags={"auth": "on"})
    with pytest.raises(ConfigError, match=r"auth_models|auth-models"):
        load(None, flags={"auth_models": "closed"})
