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

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Double,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
)

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
    Migration(
        "API keys and usage (issue 11)",
        (
            """
            CREATE TABLE api_keys (
                id VARCHAR(32) PRIMARY KEY,
                key_hash VARCHAR(64) NOT NULL UNIQUE,
                prefix VARCHAR(32) NOT NULL,
                owner TEXT NOT NULL,
                models TEXT NOT NULL,
                rpm BIGINT,
                tpm BIGINT,
                budget_tokens BIGINT,
                budget_period VARCHAR(8),
                admin INTEGER NOT NULL DEFAULT 0,
                created_at DOUBLE PRECISION NOT NULL,
                last_used_at DOUBLE PRECISION,
                revoked_at DOUBLE PRECISION
            )
            """,
            """
            CREATE TABLE usage_daily (
                day VARCHAR(10) NOT NULL,
                key_id VARCHAR(32) NOT NULL,
                owner TEXT NOT NULL,
                model VARCHAR(512) NOT NULL,
                requests BIGINT NOT NULL DEFAULT 0,
                prompt_tokens BIGINT NOT NULL DEFAULT 0,
                completion_tokens BIGINT NOT NULL DEFAULT 0,
                errors BIGINT NOT NULL DEFAULT 0,
                aborted BIGINT NOT NULL DEFAULT 0,
                estimated BIGINT NOT NULL DEFAULT 0,
                last_active DOUBLE PRECISION NOT NULL,
                PRIMARY KEY (day, key_id, model)
            )
            """,
            "CREATE INDEX usage_daily_key_day ON usage_daily (key_id, day)",
            "CREATE INDEX usage_daily_owner_day ON usage_daily (owner, day)",
            """
            CREATE TABLE usage_minute (
                key_id VARCHAR(32) NOT NULL,
                minute BIGINT NOT NULL,
                requests BIGINT NOT NULL DEFAULT 0,
                tokens BIGINT NOT NULL DEFAULT 0,
                PRIMARY KEY (key_id, minute)
            )
            """,
            "CREATE INDEX usage_minute_minute ON usage_minute (minute)",
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

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("prefix", String(32), nullable=False),  # the key's first characters, for display
    Column("owner", Text, nullable=False),
    Column("models", Text, nullable=False),  # JSON list of glob patterns; [] = every model
    Column("rpm", BigInteger),  # limits: NULL = none
    Column("tpm", BigInteger),
    Column("budget_tokens", BigInteger),
    Column("budget_period", String(8)),  # day | week | month | total
    Column("admin", Integer, nullable=False),  # 0/1
    Column("created_at", Double, nullable=False),
    Column("last_used_at", Double),
    Column("revoked_at", Double),
)

usage_daily = Table(
    "usage_daily",
    metadata,
    Column("day", String(10), nullable=False),  # YYYY-MM-DD, UTC
    Column("key_id", String(32), nullable=False),  # "-" with --auth off
    Column("owner", Text, nullable=False),
    Column("model", String(512), nullable=False),
    Column("requests", BigInteger, nullable=False),
    Column("prompt_tokens", BigInteger, nullable=False),
    Column("completion_tokens", BigInteger, nullable=False),
    Column("errors", BigInteger, nullable=False),
    Column("aborted", BigInteger, nullable=False),
    Column("estimated", BigInteger, nullable=False),  # requests counted from content
    Column("last_active", Double, nullable=False),
    PrimaryKeyConstraint("day", "key_id", "model"),
)

usage_minute = Table(
    "usage_minute",
    metadata,
    Column("key_id", String(32), nullable=False),
    Column("minute", BigInteger, nullable=False),  # epoch // 60
    Column("requests", BigInteger, nullable=False),
    Column("tokens", BigInteger, nullable=False),  # prompt + completion
    PrimaryKeyConstraint("key_id", "minute"),
)
