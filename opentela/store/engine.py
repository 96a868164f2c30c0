"""One SQLAlchemy engine per store, set up so that several processes can share the database.

SQLite: WAL journal (readers never block the writer, so ``opentela-node token ...`` works
while a node has the file open), a busy timeout (a writer waits for the lock instead of
failing), ``synchronous=FULL`` (a commit is on disk when it returns: nothing is lost on any
stop, graceful or not), and transactions begun by us, not by Python's sqlite3 module, so that
DDL is transactional and a write transaction takes the write lock up front (``BEGIN
IMMEDIATE``: no deadlock between two readers that both want to write).
PostgreSQL: psycopg 3, a connect timeout (an unreachable server is an error, not a hang), and
``pool_pre_ping`` (a server restart costs one reconnect, not a failed request).
"""

from __future__ import annotations

import sqlite3
import time
from typing import Any

from sqlalchemy import Engine, create_engine, event, make_url

from .files import prepare_sqlite_file as _prepare_sqlite_file
from .url import sqlite_path

BUSY_TIMEOUT_S = 10.0
CONNECT_TIMEOUT_S = 10
IMMEDIATE = "opentela_immediate"
"""Execution option: on SQLite, begin the transaction with ``BEGIN IMMEDIATE``."""


def make_engine(url: str, busy_timeout_s: float = BUSY_TIMEOUT_S) -> Engine:
    if url.startswith("sqlite"):
        path = sqlite_path(url)
        if path is not None:
            _prepare_sqlite_file(path)
        engine = create_engine(
            url, connect_args={"timeout": busy_timeout_s, "check_same_thread": False}
        )
        _sqlite_events(engine, busy_timeout_s)
        return engine
    args = (
        {} if "connect_timeout" in make_url(url).query else {"connect_timeout": CONNECT_TIMEOUT_S}
    )
    return create_engine(url, connect_args=args, pool_pre_ping=True)


def _set_wal(cur: Any, busy_timeout_s: float) -> None:
    """``PRAGMA journal_mode = WAL``, retried while the file is locked: switching a new
    database to WAL takes an exclusive lock without calling the busy handler, so two nodes
    (or threads) opening a new file at once got "database is locked" at once (~1 in 75 runs of
    ``test_two_openers_of_a_new_database_migrate_once``). Once one of them has switched, the
    mode is in the file and the others only read it."""
    deadline = time.monotonic() + busy_timeout_s
    while True:
        try:
            cur.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.01)


def _sqlite_events(engine: Engine, busy_timeout_s: float) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we emit BEGIN ourselves (see _on_begin)
        cur = dbapi_conn.cursor()
        try:
            cur.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
            _set_wal(cur, busy_timeout_s)
            cur.execute("PRAGMA synchronous = FULL")
            cur.execute("PRAGMA foreign_keys = ON")
        finally:
            cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        immediate = conn.get_execution_options().get(IMMEDIATE, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")
