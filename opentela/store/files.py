"""What the store needs before any database driver loads: its error, and its SQLite file.

Kept free of SQLAlchemy so ``lazy.py`` can check a node's store at start without loading it.
"""

from __future__ import annotations

import os
from pathlib import Path


class StoreError(Exception):
    """The store cannot be opened or used; the message is one line fit for the user."""


def prepare_sqlite_file(path: Path) -> None:
    """The directory (0700) and an empty database file (0600): the store holds hashes of
    secrets, and SQLite gives its -wal and -shm files the database file's mode."""
    parent = path.parent
    if parent.exists() and not parent.is_dir():
        raise StoreError(f"{parent} is a file, not a directory")
    try:
        parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        os.close(fd)
    except IsADirectoryError as exc:
        raise StoreError(f"{path} is a directory, not a database file") from exc
    except OSError as exc:
        raise StoreError(f"cannot open {path}: {exc.strerror or type(exc).__name__}") from exc
