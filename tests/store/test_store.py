"""The store on SQLite and on PostgreSQL: the same cases, the same answers."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from sqlalchemy import inspect, text

from opentela.access import token as tk
from opentela.store import SchemaTooNew, StoreError, TokenRejected, UnknownToken, open_store
from opentela.store import migrate as migrate_mod
from opentela.store.schema import MIGRATIONS, SCHEMA_VERSION, Migration, join_tokens

NOW = 1_800_000_000.0
DAY = 86400.0


def test_create_list_redeem_revoke(db_url: str) -> None:
    with open_store(db_url) as store:
        secret, info = store.create_token(
            "alice", ["alice/*", "swiss-ai/Apertus-8B"], ttl_s=30 * DAY, now=NOW
        )
        assert tk.is_token(secret) and tk.is_token_id(info.id)
        assert info.models == ("alice/*", "swiss-ai/Apertus-8B") and info.roles == ("worker",)
        assert (info.created_at, info.expires_at) == (NOW, NOW + 30 * DAY)
        _, other = store.create_token("bob", ["bob/*"], roles=["head", "relay"], now=NOW + 1)

        assert store.list_tokens() == [info, other]
        got = store.redeem_token(secret, now=NOW + 10)
        assert got.id == info.id and got.last_used_at == NOW + 10 and got.owner == "alice"
        assert store.get_token(info.id) == got
        assert not store.token_revoked(info.id)

        revoked = store.revoke_token(info.id, now=NOW + 20)
        assert revoked.revoked_at == NOW + 20 and revoked.last_used_at == NOW + 10
        assert store.token_revoked(info.id)
        assert store.get_token(other.id) == other  # the other token is untouched


def test_redeem_refusals_name_the_reason(db_url: str) -> None:
    with open_store(db_url) as store:
        live, live_info = store.create_token("alice", ["a/*"], ttl_s=DAY, now=NOW)
        gone, gone_info = store.create_token("alice", ["a/*"], ttl_s=DAY, now=NOW)
        store.revoke_token(gone, now=NOW + 1)  # by the token itself
        cases = [
            (gone, NOW + 2, "revoked", gone_info.id),
            (live, NOW + DAY, "expired", live_info.id),  # expires_at is exclusive
            (live, NOW + 2 * DAY, "expired", live_info.id),
            (tk.new_token(), NOW, "unknown", None),
            ("not a token", NOW, "unknown", None),
        ]
        for token, when, reason, token_id in cases:
            with pytest.raises(TokenRejected) as err:
                store.redeem_token(token, now=when)
            assert (err.value.reason, err.value.token_id) == (reason, token_id)
        # A refused redeem writes nothing.
        assert store.get_token(live_info.id).last_used_at is None
        assert store.redeem_token(live, now=NOW + DAY - 1).last_used_at == NOW + DAY - 1


def test_revoke_is_idempotent_and_unknown_is_an_error(db_url: str) -> None:
    with open_store(db_url) as store:
        secret, info = store.create_token("alice", ["a/*"], now=NOW)
        assert store.revoke_token(secret, now=NOW + 5).revoked_at == NOW + 5
        assert store.revoke_token(info.id, now=NOW + 9).revoked_at == NOW + 5  # first time kept
        with pytest.raises(UnknownToken, match="no token tok_00000000"):
            store.revoke_token("tok_00000000")
        with pytest.raises(UnknownToken, match="no token that join token"):
            store.revoke_token(tk.new_token())
        with pytest.raises(UnknownToken, match="neither a token id"):
            store.revoke_token("alice")
        assert store.token_revoked("tok_00000000")  # unknown: fail closed


def test_bad_input_is_refused_before_writing(db_url: str) -> None:
    with open_store(db_url) as store:
        for kwargs in (
            {"owner": "", "models": ["a"]},
            {"owner": "a", "models": []},
            {"owner": "a", "models": ["has space"]},
            {"owner": "a", "models": ["a"], "roles": ["admin"]},
            {"owner": "a", "models": ["a"], "ttl_s": 0},
        ):
            with pytest.raises(ValueError):
                store.create_token(**kwargs)
        assert store.list_tokens() == []


def test_concurrent_redeems_from_two_stores_keep_last_used_consistent(db_url: str) -> None:
    """Two stores (two engines: as two nodes on one database) redeem the same token from
    threads with interleaved clocks: every redeem succeeds and last_used_at ends at the
    latest time, never moved back by a redeem that committed later with an older clock."""
    with open_store(db_url) as setup:
        secret, info = setup.create_token("alice", ["a/*"], now=NOW)
    stores = [open_store(db_url), open_store(db_url)]
    results: list[list[tuple[float, float]]] = [[], []]
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            for k in range(25):
                when = NOW + 1 + k * 2 + i  # store 0: odd offsets, store 1: even offsets
                got = stores[i].redeem_token(secret, now=when)
                results[i].append((when, got.last_used_at))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for s in stores:
        s.close()
    assert not errors, errors
    assert all(len(r) == 25 for r in results)
    assert all(seen >= when for r in results for when, seen in r)
    with open_store(db_url) as store:
        assert store.get_token(info.id).last_used_at == NOW + 1 + 24 * 2 + 1


REDEEMER = """
import json, sys
from opentela.store import open_store
store = open_store(sys.argv[1])
out = [store.redeem_token(sys.argv[2], now=float(t)).last_used_at for t in sys.argv[3:]]
print(json.dumps(out))
"""


def test_concurrent_redeems_from_two_processes(db_url: str) -> None:
    with open_store(db_url) as store:
        secret, info = store.create_token("alice", ["a/*"], now=NOW)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", REDEEMER, db_url, secret]
            + [str(NOW + 1 + 2 * k + i) for k in range(20)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in (0, 1)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [e for _, e in outs]
    for i, (out, _) in enumerate(outs):
        seen = json.loads(out)
        assert all(s >= NOW + 1 + 2 * k + i for k, s in enumerate(seen))
    with open_store(db_url) as store:
        assert store.get_token(info.id).last_used_at == NOW + 1 + 2 * 19 + 1


def test_migrates_an_empty_database_and_reopening_is_a_noop(db_url: str) -> None:
    with open_store(db_url) as store:
        store.create_token("alice", ["a/*"], now=NOW)
        cols = {c["name"] for c in inspect(store.engine).get_columns("join_tokens")}
        assert cols == {c.name for c in join_tokens.columns}
        with store.engine.connect() as conn:
            assert conn.execute(text("SELECT version FROM schema_version")).all() == [
                (SCHEMA_VERSION,)
            ]
    with open_store(db_url) as store:
        assert migrate_mod.migrate(store.engine, store.where) == (SCHEMA_VERSION,) * 2
        assert len(store.list_tokens()) == 1
        with store.engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM schema_version")).scalar() == 1


def test_two_openers_of_a_new_database_migrate_once(db_url: str) -> None:
    opened: list[object] = []
    errors: list[BaseException] = []

    def open_one() -> None:
        try:
            opened.append(open_store(db_url))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    for s in opened:
        s.close()  # type: ignore[attr-defined]
    with open_store(db_url) as store, store.engine.connect() as conn:
        assert conn.execute(text("SELECT version FROM schema_version")).all() == [(SCHEMA_VERSION,)]


def test_a_newer_schema_is_refused(db_url: str) -> None:
    with open_store(db_url) as store, store.engine.begin() as conn:
        conn.execute(text("UPDATE schema_version SET version = 99"))
    with pytest.raises(SchemaTooNew, match=r"schema version 99, newer than this opentela"):
        open_store(db_url)


def test_a_failing_migration_leaves_the_database_as_it_was(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with open_store(db_url) as store:
        store.create_token("alice", ["a/*"], now=NOW)
    broken = Migration("broken", ("CREATE TABLE extra (x INTEGER)", "SELECT * FROM no_such_table"))
    monkeypatch.setattr(migrate_mod, "MIGRATIONS", (*MIGRATIONS, broken))
    monkeypatch.setattr(migrate_mod, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    with pytest.raises(StoreError, match="cannot open database"):
        open_store(db_url)
    fixed = Migration("fixed", ("CREATE TABLE extra (x INTEGER)",))
    monkeypatch.setattr(migrate_mod, "MIGRATIONS", (*MIGRATIONS, fixed))
    with open_store(db_url) as store:  # the broken one left nothing: the fixed one applies
        assert inspect(store.engine).has_table("extra")
        assert len(store.list_tokens()) == 1


def test_sqlite_store_file_is_private_and_in_wal_mode(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with open_store(home) as store:
        store.create_token("alice", ["a/*"])
        with store.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 1000
        assert (home / "opentela.db").stat().st_mode & 0o777 == 0o600
        assert home.stat().st_mode & 0o777 == 0o700


def test_sqlite_home_that_is_a_file_is_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / "home").write_text("")
    with pytest.raises(StoreError, match="is a file, not a directory"):
        open_store(tmp_path / "home")


@pytest.mark.real_component
def test_postgres_url_forms_reach_the_same_database(pg_url: str) -> None:
    with open_store(pg_url) as a:
        a.create_token("alice", ["a/*"], now=NOW)
    for form in (
        pg_url.replace("postgresql://", "postgres://"),
        pg_url.replace("postgresql://", "postgresql+psycopg://"),
    ):
        with open_store(form) as b:
            assert [t.owner for t in b.list_tokens()] == ["alice"]
