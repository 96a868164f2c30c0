"""Who sees which usage (/v1/usage scope) and the /v1/models_detailed entries: pure."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from opentela.gateway.errors import ApiError
from opentela.gateway.platform import device_label, usage_body, usage_scope
from opentela.table.record import Gpu


@dataclass
class Key:
    owner: str
    admin: bool = False
    id: str = "key_00000000"


@dataclass
class Req:
    query: dict[str, str] = field(default_factory=dict)
    remote: str = "10.0.0.9"
    key: Any = None

    def get(self, name: str) -> Any:
        return self.key if name == "otela.key" else None


def test_a_key_sees_its_owner_only() -> None:
    assert usage_scope(Req(key=Key("alice"))) == ("alice", None)  # type: ignore[arg-type]
    assert usage_scope(Req({"owner": "alice"}, key=Key("alice"))) == ("alice", None)  # type: ignore[arg-type]
    with pytest.raises(ApiError) as exc:
        usage_scope(Req({"owner": "bob"}, key=Key("alice")))  # type: ignore[arg-type]
    assert exc.value.status == 403


def test_an_admin_key_may_ask_for_any_owner() -> None:
    assert usage_scope(Req({"owner": "bob"}, key=Key("root", admin=True))) == ("bob", None)  # type: ignore[arg-type]


def test_auth_off_anonymous_unless_loopback() -> None:
    assert usage_scope(Req()) == ("anonymous", None)  # type: ignore[arg-type]
    with pytest.raises(ApiError):
        usage_scope(Req({"owner": "bob"}))  # type: ignore[arg-type]
    assert usage_scope(Req({"owner": "bob"}, remote="127.0.0.1")) == ("bob", None)  # type: ignore[arg-type]


def test_usage_body_totals() -> None:
    rows = [
        {
            "model": "a",
            "requests": 2,
            "prompt_tokens": 3,
            "completion_tokens": 4,
            "total_tokens": 7,
            "last_active": 10.0,
        },
        {
            "model": "b",
            "requests": 1,
            "prompt_tokens": 1,
            "completion_tokens": 1,
            "total_tokens": 2,
            "last_active": 20.0,
        },
    ]
    assert usage_body(rows)["totals"] == {
        "requests": 3,
        "prompt_tokens": 4,
        "completion_tokens": 5,
        "total_tokens": 9,
        "last_active": 20.0,
    }


def test_device_label_groups_gpus() -> None:
    gpus = [Gpu("NVIDIA GH200 120GB", 1, 0) for _ in range(4)]
    assert device_label(gpus) == "4x NVIDIA GH200 120GB"
    assert device_label([]) == ""
