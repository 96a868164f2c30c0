"""API keys and usage in the store, on SQLite and on PostgreSQL: the same cases, the same
answers (issue 11)."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import inspect

from opentela.access import keys as ak
from opentela.store import KeyRevoked, UnknownKey, UsageRow, open_store
from opentela.store.schema import api_keys, usage_daily, usage_minute

NOW = 1_800_000_000.0  # 2027-01-15 08:00:00 UTC, a Friday
DAY = 86400.0


def test_tables_match_their_declarations(db_url: str) -> None:
    with open_store(db_url) as store:
        insp = inspect(store.engine)
        for table in (api_keys, usage_daily, usage_minute):
            assert {c["name"] for c in insp.get_columns(table.name)} == {
                c.name for c in table.columns
            }
            assert insp.get_pk_constraint(table.name)["constrained_columns"] == [
                c.name for c in table.primary_key.columns
            ]


def test_create_list_get_lookup(db_url: str) -> None:
    with open_store(db_url) as store:
        text, info = store.create_key(
            "alice@ethz.ch",
            ["swiss-ai/*"],
            rpm=60,
            tpm=100_000,
            budget_tokens=5_000_000,
            budget_period="month",
            now=NOW,
        )
        assert ak.looks_like_key(text) and ak.is_key_id(info.id)
        assert info.prefix == text[:13] and info.prefix.startswith("sk-otela-")
        assert (info.rpm, info.tpm, info.budget_tokens, info.budget_period) == (
            60,
            100_000,
            5_000_000,
            "month",
        )
        assert info.models == ("swiss-ai/*",) and not info.admin and info.created_at == NOW
        _, boss = store.create_key("root", admin=True, now=NOW + 1)
        assert boss.admin and boss.models == () and boss.allows_model("anything")

        assert store.list_keys() == [info, boss]
        assert store.get_key(info.id) == info == store.get_key(text)
        assert store.lookup_key(text) == info
        assert store.lookup_key(f"  {text}\n") == info
        assert store.lookup_key(ak.new_key()) is None
        assert store.lookup_key("not a key") is None
        with pytest.raises(UnknownKey, match="no key key_00000000"):
            store.get_key("key_00000000")
        with pytest.raises(UnknownKey, match="neither a key id"):
            store.get_key("alice")


def test_revoke_and_rotate(db_url: str) -> None:
    with open_store(db_url) as store:
        text, info = store.create_key("alice", ["a/*"], rpm=5, budget_tokens=10, now=NOW)
        store.touch_keys({info.id: NOW + 5})
        new_text, new = store.rotate_key(text, now=NOW + 10)
        assert new_text != text and new.id != info.id and ak.looks_like_key(new_text)
        assert (new.owner, new.models, new.rpm, new.budget_tokens, new.budget_period) == (
            "alice",
            ("a/*",),
            5,
            10,
            "total",
        )
        assert new.created_at == NOW + 10 and new.last_used_at is None and new.revoked_at is None
        old = store.lookup_key(text)  # a revoked key is still found, with revoked_at set
        assert old is not None and old.revoked_at == NOW + 10 and old.last_used_at == NOW + 5
        assert store.lookup_key(new_text) == new
        with pytest.raises(KeyRevoked):
            store.rotate_key(info.id, now=NOW + 11)
        assert len(store.list_keys()) == 2  # the refused rotation created nothing

        assert store.revoke_key(new.id, now=NOW + 20).revoked_at == NOW + 20
        assert store.revoke_key(new_text, now=NOW + 30).revoked_at == NOW + 20  # first kept
        with pytest.raises(UnknownKey, match="no key that API key"):
            store.revoke_key(ak.new_key())


def test_touch_only_moves_forward(db_url: str) -> None:
    with open_store(db_url) as store:
        _, a = store.create_key("a", now=NOW)
        _, b = store.create_key("b", now=NOW)
        store.touch_keys({a.id: NOW + 10, b.id: NOW + 3})
        store.touch_keys({a.id: NOW + 5, b.id: NOW + 7, "key_00000000": NOW})
        store.touch_keys({})
        assert store.get_key(a.id).last_used_at == NOW + 10
        assert store.get_key(b.id).last_used_at == NOW + 7


def test_bad_settings_are_refused_before_writing(db_url: str) -> None:
    with open_store(db_url) as store:
        for kwargs in (
            {"owner": ""},
            {"owner": "a", "models": ["has space"]},
            {"owner": "a", "rpm": 0},
            {"owner": "a", "tpm": -1},
            {"owner": "a", "rpm": 1.5},
            {"owner": "a", "budget_tokens": 10, "budget_period": "year"},
            {"owner": "a", "budget_period": "day"},
        ):
            with pytest.raises(ValueError):
                store.create_key(**kwargs)
        assert store.list_keys() == []


def row(now: float, key: str, model: str, **counts: int) -> UsageRow:
    return UsageRow.at(now, key, f"owner-{key}", model, **counts)


def test_add_usage_is_additive(db_url: str) -> None:
    with open_store(db_url) as store:
        store.add_usage([])
        store.add_usage(
            [
                row(NOW, "k1", "m1", prompt_tokens=10, completion_tokens=5),
                row(NOW + 1, "k1", "m1", prompt_tokens=1, completion_tokens=2, estimated=1),
                row(NOW + 2, "k1", "m2", prompt_tokens=7, errors=1),
            ]
        )
        store.add_usage([row(NOW + 3, "k1", "m1", completion_tokens=4, aborted=1)])
        got = {r["model"]: r for r in store.usage_by_model(1, NOW + 10, key_id="k1")}
        assert got["m1"] == {
            "model": "m1",
            "requests": 3,
            "prompt_tokens": 11,
            "completion_tokens": 11,
            "total_tokens": 22,
            "errors": 0,
            "aborted": 1,
            "estimated": 1,
            "last_active": NOW + 3,
        }
        assert (got["m2"]["requests"], got["m2"]["errors"], got["m2"]["total_tokens"]) == (1, 1, 7)
        # An older row arriving late adds its counts but does not move last_active back.
        store.add_usage([row(NOW - 5, "k1", "m1", prompt_tokens=1)])
        m1 = store.usage_by_model(1, NOW + 10, key_id="k1")[0]
        assert (m1["model"], m1["requests"], m1["last_active"]) == ("m1", 4, NOW + 3)


def test_concurrent_writers_with_overlapping_rows_do_not_deadlock(db_url: str) -> None:
    """Two stores (as two entry nodes on one database) flush batches over the same keys and
    models, built in opposite orders, from two threads: every batch commits, and the sums are
    exact."""
    keys = [f"key_{i:08x}" for i in range(6)]
    models = ["m-a", "m-b", "m-c"]
    batches = 20

    def batch(reverse: bool) -> list[UsageRow]:
        rows = [row(NOW, k, m, prompt_tokens=2, completion_tokens=1) for k in keys for m in models]
        return rows[::-1] if reverse else rows

    with open_store(db_url):
        pass  # migrate once, before the writers
    stores = [open_store(db_url), open_store(db_url)]
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            for _ in range(batches):
                stores[i].add_usage(batch(reverse=i == 1))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads)
    for s in stores:
        s.close()
    assert not errors, errors
    with open_store(db_url) as store:
        for k in keys:
            per_model = store.usage_by_model(1, NOW, key_id=k)
            assert {r["model"]: (r["requests"], r["total_tokens"]) for r in per_model} == {
                m: (2 * batches, 2 * batches * 3) for m in models
            }
            assert store.window_usage(k, NOW) == (2 * batches * 3, 2 * batches * 3 * 3)


def test_window_usage_weights_the_previous_minute(db_url: str) -> None:
    start = 60 * (NOW // 60)  # the start of a minute
    with open_store(db_url) as store:
        store.add_usage(
            [
                row(start - 61, "k", "m", prompt_tokens=1000),  # two minutes back: outside
                row(start - 30, "k", "m", prompt_tokens=60, requests=4),
                row(start + 5, "k", "m", prompt_tokens=10, completion_tokens=10),
            ]
        )
        assert store.window_usage("k", start) == (4 + 1, 60 + 20)  # all of the previous
        assert store.window_usage("k", start + 15) == (4 * 0.75 + 1, 60 * 0.75 + 20)
        assert store.window_usage("k", start + 59.999) == pytest.approx((1, 20), abs=0.01)
        assert store.window_usage("k", start + 60) == (1, 20)  # the "previous" is now this one
        assert store.window_usage("k", start + 150) == (0, 0)
        assert store.window_usage("other", start) == (0, 0)


def test_usage_minute_is_pruned_after_two_hours(db_url: str) -> None:
    with open_store(db_url) as store:
        store.add_usage([row(NOW - 3 * 3600, "k", "m", prompt_tokens=1)])
        store.add_usage([row(NOW, "k", "m", prompt_tokens=1)])
        with store.engine.connect() as conn:
            minutes = [
                r[0]
                for r in conn.execute(
                    usage_minute.select().with_only_columns(usage_minute.c.minute)
                )
            ]
        assert minutes == [int(NOW // 60)]
        assert store.budget_used("k", 0) == 2  # the daily rows are kept


def test_budget_used_by_period(db_url: str) -> None:
    from opentela.access.quota import period_start

    with open_store(db_url) as store:
        store.add_usage(
            [
                row(NOW, "k", "m", prompt_tokens=1, completion_tokens=1),  # today
                row(NOW - DAY, "k", "m2", prompt_tokens=10),  # yesterday, Thursday
                row(NOW - 6 * DAY, "k", "m", completion_tokens=100),  # last Saturday
                row(NOW - 20 * DAY, "k", "m", prompt_tokens=1000),  # December 2026
                row(NOW, "other", "m", prompt_tokens=10_000),
            ]
        )
        used = {p: store.budget_used("k", period_start(p, NOW)) for p in ak.PERIODS}
        assert used == {"day": 2, "week": 12, "month": 112, "total": 1112}
        assert store.budget_used("nobody", 0) == 0


def test_usage_by_model_and_statistics(db_url: str) -> None:
    with open_store(db_url) as store:
        store.add_usage(
            [
                UsageRow.at(NOW, "k1", "alice", "big", prompt_tokens=100, completion_tokens=50),
                UsageRow.at(NOW, "k2", "alice", "big", prompt_tokens=1),
                UsageRow.at(NOW - DAY, "k3", "bob", "small", prompt_tokens=5),
                UsageRow.at(NOW - 40 * DAY, "k3", "bob", "small", prompt_tokens=500),
            ]
        )
        everyone = store.usage_by_model(30, NOW)
        assert [(r["model"], r["requests"], r["total_tokens"]) for r in everyone] == [
            ("big", 2, 151),
            ("small", 1, 5),
        ]
        assert set(everyone[0]) >= {
            "model",
            "requests",
            "prompt_tokens",
            "completion_tokens",
            "total_tokens",
            "last_active",
        }
        assert [r["model"] for r in store.usage_by_model(30, NOW, owner="bob")] == ["small"]
        assert store.usage_by_model(1, NOW, owner="bob") == []  # yesterday is outside 1 day
        assert store.usage_by_model(2, NOW, owner="bob")[0]["total_tokens"] == 5
        assert store.usage_by_model(60, NOW, owner="bob")[0]["total_tokens"] == 505
        assert store.usage_by_model(30, NOW, owner="carol") == []

        stats = store.statistics(30, NOW)
        assert [(s["day"], s["model"], s["requests"], s["total_tokens"]) for s in stats] == [
            ("2027-01-14", "small", 1, 5),
            ("2027-01-15", "big", 2, 151),
        ]
        assert stats[1]["prompt_tokens"] == 101 and stats[1]["completion_tokens"] == 50


def test_a_failed_batch_writes_nothing(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """All or nothing: the writer may retry a failed batch whole without counting twice."""
    from opentela.store import StoreError
    from opentela.store import keys as store_keys

    real = store_keys.add_usage

    def fail_after_writing(conn, rows):  # type: ignore[no-untyped-def]
        real(conn, rows)
        conn.exec_driver_sql("SELECT * FROM no_such_table")

    with open_store(db_url) as store:
        monkeypatch.setattr(store_keys, "add_usage", fail_after_writing)
        batch = [row(NOW, "k", "m", prompt_tokens=5)]
        with pytest.raises(StoreError):
            store.add_usage(batch)
        monkeypatch.setattr(store_keys, "add_usage", real)
        assert store.usage_by_model(1, NOW) == [] and store.window_usage("k", NOW) == (0, 0)
        store.add_usage(batch)  # the retry
        assert store.budget_used("k", 0) == 5 and store.window_usage("k", NOW) == (1, 5)
