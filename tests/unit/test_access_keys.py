"""API keys, their settings and the usage rows: the pure parts (issue 11)."""

from __future__ import annotations

import base64
import hashlib

import pytest

from opentela.access import keys as ak
from opentela.cli import _fmt_keys, _fmt_usage, _usage_totals
from opentela.store.usage import UsageRow, daily_totals, minute_totals, utc_day

NOW = 1_800_000_000.0  # 2027-01-15 08:00:00 UTC


def test_key_shape_hash_and_prefix() -> None:
    raw = bytes(range(24))
    key = ak.make_key(raw)
    assert key == "sk-otela-" + base64.urlsafe_b64encode(raw).decode()
    assert len(key) == 9 + 32 and "=" not in key and ak.looks_like_key(key)
    assert ak.key_hash(key) == hashlib.sha256(key.encode()).hexdigest()
    assert ak.display_prefix(key) == key[:13] and len(ak.display_prefix(key)) == 13
    with pytest.raises(ValueError, match="24 bytes"):
        ak.make_key(b"short")


def test_new_keys_and_ids_are_random_and_well_formed() -> None:
    keys = {ak.new_key() for _ in range(200)}
    assert len(keys) == 200 and all(ak.looks_like_key(k) for k in keys)
    ids = [ak.new_key_id() for _ in range(50)]
    assert all(ak.is_key_id(i) for i in ids) and len(set(ids)) > 45
    assert not any(ak.is_key_id(k) or ak.looks_like_key(i) for k, i in zip(keys, ids, strict=False))


@pytest.mark.parametrize(
    "text",
    [
        "",
        "sk-otela-",
        "sk-otela-" + "a" * 31,
        "sk-otela-" + "a" * 33,
        "sk-other-" + "a" * 32,
        "sk-otela-" + "a" * 31 + "=",
        " sk-otela-" + "a" * 32,
        "otj_" + "a" * 43,
    ],
)
def test_looks_like_key_refuses_other_text(text: str) -> None:
    assert not ak.looks_like_key(text)


def test_allows_model() -> None:
    everything = ak.KeyInfo(id="key_00000001", prefix="sk-otela-AAAA", owner="a")
    assert everything.allows_model("any/model") and everything.allows_model("")
    some = ak.KeyInfo(
        id="key_00000001",
        prefix="sk-otela-AAAA",
        owner="a",
        models=("swiss-ai/*", "meta/Llama-3-8B"),
    )
    assert some.allows_model("swiss-ai/Apertus-8B")
    assert some.allows_model("meta/Llama-3-8B")
    assert not some.allows_model("meta/Llama-3-70B")
    assert not some.allows_model("Swiss-AI/Apertus-8B")  # model ids are case-sensitive
    assert some.status() == "active"
    d = some.to_json()
    assert d["models"] == ["swiss-ai/*", "meta/Llama-3-8B"] and "key_hash" not in d


def test_parse_models_and_limits() -> None:
    assert ak.parse_models([]) == ()
    assert ak.parse_models(["a/*", "b", "a/*"]) == ("a/*", "b")
    for bad in (["has space"], [""], ["x" * 300]):
        with pytest.raises(ValueError, match="invalid model pattern"):
            ak.parse_models(bad)
    assert ak.parse_limits() == (None, None, None, None)
    assert ak.parse_limits(60, 1000, 5, "week") == (60, 1000, 5, "week")
    assert ak.parse_limits(budget_tokens=5) == (None, None, 5, "total")
    for kwargs, match in (
        ({"rpm": 0}, "invalid rpm"),
        ({"tpm": -5}, "invalid tpm"),
        ({"rpm": True}, "invalid rpm"),
        ({"rpm": 2.5}, "invalid rpm"),
        ({"budget_tokens": 5, "budget_period": "year"}, "invalid budget period"),
        ({"budget_period": "day"}, "needs a budget"),
    ):
        with pytest.raises(ValueError, match=match):
            ak.parse_limits(**kwargs)


def test_usage_rows_sum_and_sort_by_primary_key() -> None:
    r = UsageRow.at(NOW, "key_b", "bob", "m", prompt_tokens=3, completion_tokens=4)
    assert (r.day, r.minute, r.last_active, r.requests, r.tokens) == (
        "2027-01-15",
        int(NOW // 60),
        NOW,
        1,
        7,
    )
    assert utc_day(NOW + 16 * 3600) == "2027-01-16"  # midnight UTC, whatever the local zone
    rows = [
        r,
        UsageRow.at(NOW + 1, "key_a", "alice", "z", prompt_tokens=1),
        UsageRow.at(NOW + 2, "key_b", "bob", "m", completion_tokens=1, estimated=1, aborted=1),
        UsageRow.at(NOW - 90, "key_b", "bob", "m", errors=1),
    ]
    daily = daily_totals(rows)
    assert [(d["day"], d["key_id"], d["model"]) for d in daily] == [
        ("2027-01-15", "key_a", "z"),
        ("2027-01-15", "key_b", "m"),
    ]
    b = daily[1]
    assert (b["requests"], b["prompt_tokens"], b["completion_tokens"]) == (3, 3, 5)
    assert (b["errors"], b["aborted"], b["estimated"], b["last_active"]) == (1, 1, 1, NOW + 2)
    mins = minute_totals(rows)
    m = int(NOW // 60)
    assert mins == [
        {"key_id": "key_a", "minute": m, "requests": 1, "tokens": 1},
        {"key_id": "key_b", "minute": m - 2, "requests": 1, "tokens": 0},
        {"key_id": "key_b", "minute": m, "requests": 2, "tokens": 8},
    ]


def test_key_and_usage_tables() -> None:
    k = ak.KeyInfo(
        id="key_0000000a",
        prefix="sk-otela-AbCd",
        owner="alice",
        rpm=60,
        budget_tokens=100,
        budget_period="month",
        created_at=NOW,
    )
    lines = _fmt_keys([k], {k.id: 42}).splitlines()
    assert lines[0].split()[:4] == ["ID", "PREFIX", "OWNER", "STATUS"]
    assert lines[1].split()[:10] == [
        "key_0000000a",
        "sk-otela-AbCd...",
        "alice",
        "active",
        "no",
        "*",
        "60",
        "-",
        "100/month",
        "42",
    ]
    rows = [
        {"model": "m1", "requests": 2, "prompt_tokens": 5, "completion_tokens": 6,
         "total_tokens": 11, "errors": 0, "aborted": 1, "estimated": 0, "last_active": NOW},
        {"model": "m2", "requests": 1, "prompt_tokens": 1, "completion_tokens": 0,
         "total_tokens": 1, "errors": 1, "aborted": 0, "estimated": 1, "last_active": None},
    ]  # fmt: skip
    totals = _usage_totals(rows)
    assert (totals["requests"], totals["total_tokens"], totals["last_active"]) == (3, 12, NOW)
    out = _fmt_usage(rows).splitlines()
    assert out[0].split()[:5] == ["MODEL", "REQUESTS", "PROMPT", "COMPLETION", "TOTAL"]
    assert out[1].split()[:5] == ["m1", "2", "5", "6", "11"]
    assert out[3].split()[:4] == ["(all", "models)", "3", "6"]
