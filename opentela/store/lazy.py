"""A node's store that loads SQLAlchemy only when something uses it.

Why: SQLAlchemy, its SQLite dialect and the engine cost a node ~13.6 MB of RSS (of ~115), and
most nodes never touch their store: a worker serves requests that entries forwarded over
libp2p, and usage is counted by the node whose HTTP edge took the request. So a node opens
its SQLite store with :func:`open_node_store`: the mistakes a user can make are still reported
at start (the home is not a directory, the file cannot be created or opened, a database
written by a newer opentela), with the stdlib ``sqlite3`` module and the same messages;
SQLAlchemy loads, and the schema is migrated, on the first call of a :class:`Store` method
(the node calls them from worker threads, hence the lock). PostgreSQL is opened at once, as
before: several heads share it and an unreachable server must fail the start.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

from .files import StoreError, prepare_sqlite_file
from .url import resolve, sqlite_path

KNOWN_SCHEMA_VERSION = 2
"""``schema.SCHEMA_VERSION``, without importing SQLAlchemy (a unit test keeps them equal)."""


def open_node_store(url_or_home: str | Path) -> Any:
    """The store ``open_store`` would return, loaded on first use when it is a SQLite file.
    Raises StoreError (``SchemaTooNew`` included) at once for what can be checked cheaply."""
    try:
        url = resolve(url_or_home)
    except ValueError as exc:
        raise StoreError(str(exc)) from exc
    path = sqlite_path(url)
    if path is None:
        from .store import open_store

        return open_store(url_or_home)
    prepare_sqlite_file(path)
    version = _sqlite_schema_version(path)
    if version is not None and version > KNOWN_SCHEMA_VERSION:
        from .migrate import _check

        _check(version, str(path))  # raises SchemaTooNew, with its usual message
    return LazyStore(url_or_home, str(path))


def _sqlite_schema_version(path: Path) -> int | None:
    """The file's schema version, read-only; None for a new (empty) database."""
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10.0)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open database {path}: {exc}") from exc
    try:
        row = conn.execute("SELECT version FROM schema_version").fetchone()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return None
        raise StoreError(f"cannot open database {path}: {exc}") from exc
    except sqlite3.DatabaseError as exc:  # not a database at all
        raise StoreError(f"cannot open database {path}: {exc}") from exc
    finally:
        conn.close()
    return None if row is None else int(row[0])


class LazyStore:
    """Stands for a :class:`~.store.Store`; opens it on the first attribute used."""

    def __init__(self, url_or_home: str | Path, where: str) -> None:
        self._url_or_home = url_or_home
        self.where = where
        self._store: Any = None
        self._lock = threading.Lock()
        self._closed = False

    @property
    def opened(self) -> bool:
        return self._store is not None

    def _open(self) -> Any:
        with self._lock:
            if self._store is None:
                if self._closed:
                    raise StoreError(f"database {self.where}: the store is closed")
                from .store import open_store

                self._store = open_store(self._url_or_home)
            return self._store

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self._open(), name)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._store is not None:
                self._store.close()

    def __enter__(self) -> LazyStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
