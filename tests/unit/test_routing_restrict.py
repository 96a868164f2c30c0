"""Header restrictions (``X-Otela-Identity-Group``, ``X-Otela-Site``): parsing, the plan they
filter, and the gateway routing by them without the body naming a model."""

from __future__ import annotations

import asyncio
import json
import random
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from test_routing import PIDS, snapshot

from opentela.gateway.app import Gateway, NodeView
from opentela.gateway.auth import AuthGate
from opentela.gateway.balancer import Balancer
from opentela.httpheaders import DROP_TO_BACKEND, end_to_end
from opentela.routing.plan import plan
from opentela.routing.restrict import Restriction, parse
from opentela.table.record import NodeRecord, Service

TIMEOUT_S = 20.0

# -- parse / admits ---------------------------------------------------------------------------


def test_parse_pairs_model_and_site() -> None:
    r = parse(["model=foo, framework=vllm", "site=clariden"], " bristen ")
    assert r == Restriction("foo", (("framework", "vllm"), ("site", "clariden")), "bristen")
    assert not r.empty
    assert parse([], None).empty and parse([], None).model is None
    assert parse(["model=foo"], None).empty  # a model is routed, not a filter


@pytest.mark.parametrize(
    ("groups", "site"),
    [(["model"], None), (["=x"], None), (["k="], None), (["model=a,model=b"], None), ([], "  ")],
)
def test_parse_refuses_malformed(groups: list[str], site: str | None) -> None:
    with pytest.raises(ValueError):
        parse(groups, site)


def test_parse_bounds_the_pairs() -> None:
    with pytest.raises(ValueError, match="more than"):
        parse([",".join(f"k{i}=v" for i in range(17))], None)


def test_admits_by_identity_group_or_label() -> None:
    r = parse(["framework=vllm"], None)
    assert r.admits(("model=a", "framework=vllm"), {})
    assert r.admits(("model=a",), {"framework": "vllm"})
    assert not r.admits(("model=a",), {"framework": "sglang"})
    s = parse([], "clariden")
    assert s.admits((), {"site": "clariden"})
    assert not s.admits(("site=clariden",), {})  # the site is the label, nothing else
    both = parse(["arch=aarch64"], "clariden")
    assert both.admits((), {"site": "clariden", "arch": "aarch64"})
    assert not both.admits((), {"site": "clariden", "arch": "x86_64"})


# -- plan ---------------------------------------------------------------------------------------


def rec(i: int, model: str, **labels: str) -> NodeRecord:
    svc = Service("llm", "ready", (f"model={model}",))
    return NodeRecord(PIDS[i], 1, 0.0, role="worker", services=(svc,), labels=labels)


POOL = [
    rec(0, "a", site="bristen", framework="vllm"),
    rec(1, "a", site="clariden", framework="sglang"),
    rec(2, "b", site="clariden", framework="vllm"),
    rec(3, "a"),  # no labels
]


def test_plan_filters_by_restriction() -> None:
    snap = snapshot(*POOL)
    ids = lambda r: {t.peer_id for t in plan(snap, "a", rng=random.Random(0), restrict=r)}  # noqa: E731
    assert ids(None) == {PIDS[0], PIDS[1], PIDS[3]}
    assert ids(parse([], "clariden")) == {PIDS[1]}
    assert ids(parse(["framework=vllm"], None)) == {PIDS[0]}
    assert ids(parse(["framework=vllm"], "clariden")) == set()


def test_drop_to_backend_removes_the_routing_headers() -> None:
    kept = end_to_end(
        [
            ("X-Otela-Identity-Group", "model=a"),
            ("x-otela-site", "clariden"),
            ("X-Otela-Fallback", "1"),
            ("Content-Type", "application/json"),
        ],
        DROP_TO_BACKEND,
    )
    assert kept == [["Content-Type", "application/json"]]


# -- the gateway --------------------------------------------------------------------------------


class RecordingForwarder:
    """Stands in for ``Forwarder``: answers with what it was asked to forward."""

    def __init__(self) -> None:
        self.rng = random.Random(0)

    async def forward(
        self, request, targets, path, body, observer=None, model=None
    ) -> web.Response:
        return web.json_response(
            {"targets": [t.peer_id for t in targets], "body": json.loads(body) if body else None}
        )


class RecordingAuth(AuthGate):
    def __init__(self) -> None:
        super().__init__("off", "open", lambda: None)
        self.admitted: list[str | None] = []

    async def admit(self, request: web.Request, model: str | None) -> None:
        self.admitted.append(model)


