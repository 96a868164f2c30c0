"""``opentela-node authority ...`` and ``token ...`` end to end, as real processes: the key or
token is the last stdout line and alone on stdout, everything else is on stderr; mistakes are
one ``Error:`` line and a non-zero exit; ``token list`` never shows a token or its hash."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import one_error_line, run_cli

from opentela.access import authority as auth
from opentela.access import token as tk
from opentela.store import TokenRejected, open_store


def test_authority_init_and_show(tmp_path: Path) -> None:
    d = tmp_path / "authority"
    p = run_cli("authority", "init", "--home", str(d))
    assert p.returncode == 0, p.stderr
    pub = p.stdout.splitlines()[-1]
    assert p.stdout == pub + "\n"  # the key is all of stdout
    auth.parse_public_key(pub)
    assert "authority.key" in p.stderr and "--authority" in p.stderr
    key_file = d / "authority.key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    before = key_file.read_bytes()

    one_error_line(run_cli("authority", "init", "--home", str(d)), 1, "already exists")
    assert key_file.read_bytes() == before
    shown = run_cli("authority", "show", "--home", str(d))
    assert shown.returncode == 0 and shown.stdout.splitlines()[-1] == pub
    one_error_line(
        run_cli("authority", "show", "--home", str(tmp_path / "none")), 1, "no authority key"
    )


def test_token_create_list_revoke(tmp_path: Path) -> None:
    home = tmp_path / "head"
    p = run_cli(
        "token", "create", "--home", str(home), "--owner", "alice",
        "--models", "alice/*", "--models", "swiss-ai/Apertus-8B", "--ttl", "30d",
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    secret = p.stdout.splitlines()[-1]
    assert p.stdout == secret + "\n" and tk.is_token(secret)
    assert secret not in p.stderr
    summary = p.stderr.strip().splitlines()[0]
    assert (
        summary.startswith("token tok_")
        and "for alice, models alice/*, swiss-ai/Apertus-8B" in summary
    )
    assert "expires " in summary
    first_id = summary.split()[1]

    p2 = run_cli("token", "create", "--home", str(home), "--owner", "bob", "--models", "bob/*",
             "--roles", "head", "--ttl", "12h")  # fmt: skip
    assert p2.returncode == 0, p2.stderr
    second = p2.stdout.splitlines()[-1]

    listed = run_cli("token", "list", "--home", str(home))
    as_json = run_cli("token", "list", "--home", str(home), "--json")
    assert listed.returncode == 0 and as_json.returncode == 0, listed.stderr + as_json.stderr
    for out in (listed.stdout, as_json.stdout):
        for t in (secret, second):
            assert t not in out and tk.hash_token(t) not in out
    rows = listed.stdout.splitlines()
    assert rows[0].split()[:3] == ["ID", "OWNER", "STATUS"]
    assert rows[1].split()[:5] == [
        first_id,
        "alice",
        "active",
        "alice/*,swiss-ai/Apertus-8B",
        "worker",
    ]
    assert rows[2].split()[1:5] == ["bob", "active", "bob/*", "head"]
    data = json.loads(as_json.stdout)
    assert [d["owner"] for d in data] == ["alice", "bob"] and data[0]["revoked_at"] is None

    # Revoke by id, then by the token itself.
    r1 = run_cli("token", "revoke", "--home", str(home), first_id)
    assert r1.returncode == 0 and f"revoked token {first_id}" in r1.stderr and r1.stdout == ""
    again = run_cli("token", "revoke", "--home", str(home), first_id)
    assert again.returncode == 0 and "already revoked" in again.stderr
    r2 = run_cli("token", "revoke", "--home", str(home), second)
    assert r2.returncode == 0, r2.stderr
    assert second not in r2.stderr
    data = json.loads(run_cli("token", "list", "--home", str(home), "--json").stdout)
    assert all(d["revoked_at"] is not None for d in data)
    assert "revoked" in run_cli("token", "list", "--home", str(home)).stdout.splitlines()[1]

    with open_store(home) as store:
        for t in (secret, second):
            with pytest.raises(TokenRejected) as err:
                store.redeem_token(t)
            assert err.value.reason == "revoked"


def test_revoke_while_another_process_has_the_store_open(tmp_path: Path) -> None:
    """A node keeps its store open; the CLI revokes from another process at the same time,
    and the node's next redeem sees it (SQLite in WAL mode, with a busy timeout)."""
    home = tmp_path / "head"
    with open_store(home) as node_store:
        secret, info = node_store.create_token("alice", ["alice/*"])
        assert node_store.redeem_token(secret).id == info.id
        with node_store.engine.connect() as reader, reader.begin():  # a read in progress
            reader.exec_driver_sql("SELECT count(*) FROM join_tokens").scalar()
            p = run_cli("token", "revoke", "--home", str(home), info.id)
        assert p.returncode == 0, p.stderr
        with pytest.raises(TokenRejected, match="revoked"):
            node_store.redeem_token(secret)


def test_env_selects_home_and_db(tmp_path: Path) -> None:
    home = tmp_path / "envhome"
    p = run_cli("token", "create", "--owner", "a", "--models", "a/*", env={"OTELA_HOME": str(home)})
    assert p.returncode == 0, p.stderr
    assert (home / "opentela.db").is_file()
    db = f"sqlite:///{tmp_path / 'other.db'}"
    p = run_cli("token", "create", "--owner", "b", "--models", "b/*", env={"OTELA_DB": db})
    assert p.returncode == 0, p.stderr
    listed = run_cli("token", "list", "--json", env={"OTELA_DB": db})
    assert [d["owner"] for d in json.loads(listed.stdout)] == ["b"]


@pytest.mark.parametrize(
    ("args", "code", "match"),
    [
        (["create", "--owner", "a", "--models", "a/*", "--ttl", "soon"], 2, "invalid TTL 'soon'"),
        (["create", "--owner", "a", "--models", "a/*", "--ttl", "0"], 2, "invalid TTL '0'"),
        (["create", "--owner", "a", "--models", "a b"], 2, "invalid model pattern 'a b'"),
        (["create", "--owner", " ", "--models", "a"], 2, "invalid owner"),
        (["revoke", "tok_00000000"], 1, "no token tok_00000000"),
        (["revoke", "nonsense"], 1, "neither a token id"),
        (["list", "--db", "postgresql://u@127.0.0.1:1/x"], 1, "cannot open database"),
        (["list", "--db", "mysql://u:pw@127.0.0.1/x"], 1, "uses mysql://"),
    ],
)
def test_mistakes_are_one_line(tmp_path: Path, args: list[str], code: int, match: str) -> None:
    home = tmp_path / "head"
    assert (
        run_cli("token", "create", "--home", str(home), "--owner", "x", "--models", "x").returncode
        == 0
    )
    p = run_cli("token", args[0], "--home", str(home), *args[1:])
    one_error_line(p, code, match)
    assert "pw@" not in p.stderr


def test_list_with_a_mistyped_home_is_an_error_not_an_empty_list(tmp_path: Path) -> None:
    one_error_line(run_cli("token", "list", "--home", str(tmp_path / "typo")), 1, "no store at")
    assert not (tmp_path / "typo").exists()
