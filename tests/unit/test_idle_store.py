"""A node's SQLite store loads SQLAlchemy on first use (``store/lazy.py``), and still reports
a user's mistakes at start."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from opentela.store import SchemaTooNew, StoreError
from opentela.store.lazy import KNOWN_SCHEMA_VERSION, LazyStore, open_node_store
from opentela.store.schema import SCHEMA_VERSION


def test_known_schema_version_follows_the_schema() -> None:
    assert KNOWN_SCHEMA_VERSION == SCHEMA_VERSION


def test_opening_a_node_store_loads_no_sqlalchemy(tmp_path: Path) -> None:
    code = (
        "import sys; from opentela.store.lazy import open_node_store; "
        f"s = open_node_store({str(tmp_path)!r}); "
        "print('sqlalchemy' in sys.modules, s.opened); s.list_tokens(); "
        "print('sqlalchemy' in sys.modules, s.opened); s.close()"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.split() == ["False", "False", "True", "True"], out.stderr
    assert (tmp_path / "opentela.db").exists()


def test_first_use_migrates_and_the_store_works(tmp_path: Path) -> None:
    store = open_node_store(tmp_path)
    assert isinstance(store, LazyStore) and not store.opened
    token, info = store.create_token("alice", ["*"])
    assert store.get_token(info.id) is not None and token
    store.close()
    with open_node_store(tmp_path) as again:  # an existing, current database
        assert [t.id for t in again.list_tokens()] == [info.id]


def test_a_newer_schema_is_refused_at_open(tmp_path: Path) -> None:
    open_node_store(tmp_path).list_tokens()  # create and migrate
    with sqlite3.connect(tmp_path / "opentela.db") as c:
        c.execute("UPDATE schema_version SET version = 99")
    with pytest.raises(SchemaTooNew, match=r"schema version 99, newer than this opentela"):
        open_node_store(tmp_path)


def test_mistakes_are_reported_at_open(tmp_path: Path) -> None:
    afile = tmp_path / "home"
    afile.write_text("")
    with pytest.raises(StoreError, match="is a file, not a directory"):
        open_node_store(afile)
    (tmp_path / "h2").mkdir()
    (tmp_path / "h2" / "opentela.db").write_bytes(b"not a database, but long enough" * 10)
    with pytest.raises(StoreError, match="cannot open database"):
        open_node_store(tmp_path / "h2")


def test_closed_before_use_is_a_noop_and_use_after_close_fails(tmp_path: Path) -> None:
    store = open_node_store(tmp_path)
    store.close()
    assert not store.opened
    with pytest.raises(StoreError, match="closed"):
        store.list_tokens()


def test_concurrent_first_uses_open_one_store(tmp_path: Path) -> None:
    store = open_node_store(tmp_path)
    seen: list[object] = []
    threads = [threading.Thread(target=lambda: seen.append(store._open())) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(seen) == 8 and len({id(s) for s in seen}) == 1
    store.close()


def test_a_postgres_url_is_opened_at_once() -> None:
    # No server on this port: the error comes from open, not from a first use later.
    with pytest.raises(StoreError):
        open_node_store("postgresql://nobody@127.0.0.1:1/none?connect_timeout=1")
