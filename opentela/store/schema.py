"""The store's tables, and the migrations that build them, in order.

Migration ``n`` (1-based) takes a database at schema version ``n - 1`` to ``n``; the version
is kept in ``schema_version``. Migrations are frozen once released: a change is a new entry at
the end, never an edit (a database out there has already run the old one). Each step is one
DDL statement portable between SQLite and PostgreSQL, or a function of the connection for
anything else. The ``Table`` objects below describe the latest version; queries use them, and
``tests/store`` checks that the migrated database has exactly their columns.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Column, Connection, Double, Integer, MetaData, String, Table, Text

Step = str | Callable[[Connection], None]


@dataclass(frozen=True)
class Migration:
    description: str
    steps: tuple[Step, ...]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        "join tokens (issue 9)",
        (
            """
            CREATE TABLE join_tokens (
                id VARCHAR(32) PRIMARY KEY,
                token_hash VARCHAR(64) NOT NULL UNIQUE,
                owner TEXT NOT NULL,
                models TEXT NOT NULL,
                roles TEXT NOT NULL,
                expires_at DOUBLE PRECISION NOT NULL,
                created_at DOUBLE PRECISION NOT NULL,
                last_used_at DOUBLE PRECISION,
                revoked_at DOUBLE PRECISION
            )
            """,
        ),
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)
"""The version this code writes and reads."""

metadata = MetaData()

schema_version = Table("schema_version", metadata, Column("version", Integer, nullable=False))

join_tokens = Table(
    "join_tokens",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("owner", Text, nullable=False),
    Column("models", Text, nullable=False),  # JSON list of glob patterns
    Column("roles", Text, nullable=False),  # JSON list of roles
    Column("expires_at", Double, nullable=False),  # times: epoch seconds
    Column("created_at", Double, nullable=False),
    Column("last_used_at", Double),
    Column("revoked_at", Double),
)
