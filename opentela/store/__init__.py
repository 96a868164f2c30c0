"""The node's one persistent store: join tokens (issue 9), then API keys, quotas and usage.

SQLite at ``<home>/opentela.db`` by default, PostgreSQL with ``--db postgresql://...`` for
several heads sharing one pool. Importing this package is cheap; SQLAlchemy loads with the
first :func:`open_store`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..access.token import TokenInfo, TokenRejected

if TYPE_CHECKING:
    from .files import StoreError
    from .migrate import SchemaTooNew
    from .store import KeyRevoked, Store, UnknownKey, UnknownToken, open_store
    from .usage import UsageRow

__all__ = [
    "KeyRevoked",
    "SchemaTooNew",
    "Store",
    "StoreError",
    "TokenInfo",
    "TokenRejected",
    "UnknownKey",
    "UnknownToken",
    "UsageRow",
    "open_store",
]

_LAZY = {
    "StoreError": "files",
    "SchemaTooNew": "migrate",
    "Store": "store",
    "UnknownToken": "store",
    "UnknownKey": "store",
    "KeyRevoked": "store",
    "UsageRow": "usage",
    "open_store": "store",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
