"""The store's tests run each case on SQLite and on a real PostgreSQL server.

``postgres_server`` starts one with scripts/postgres-up.sh (installing Debian's package if
needed) for the session, and stops it afterwards unless it was already running. Every test
gets a database of its own. The PostgreSQL cases are marked ``real_component``: under CI=true
a missing server fails them instead of skipping them (tests/conftest.py).
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PG_PORT = int(os.environ.get("OPENTELA_PG_PORT", "55432"))


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """URL of the scripts/postgres-up.sh database (the server's; tests use ``pg_url``)."""
    was_running = _listening(PG_PORT)
    up = subprocess.run(
        ["bash", str(REPO / "scripts" / "postgres-up.sh")],
        capture_output=True,
        text=True,
        timeout=900,  # a first apt-get install of postgresql
        stdin=subprocess.DEVNULL,
    )
    if up.returncode != 0 or not up.stdout.strip():
        last = (up.stderr.strip().splitlines() or ["no output"])[-1]
        pytest.skip(f"no PostgreSQL: scripts/postgres-up.sh failed: {last}")
    yield up.stdout.strip().splitlines()[-1]
    if not was_running:
        subprocess.run(
            ["bash", str(REPO / "scripts" / "postgres-down.sh")],
            capture_output=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )


@pytest.fixture
def pg_url(postgres_server: str) -> Iterator[str]:
    """A fresh, empty database on the test server, dropped after the test."""
    import psycopg

    base = postgres_server.rsplit("/", 1)[0]
    name = f"t_{secrets.token_hex(6)}"
    with psycopg.connect(f"{base}/postgres", autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    yield f"{base}/{name}"
    with psycopg.connect(f"{base}/postgres", autocommit=True) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(
    params=["sqlite", pytest.param("postgresql", marks=pytest.mark.real_component)],
)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where a store test opens its store: a node home on SQLite, or a PostgreSQL URL."""
    if request.param == "sqlite":
        return str(tmp_path / "home")
    return request.getfixturevalue("pg_url")
