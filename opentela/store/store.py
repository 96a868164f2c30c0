"""``Store``: the node's one persistent store (join tokens now; API keys, quotas and usage
next, in the same database and the same migration list).

Every method is synchronous and thread-safe: the node calls it from trio through
``trio.to_thread.run_sync``; the CLI calls it directly, also while a node has the database
open. Each write commits before the method returns, so a graceful stop (or a crash) loses
nothing that a method reported done.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from ..access import token as tk
from . import tokens
from .engine import IMMEDIATE, StoreError, make_engine
from .migrate import migrate
from .schema import join_tokens
from .url import redact, resolve

T = TypeVar("T")


class UnknownToken(StoreError, LookupError):
    pass


def _one_line(exc: SQLAlchemyError) -> str:
    """The driver's own message, first line only (psycopg's carry DETAIL/HINT lines)."""
    orig = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    text = str(orig).strip().splitlines()
    return text[0] if text else type(orig).__name__


class Store:
    def __init__(self, engine: Engine, where: str) -> None:
        self.engine = engine
        self.where = where
        """The database, fit for messages (password hidden)."""

    # -- plumbing --------------------------------------------------------------------------

    @contextmanager
    def _tx(self, write: bool) -> Iterator[Connection]:
        try:
            conn = self.engine.connect()
            if write:
                conn = conn.execution_options(**{IMMEDIATE: True})
            with conn, conn.begin():
                yield conn
        except SQLAlchemyError as exc:
            raise StoreError(f"database {self.where}: {_one_line(exc)}") from exc

    def _read(self, fn: Callable[[Connection], T]) -> T:
        with self._tx(write=False) as conn:
            return fn(conn)

    def _write(self, fn: Callable[[Connection], T]) -> T:
        with self._tx(write=True) as conn:
            return fn(conn)

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- join tokens -----------------------------------------------------------------------

    def create_token(
        self,
        owner: str,
        models: Iterable[str],
        roles: Iterable[str] = tk.DEFAULT_ROLES,
        ttl_s: float = 30 * 86400,
        now: float | None = None,
    ) -> tuple[str, tk.TokenInfo]:
        """A new token (returned once, never stored) and what is stored about it. Raises
        ValueError for a bad owner, pattern, role or TTL."""
        now = time.time() if now is None else float(now)
        if not ttl_s > 0:
            raise ValueError(f"a token's TTL must be positive, not {ttl_s}")
        values = tk.TokenInfo(
            id="",
            owner=tk.parse_owner(owner),
            models=tk.parse_patterns(models),
            roles=tk.parse_roles(roles),
            expires_at=now + ttl_s,
            created_at=now,
        )
        for _ in range(8):  # an 8-hex id collides about once per 10^5 tokens: draw again
            token, token_id = tk.new_token(), tk.new_token_id()
            if self._write(lambda c, t=token, i=token_id: tokens.insert_token(c, t, i, values)):
                return token, tk.TokenInfo(**{**values.__dict__, "id": token_id})
        raise StoreError("could not draw an unused token id; try again")

    def list_tokens(self) -> list[tk.TokenInfo]:
        """Every token, revoked and expired ones included, oldest first."""
        return self._read(tokens.list_all)

    def get_token(self, token_id: str) -> tk.TokenInfo | None:
        return self._read(lambda c: tokens.by_id(c, token_id))

    def revoke_token(self, id_or_token: str, now: float | None = None) -> tk.TokenInfo:
        """Revoke by id (``tok_...``) or by the token itself (``otj_...``). Revoking twice is
        not an error: the result keeps the first ``revoked_at``. Raises UnknownToken."""
        now = time.time() if now is None else now
        text = id_or_token.strip()
        if tk.is_token(text):
            key, shown = join_tokens.c.token_hash == tk.hash_token(text), "that join token"
        elif tk.is_token_id(text):
            key, shown = join_tokens.c.id == text, text
        else:
            raise UnknownToken(
                f"{text[:12]!r} is neither a token id (tok_ and 8 hex digits, see "
                "`opentela-node token list`) nor a join token (otj_...)"
            )
        found = self._write(lambda c: tokens.revoke(c, key, now))
        if found is None:
            raise UnknownToken(f"no token {shown} in {self.where}")
        return found

    def redeem_token(self, token_text: str, now: float | None = None) -> tk.TokenInfo:
        """What the token admits, with ``last_used_at`` set to ``now``. Raises
        :class:`TokenRejected` (reason unknown / revoked / expired); a malformed token is
        ``unknown``."""
        now = time.time() if now is None else now
        try:
            token = tk.parse_token(token_text)
        except ValueError:
            raise tk.TokenRejected("unknown") from None
        return self._write(lambda c: tokens.redeem(c, tk.hash_token(token), now))

    def token_revoked(self, token_id: str) -> bool:
        """True if the token is revoked, or unknown to this store (fail closed: a grant from
        a token this store does not hold is not renewed)."""
        found = self.get_token(token_id)
        return found is None or found.revoked_at is not None


def open_store(url_or_home: str | Path, busy_timeout_s: float | None = None) -> Store:
    """The store at a database URL (``postgresql://...``, ``sqlite:///...``) or, for a node
    home directory, ``<home>/opentela.db``; migrated to this code's schema on the way.
    Raises StoreError (SchemaTooNew for a database written by a newer opentela)."""
    try:
        url = resolve(url_or_home)
    except ValueError as exc:
        raise StoreError(str(exc)) from exc
    where = (
        redact(str(url_or_home)) if "://" in str(url_or_home) else url.removeprefix("sqlite:///")
    )
    engine = make_engine(url) if busy_timeout_s is None else make_engine(url, busy_timeout_s)
    try:
        migrate(engine, where)
    except StoreError:
        engine.dispose()
        raise
    except SQLAlchemyError as exc:
        engine.dispose()
        raise StoreError(f"cannot open database {where}: {_one_line(exc)}") from exc
    return Store(engine, where)
