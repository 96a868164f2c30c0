"""The admin API (/v1/admin/keys...) on a temp SQLite store: the operations, their JSON, who
may call them (loopback with auth off, or an admin key), OpenAI-shaped errors. No
pytest-asyncio: each test runs its own loop."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from opentela.access import keys as ak
from opentela.gateway.admin import KEY_SLOT, add_admin_routes, admin_check, is_loopback
from opentela.store import open_store


def run(store: Any, scenario: Any, auth_required: bool = False, default_rule: bool = False) -> None:
    """``scenario(client)`` against an app with the admin routes. A test middleware plays the
    auth middleware: ``X-Test-Key`` (an id) puts that key in the request, ``X-Test-Remote``
    pretends the TCP peer is another address."""

    @web.middleware
    async def fake_auth(request: web.Request, handler: Any) -> web.StreamResponse:
        remote = request.headers.get("X-Test-Remote")
        if remote:
            request = request.clone(remote=remote)
        key_id = request.headers.get("X-Test-Key")
        request[KEY_SLOT] = store.get_key(key_id) if key_id else None
        return await handler(request)

    async def main() -> None:
        app = web.Application(middlewares=[fake_auth])
        add_admin_routes(app, lambda: store, None if default_rule else admin_check(auth_required))
        async with TestClient(TestServer(app, host="127.0.0.1")) as client:
            await scenario(client)

    asyncio.run(asyncio.wait_for(main(), 20))


@pytest.fixture
def store(tmp_path: Path) -> Any:
    with open_store(tmp_path / "home") as s:
        yield s


def assert_error(body: dict[str, Any], type_: str, code: str) -> None:
    assert set(body) == {"error"}
    assert body["error"]["type"] == type_ and body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]


def test_create_list_get_revoke_rotate(store: Any) -> None:
    async def scenario(client: TestClient) -> None:
        r = await client.post(
            "/v1/admin/keys",
            json={
                "owner": "alice@ethz.ch",
                "models": ["swiss-ai/*"],
                "rpm": 60,
                "tpm": 100000,
                "budget_tokens": 5000000,
                "budget_period": "month",
            },
        )
        assert r.status == 201, await r.text()
        created = await r.json()
        secret = created["key"]
        assert ak.looks_like_key(secret) and created["prefix"] == secret[:13]
        assert created["object"] == "api_key" and created["owner"] == "alice@ethz.ch"
        assert (created["rpm"], created["budget_period"], created["admin"]) == (60, "month", False)
        assert store.lookup_key(secret).id == created["id"]

        r = await client.get("/v1/admin/keys")
        listed = await r.json()
        assert r.status == 200 and listed["object"] == "list"
        assert [k["id"] for k in listed["data"]] == [created["id"]]
        text = await r.text()
        assert secret not in text and ak.key_hash(secret) not in text and "key_hash" not in text

        r = await client.get(f"/v1/admin/keys/{created['id']}")
        got = await r.json()
        assert r.status == 200 and "key" not in got
        assert {k: v for k, v in created.items() if k != "key"} == got

        r = await client.post(f"/v1/admin/keys/{created['id']}/rotate")
        rotated = await r.json()
        assert r.status == 201 and ak.looks_like_key(rotated["key"]) and rotated["key"] != secret
        assert rotated["id"] != created["id"] and rotated["tpm"] == 100000
        assert store.lookup_key(secret).revoked_at is not None

        r = await client.delete(f"/v1/admin/keys/{rotated['id']}")
        revoked = await r.json()
        assert r.status == 200 and revoked["revoked_at"] is not None
        assert store.lookup_key(rotated["key"]).revoked_at == revoked["revoked_at"]

        r = await client.post(f"/v1/admin/keys/{rotated['id']}/rotate")
        assert r.status == 409
        assert_error(await r.json(), "invalid_request_error", "key_revoked")

    run(store, scenario)


def test_errors_are_openai_shaped(store: Any) -> None:
    async def scenario(client: TestClient) -> None:
        cases = [
            ("GET", "/v1/admin/keys/key_00000000", None, 404, "key_not_found"),
            ("DELETE", "/v1/admin/keys/nonsense", None, 404, "key_not_found"),
            ("POST", "/v1/admin/keys", {"models": ["a"]}, 400, "invalid_request"),
            ("POST", "/v1/admin/keys", {"owner": "a", "rpm": 0}, 400, "invalid_request"),
            ("POST", "/v1/admin/keys", {"owner": "a", "rpm": "60"}, 400, "invalid_request"),
            ("POST", "/v1/admin/keys", {"owner": "a", "admin": "yes"}, 400, "invalid_request"),
            ("POST", "/v1/admin/keys", {"owner": "a", "colour": 1}, 400, "invalid_request"),
            ("POST", "/v1/admin/keys", [1], 400, "invalid_request"),
            (
                "POST",
                "/v1/admin/keys",
                {"owner": "a", "budget_tokens": 1, "budget_period": "year"},
                400,
                "invalid_request",
            ),
        ]
        for method, path, body, status, code in cases:
            r = await client.request(method, path, json=body)
            assert r.status == status, (path, body, await r.text())
            assert_error(await r.json(), "invalid_request_error", code)
        r = await client.post("/v1/admin/keys", data=b"{not json")
        assert r.status == 400
        assert_error(await r.json(), "invalid_request_error", "invalid_request")
        assert store.list_keys() == []

    run(store, scenario)


def test_who_may_call(store: Any) -> None:
    _, admin = store.create_key("root", admin=True)
    _, user = store.create_key("alice")
    _, gone = store.create_key("old-root", admin=True)
    store.revoke_key(gone.id)

    async def status(client: TestClient, **headers: str) -> int:
        r = await client.get("/v1/admin/keys", headers=headers)
        if r.status == 403:
            assert_error(await r.json(), "permission_error", "admin_required")
        return r.status

    async def auth_off(client: TestClient) -> None:
        assert await status(client) == 200  # loopback
        assert await status(client, **{"X-Test-Key": user.id}) == 200  # loopback, auth off
        assert await status(client, **{"X-Test-Remote": "10.1.2.3"}) == 403
        assert await status(client, **{"X-Test-Remote": "::ffff:127.0.0.1"}) == 200
        remote_admin = {"X-Test-Remote": "10.1.2.3", "X-Test-Key": admin.id}
        assert await status(client, **remote_admin) == 200
        remote_user = {"X-Test-Remote": "10.1.2.3", "X-Test-Key": user.id}
        assert await status(client, **remote_user) == 403
        remote_gone = {"X-Test-Remote": "10.1.2.3", "X-Test-Key": gone.id}
        assert await status(client, **remote_gone) == 403

    async def auth_on(client: TestClient) -> None:
        assert await status(client) == 403  # loopback is not enough with auth required
        assert await status(client, **{"X-Test-Key": user.id}) == 403
        assert await status(client, **{"X-Test-Key": admin.id}) == 200
        r = await client.post(
            "/v1/admin/keys", json={"owner": "x"}, headers={"X-Test-Key": user.id}
        )
        assert r.status == 403
        assert [k.owner for k in store.list_keys()] == ["root", "alice", "old-root"]

    run(store, auth_off)
    run(store, auth_off, default_rule=True)  # the default rule is auth off's
    run(store, auth_on, auth_required=True)


def test_no_store_is_503() -> None:
    async def main() -> None:
        app = web.Application()
        add_admin_routes(app, lambda: None)
        async with TestClient(TestServer(app, host="127.0.0.1")) as client:
            r = await client.get("/v1/admin/keys")
            assert r.status == 503
            assert_error(await r.json(), "server_error", "store_unavailable")

    asyncio.run(asyncio.wait_for(main(), 20))


@pytest.mark.parametrize(
    ("remote", "loop"),
    [
        ("127.0.0.1", True),
        ("127.9.9.9", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        ("10.0.0.1", False),
        ("::ffff:10.0.0.1", False),
        ("fe80::1%eth0", False),
        ("", False),
        (None, False),
        ("not an ip", False),
    ],
)
def test_is_loopback(remote: str | None, loop: bool) -> None:
    assert is_loopback(remote) is loop
