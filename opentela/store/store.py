"""``Store``: the node's one persistent store: join tokens (issue 9), API keys and usage
(issue 11), in one database and one migration list.

Every method is synchronous and thread-safe: the node calls it from trio through
``trio.to_thread.run_sync``; the CLI calls it directly, also while a node has the database
open. Each write commits before the method returns, so a graceful stop (or a crash) loses
nothing that a method reported done.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TypeVar

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from ..access import keys as ak
from ..access import quota
from ..access import token as tk
from . import keys, tokens
from .engine import IMMEDIATE, make_engine
from .files import StoreError
from .migrate import migrate
from .schema import api_keys, join_tokens
from .url import redact, resolve
from .usage import UsageRow, utc_day

T = TypeVar("T")


class UnknownToken(StoreError, LookupError):
    pass


class UnknownKey(StoreError, LookupError):
    pass


class KeyRevoked(StoreError):
    """The operation needs a key that is not revoked (rotating a revoked key)."""


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
        self._pruned_minute = 0  # usage_minute is pruned at most once a minute per store

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

    # -- API keys (issue 11) ---------------------------------------------------------------

    def create_key(
        self,
        owner: str,
        models: Iterable[str] = (),
        rpm: int | None = None,
        tpm: int | None = None,
        budget_tokens: int | None = None,
        budget_period: str | None = None,
        admin: bool = False,
        now: float | None = None,
    ) -> tuple[str, ak.KeyInfo]:
        """A new key (returned once, never stored) and what is stored about it. Raises
        ValueError for a bad owner, pattern or limit (:func:`~..access.keys.parse_limits`)."""
        now = time.time() if now is None else float(now)
        rpm, tpm, budget_tokens, budget_period = ak.parse_limits(
            rpm, tpm, budget_tokens, budget_period
        )
        values = ak.KeyInfo(
            id="",
            prefix="",
            owner=ak.parse_owner(owner),
            models=ak.parse_models(models),
            rpm=rpm,
            tpm=tpm,
            budget_tokens=budget_tokens,
            budget_period=budget_period,
            admin=bool(admin),
            created_at=now,
        )
        return self._write(lambda c: self._insert_new_key(c, values))

    def _insert_new_key(self, conn: Connection, values: ak.KeyInfo) -> tuple[str, ak.KeyInfo]:
        for _ in range(8):  # an 8-hex id collides about once per 10^5 keys: draw again
            text = ak.new_key()
            info = replace(values, id=ak.new_key_id(), prefix=ak.display_prefix(text))
            if keys.insert_key(conn, text, info):
                return text, info
        raise StoreError("could not draw an unused key id; try again")

    def _key_where(self, id_or_text: str) -> tuple[object, str]:
        text = id_or_text.strip()
        if ak.looks_like_key(text):
            return api_keys.c.key_hash == ak.key_hash(text), "that API key"
        if ak.is_key_id(text):
            return api_keys.c.id == text, text
        raise UnknownKey(
            f"{text[:12]!r} is neither a key id (key_ and 8 hex digits, see "
            "`opentela-node keys list`) nor an API key (sk-otela-...)"
        )

    def list_keys(self) -> list[ak.KeyInfo]:
        """Every key, revoked ones included, oldest first."""
        return self._read(keys.list_all)

    def get_key(self, id_or_text: str) -> ak.KeyInfo:
        """By id (``key_...``) or by the key itself. Raises UnknownKey."""
        where, shown = self._key_where(id_or_text)
        found = self._read(lambda c: keys.find(c, where))
        if found is None:
            raise UnknownKey(f"no key {shown} in {self.where}")
        return found

    def revoke_key(self, id_or_text: str, now: float | None = None) -> ak.KeyInfo:
        """Revoke by id or by the key itself; revoking twice keeps the first ``revoked_at``.
        Raises UnknownKey."""
        now = time.time() if now is None else float(now)
        where, shown = self._key_where(id_or_text)
        found = self._write(lambda c: keys.revoke(c, where, now))
        if found is None:
            raise UnknownKey(f"no key {shown} in {self.where}")
        return found

    def rotate_key(self, id_or_text: str, now: float | None = None) -> tuple[str, ak.KeyInfo]:
        """A new key with the old one's owner and settings, and the old one revoked, in one
        transaction (never both valid after a failure, never neither). Usage and budgets
        are per key id: the new key's budget starts afresh. Raises UnknownKey, or KeyRevoked
        for a key already revoked (a leaked, revoked key must not be revived by a rotation)."""
        now = time.time() if now is None else float(now)
        where, shown = self._key_where(id_or_text)

        def rotate(conn: Connection) -> tuple[str, ak.KeyInfo]:
            old = keys.find(conn, where)
            if old is None:
                raise UnknownKey(f"no key {shown} in {self.where}")
            if old.revoked_at is not None:
                raise KeyRevoked(f"key {old.id} is revoked; create a new one (keys create)")
            keys.revoke(conn, api_keys.c.id == old.id, now)
            return self._insert_new_key(
                conn, replace(old, created_at=now, last_used_at=None, revoked_at=None)
            )

        return self._write(rotate)

    def lookup_key(self, text: str) -> ak.KeyInfo | None:
        """The key ``text`` is, by its hash (a revoked key comes back with ``revoked_at``
        set); None for an unknown or malformed key (no query for the latter)."""
        text = text.strip()
        if not ak.looks_like_key(text):
            return None
        digest = ak.key_hash(text)
        return self._read(lambda c: keys.find(c, api_keys.c.key_hash == digest))

    def touch_keys(self, last_used: dict[str, float]) -> None:
        """Batched ``last_used_at`` writes ({key id: time}); a time only moves forward."""
        if last_used:
            self._write(lambda c: keys.touch(c, last_used))

    # -- usage (issue 11) ------------------------------------------------------------------

    def add_usage(self, rows: Iterable[UsageRow]) -> None:
        """Add ``rows`` to ``usage_daily`` and ``usage_minute`` in ONE transaction: summed
        per primary key and upserted in key order (concurrent writers never deadlock), all
        or nothing (a failed batch can be retried whole without counting twice). Prunes
        ``usage_minute`` rows older than 2 h, at most once a minute per store."""
        rows = list(rows)
        if not rows:
            return
        newest = max(r.minute for r in rows)

        def write(conn: Connection) -> bool:
            keys.add_usage(conn, rows)
            if newest > self._pruned_minute:
                keys.prune_minutes(conn, newest - keys.MINUTE_KEEP)
                return True
            return False

        if self._write(write):
            self._pruned_minute = max(self._pruned_minute, newest)

    def window_usage(self, key_id: str, now: float) -> tuple[float, float]:
        """(requests, tokens) in the 60 s before ``now``, across every entry node writing to
        this database: the current minute's bucket plus the previous one weighted by the
        part of it still inside the window (:func:`~..access.quota.weighted`)."""
        cur = quota.minute(now)
        got = self._read(lambda c: keys.minute_counts(c, key_id, (cur - 1, cur)))
        prev, this = got.get(cur - 1, (0, 0)), got.get(cur, (0, 0))
        return (
            quota.weighted(prev[0], this[0], now),
            quota.weighted(prev[1], this[1], now),
        )

    def budget_used(self, key_id: str, since: float) -> int:
        """Prompt + completion tokens of the key on UTC days from ``since``'s day on."""
        day = utc_day(since)
        return self._read(lambda c: keys.tokens_since(c, key_id, day))

    def usage_by_model(
        self, days: int, now: float, owner: str | None = None, key_id: str | None = None
    ) -> list[dict[str, object]]:
        """Per model over the last ``days`` UTC days (today included): serving-api's
        ``/v1/profile/usage`` rows (``model, requests, prompt_tokens, completion_tokens,
        total_tokens, last_active`` as epoch seconds) plus ``errors, aborted, estimated``;
        most tokens first."""
        since = utc_day(now - (max(1, int(days)) - 1) * 86400)
        return self._read(lambda c: keys.by_model(c, since, owner, key_id))

    def statistics(self, days: int, now: float) -> list[dict[str, object]]:
        """Pool-wide per UTC day and model over the last ``days`` days: ``day, model,
        requests, prompt_tokens, completion_tokens, total_tokens, errors, aborted,
        estimated``; by day, then model."""
        since = utc_day(now - (max(1, int(days)) - 1) * 86400)
        return self._read(lambda c: keys.by_model_and_day(c, since))


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