def gateway(records: list[NodeRecord], joined: bool = True) -> tuple[Gateway, RecordingAuth]:
    snap = snapshot(*records)
    view = NodeView(
        peer_id=PIDS[11],
        version="test",
        snapshot=lambda: snap,
        addrs=lambda: [],
        connected=lambda: [],
        stats=lambda: {},
        now=lambda: 10.0,
        joined=lambda: joined,
    )
    auth = RecordingAuth()
    fwd: Any = RecordingForwarder()
    return Gateway(view, fwd, Balancer("random", random.Random(0)), 1 << 20, auth), auth


async def _post(port: int, path: str, body: Any, headers: dict[str, str]) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as s,
        s.post(f"http://127.0.0.1:{port}{path}", json=body, headers=headers) as r,
    ):
        return r.status, await r.json()


def call(gw: Gateway, path: str, body: Any, **headers: str) -> tuple[int, Any]:
    async def main() -> tuple[int, Any]:
        runner = gw.runner()
        await runner.setup()
        try:
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            port = runner.addresses[0][1]
            hdrs = {k.replace("_", "-"): v for k, v in headers.items()}
            return await _post(port, path, body, hdrs)
        finally:
            await runner.cleanup()

    return asyncio.run(asyncio.wait_for(main(), TIMEOUT_S))


CHAT = "/v1/chat/completions"
MSGS = [{"role": "user", "content": "hi"}]


def test_model_from_the_header_routes_and_is_written_into_the_body() -> None:
    gw, auth = gateway(POOL)
    status, out = call(gw, CHAT, {"messages": MSGS}, X_Otela_Identity_Group="model=b")
    assert status == 200, out
    assert out["targets"] == [PIDS[2]]
    assert out["body"]["model"] == "b" and out["body"]["messages"] == MSGS
    assert auth.admitted == ["b"]  # the key's model check sees the routed model


def test_same_model_in_body_and_header_is_fine_and_different_is_400() -> None:
    gw, _ = gateway(POOL)
    status, out = call(gw, CHAT, {"model": "b", "messages": MSGS}, X_Otela_Identity_Group="model=b")
    assert status == 200 and out["targets"] == [PIDS[2]]
    status, out = call(gw, CHAT, {"model": "a", "messages": MSGS}, X_Otela_Identity_Group="model=b")
    assert status == 400 and out["error"]["code"] == "model_mismatch", out
    assert "'a'" in out["error"]["message"] and "model=b" in out["error"]["message"]


def test_site_and_label_restrictions_route_without_a_body_model() -> None:
    gw, _ = gateway(POOL)
    status, out = call(gw, CHAT, {"model": "a", "messages": MSGS}, X_Otela_Site="clariden")
    assert status == 200 and out["targets"] == [PIDS[1]]
    status, out = call(
        gw, CHAT, {"messages": MSGS}, X_Otela_Identity_Group="model=a,framework=vllm"
    )
    assert status == 200 and out["targets"] == [PIDS[0]]


def test_no_match_is_404_naming_the_restriction() -> None:
    gw, _ = gateway(POOL)
    status, out = call(gw, CHAT, {"model": "b", "messages": MSGS}, X_Otela_Site="bristen")
    assert status == 404 and out["error"]["code"] == "model_not_found", out
    assert "site 'bristen'" in out["error"]["message"]


def test_a_matching_replica_that_is_not_ready_is_503_naming_the_restriction() -> None:
    down = NodeRecord(
        PIDS[4], 1, 0.0, role="worker", services=(Service("llm", "draining", ("model=b",)),),
        labels={"site": "bristen"},
    )  # fmt: skip
    gw, _ = gateway([*POOL, down])
    status, out = call(gw, CHAT, {"model": "b", "messages": MSGS}, X_Otela_Site="bristen")
    assert status == 503 and out["error"]["code"] == "no_live_replica", out
    assert "site 'bristen'" in out["error"]["message"]


def test_malformed_header_and_no_model_at_all_are_400() -> None:
    gw, _ = gateway(POOL)
    status, out = call(gw, CHAT, {"model": "a", "messages": MSGS}, X_Otela_Identity_Group="junk")
    assert status == 400 and out["error"]["code"] == "invalid_header", out
    status, out = call(gw, CHAT, {"messages": MSGS}, X_Otela_Site="clariden")
    assert status == 400 and out["error"]["code"] == "missing_model", out


def test_service_route_honours_the_headers() -> None:
    gw, auth = gateway(POOL)
    path = "/v1/service/llm/v1/chat/completions"
    status, out = call(gw, path, {"messages": MSGS}, X_Otela_Identity_Group="model=a", X_Otela_Site="bristen")  # fmt: skip
    assert status == 200 and out["targets"] == [PIDS[0]]
    assert out["body"]["model"] == "a" and auth.admitted == ["a"]
