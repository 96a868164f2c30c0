"""The token commands against PostgreSQL: what one head's CLI writes, another head's store
sees at once (several heads sharing one database)."""

from __future__ import annotations

import json

import pytest
from conftest import run_cli

from opentela.access import token as tk
from opentela.store import TokenRejected, open_store

pytestmark = pytest.mark.real_component


def test_token_commands_on_postgres(pg_url: str) -> None:
    p = run_cli("token", "create", "--db", pg_url, "--owner", "alice", "--models", "alice/*")
    assert p.returncode == 0, p.stderr
    secret = p.stdout.splitlines()[-1]
    assert tk.is_token(secret)
    token_id = p.stderr.split()[1]

    with open_store(pg_url) as other_head:  # another head on the same database
        assert other_head.redeem_token(secret).id == token_id
        listed = run_cli("token", "list", "--json", env={"OTELA_DB": pg_url})
        assert listed.returncode == 0, listed.stderr
        (row,) = json.loads(listed.stdout)
        assert row["id"] == token_id and row["last_used_at"] is not None
        assert secret not in listed.stdout and tk.hash_token(secret) not in listed.stdout

        r = run_cli("token", "revoke", "--db", pg_url, secret)
        assert r.returncode == 0 and f"revoked token {token_id}" in r.stderr, r.stderr
        with pytest.raises(TokenRejected, match="revoked"):
            other_head.redeem_token(secret)
        assert other_head.token_revoked(token_id)
