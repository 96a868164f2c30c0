"""The store's tests run each case on SQLite and on a real PostgreSQL server.

``postgres_server`` (in tests/conftest.py, shared with tests/integration) starts one with
scripts/postgres-up.sh (installing Debian's package if needed) for the session, and stops it afterwards unless it was already running. Every test
gets a database of its own. The PostgreSQL cases are marked ``real_component``: under CI=true
a missing server fails them instead of skipping them (tests/conftest.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(
    params=["sqlite", pytest.param("postgresql", marks=pytest.mark.real_component)],
)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where a store test opens its store: a node home on SQLite, or a PostgreSQL URL."""
    if request.param == "sqlite":
        return str(tmp_path / "home")
    return request.getfixturevalue("pg_url")
