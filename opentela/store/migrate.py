"""Bring a database to :data:`~.schema.SCHEMA_VERSION`, once, whoever opens it first.

All pending migrations run in one transaction with the version update: a database is at
one version or the next, never between. Two processes opening a new database at once are
serialized (SQLite: ``BEGIN IMMEDIATE``; PostgreSQL: a transaction-scoped advisory lock), and
the second finds nothing left to do. A database newer than this code is refused, not
downgraded or half-read.
"""

from __future__ import annotations

from sqlalchemy import Connection, Engine, insert, select, text, update

from .engine import IMMEDIATE
from .files import StoreError
from .schema import MIGRATIONS, SCHEMA_VERSION, Migration, schema_version

_PG_LOCK_KEY = 0x07E1A5C4E3A  # any constant; names "the opentela schema" among advisory locks


class SchemaTooNew(StoreError):
    pass


def current_version(conn: Connection) -> int | None:
    """The database's schema version; None when it has no ``schema_version`` row yet."""
    if not conn.dialect.has_table(conn, "schema_version"):
        return None
    return conn.execute(select(schema_version.c.version)).scalar_one_or_none()


def _check(version: int, where: str) -> None:
    if version > SCHEMA_VERSION:
        raise SchemaTooNew(
            f"database {where} has schema version {version}, newer than this opentela "
            f"understands ({SCHEMA_VERSION}); upgrade opentela-node, or use another --db"
        )


def _run(conn: Connection, migration: Migration) -> None:
    for step in migration.steps:
        if isinstance(step, str):
            conn.exec_driver_sql(step)
        else:
            step(conn)


def migrate(engine: Engine, where: str) -> tuple[int, int]:
    """(version found, version now). ``where`` names the database in errors."""
    with engine.connect() as conn:  # fast path: already current, no write lock taken
        with conn.begin():
            found = current_version(conn)
        if found is not None:
            _check(found, where)
            if found == SCHEMA_VERSION:
                return found, found
    with engine.connect().execution_options(**{IMMEDIATE: True}) as conn, conn.begin():
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK_KEY})
        found = current_version(conn)
        if found is None:
            if not conn.dialect.has_table(conn, "schema_version"):
                conn.exec_driver_sql("CREATE TABLE schema_version (version INTEGER NOT NULL)")
            conn.execute(insert(schema_version).values(version=0))
            found = 0
        _check(found, where)
        for migration in MIGRATIONS[found:]:
            _run(conn, migration)
        if found != SCHEMA_VERSION:
            conn.execute(update(schema_version).values(version=SCHEMA_VERSION))
        return found, SCHEMA_VERSION
