"""Where the store lives, from ``--db`` or ``--home``. Pure string work (no SQLAlchemy import),
so ``opentela/config.py`` can check ``--db`` without loading a database driver."""

from __future__ import annotations

import urllib.parse
from pathlib import Path

DB_FILE = "opentela.db"
SCHEMES = ("postgresql", "postgres", "postgresql+psycopg", "sqlite")


def db_url_problem(url: str) -> str | None:
    """Why ``url`` cannot name the store, or None."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return "must be a URL: postgresql://user@host/dbname or sqlite:////path/opentela.db"
    if scheme not in SCHEMES:
        return (
            f"uses {scheme}://; the store is PostgreSQL (postgresql://user@host/dbname) "
            "or SQLite (sqlite:////path/opentela.db)"
        )
    if scheme == "sqlite":
        return (
            None
            if rest.startswith("/") and len(rest) > 1
            else "needs a path: sqlite:////abs/path.db"
        )
    parts = urllib.parse.urlsplit(url)
    if not parts.path.strip("/"):
        return "names no database: postgresql://user@host/dbname"
    return None


def resolve(url_or_home: str | Path) -> str:
    """The SQLAlchemy URL: a database URL as given (``postgresql://`` and ``postgres://`` use
    the psycopg 3 driver), anything else is a node home and means ``<home>/opentela.db``."""
    text = str(url_or_home)
    if "://" not in text:
        return "sqlite:///" + str(Path(text).expanduser() / DB_FILE)
    problem = db_url_problem(text)
    if problem:
        raise ValueError(f"database URL {redact(text)} {problem}")
    scheme, _, rest = text.partition("://")
    if scheme in ("postgresql", "postgres"):
        return "postgresql+psycopg://" + rest
    return text


def redact(url: str) -> str:
    """``url`` fit for a log line or an error: the password replaced by ``***``."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rpartition("@")
    user = (parts.username or "") + ":***"
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}@{netloc[2]}"))


def sqlite_path(url: str) -> Path | None:
    """The file of a ``sqlite:///`` URL (None for another database or an in-memory one)."""
    if not url.startswith("sqlite:///"):
        return None
    path = url.removeprefix("sqlite:///").split("?", 1)[0]
    return None if path in ("", ":memory:") else Path(path)
