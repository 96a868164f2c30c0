"""``opentela-node keys ...`` and ``usage`` end to end on SQLite, as real processes: the key is
the last stdout line and alone on stdout, everything else on stderr; mistakes are one
``Error:`` line and a non-zero exit; nothing ever shows a key or its hash but at creation."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
from conftest import one_error_line, run_cli

from opentela.access import keys as ak
from opentela.store import UsageRow, open_store


def created(p: subprocess.CompletedProcess) -> tuple[str, str]:
    """(the key, its id) from a create or rotate."""
    assert p.returncode == 0, p.stderr
    secret = p.stdout.splitlines()[-1]
    assert p.stdout == secret + "\n" and ak.looks_like_key(secret)
    assert secret not in p.stderr and ak.key_hash(secret) not in p.stderr
    key_id = next(w for w in p.stderr.split() if ak.is_key_id(w))
    return secret, key_id


def test_keys_create_list_show_rotate_revoke(tmp_path: Path) -> None:
    home = str(tmp_path / "head")
    p = run_cli(
        "keys", "create", "--home", home, "--owner", "alice@ethz.ch", "--rpm", "60",
        "--tpm", "100000", "--budget-tokens", "5000000", "--budget-period", "month",
        "--models", "swiss-ai/*",
    )  # fmt: skip
    alice, alice_id = created(p)
    summary = p.stderr.strip().splitlines()[0]
    assert f"key {alice_id} ({alice[:13]}...) for alice@ethz.ch" in summary
    assert "models swiss-ai/*, rpm 60, tpm 100000, budget 5000000/month" in summary
    root, root_id = created(run_cli("keys", "create", "--home", home, "--owner", "root", "--admin"))

    with open_store(home) as store:  # what a node would record
        store.add_usage(
            [UsageRow.at(time.time(), alice_id, "alice@ethz.ch", "swiss-ai/Apertus-8B",
                         prompt_tokens=30, completion_tokens=12)]
        )  # fmt: skip

    listed = run_cli("keys", "list", "--home", home)
    as_json = run_cli("keys", "list", "--home", home, "--json")
    assert listed.returncode == 0 and as_json.returncode == 0, listed.stderr + as_json.stderr
    for out in (listed.stdout, as_json.stdout):
        for k in (alice, root):
            assert k not in out and ak.key_hash(k) not in out
    rows = listed.stdout.splitlines()
    assert rows[0].split()[:3] == ["ID", "PREFIX", "OWNER"]
    assert rows[1].split()[:10] == [
        alice_id, alice[:13] + "...", "alice@ethz.ch", "active", "no", "swiss-ai/*",
        "60", "100000", "5000000/month", "42",
    ]  # fmt: skip
    assert rows[2].split()[:6] == [root_id, root[:13] + "...", "root", "active", "yes", "*"]
    data = json.loads(as_json.stdout)
    assert [(d["id"], d["used"], d["admin"]) for d in data] == [
        (alice_id, 42, False),
        (root_id, None, True),
    ]

    shown = run_cli("keys", "show", "--home", home, alice_id, "--json")
    assert shown.returncode == 0 and json.loads(shown.stdout)["tpm"] == 100000
    by_key = run_cli("keys", "show", "--home", home, alice)
    assert by_key.returncode == 0 and alice_id in by_key.stdout and alice not in by_key.stdout

    new, new_id = created(run_cli("keys", "rotate", "--home", home, alice))
    assert new != alice and new_id != alice_id
    with open_store(home) as store:
        assert store.lookup_key(alice).revoked_at is not None
        after = store.lookup_key(new)
        assert (after.owner, after.rpm, after.models, after.revoked_at) == (
            "alice@ethz.ch",
            60,
            ("swiss-ai/*",),
            None,
        )

    r = run_cli("keys", "revoke", "--home", home, new_id)
    assert r.returncode == 0 and f"revoked key {new_id}" in r.stderr and r.stdout == ""
    again = run_cli("keys", "revoke", "--home", home, new)
    assert again.returncode == 0 and "already revoked" in again.stderr
    assert new not in again.stderr
    one_error_line(run_cli("keys", "rotate", "--home", home, new_id), 1, "is revoked")
    statuses = [d["revoked_at"] is not None for d in json.loads(
        run_cli("keys", "list", "--home", home, "--json").stdout)]  # fmt: skip
    assert statuses == [True, False, True]

    u = run_cli("usage", "--home", home, "--owner", "alice@ethz.ch", "--days", "30")
    assert u.returncode == 0, u.stderr
    lines = u.stdout.splitlines()
    assert lines[0].split()[:5] == ["MODEL", "REQUESTS", "PROMPT", "COMPLETION", "TOTAL"]
    assert lines[1].split()[:5] == ["swiss-ai/Apertus-8B", "1", "30", "12", "42"]
    uj = json.loads(run_cli("usage", "--home", home, "--json").stdout)
    assert uj["totals"]["total_tokens"] == 42 and uj["models"][0]["model"] == "swiss-ai/Apertus-8B"
    nobody = run_cli("usage", "--home", home, "--owner", "carol")
    assert nobody.returncode == 0 and nobody.stdout == "" and "no usage for carol" in nobody.stderr


def test_env_selects_the_db(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'other.db'}"
    created(run_cli("keys", "create", "--owner", "b", env={"OTELA_DB": db}))
    listed = run_cli("keys", "list", "--json", env={"OTELA_DB": db})
    assert [d["owner"] for d in json.loads(listed.stdout)] == ["b"]


@pytest.mark.parametrize(
    ("args", "code", "match"),
    [
        (["keys", "create", "--owner", " "], 2, "invalid owner"),
        (["keys", "create", "--owner", "a", "--rpm", "0"], 2, "invalid rpm 0"),
        (["keys", "create", "--owner", "a", "--models", "a b"], 2, "invalid model pattern"),
        (["keys", "create", "--owner", "a", "--budget-period", "day"], 2, "needs a budget"),
        (["keys", "create", "--owner", "a", "--budget-period", "year"], 2, "period 'year'"),
        (["keys", "revoke", "key_00000000"], 1, "no key key_00000000"),
        (["keys", "show", "nonsense"], 1, "neither a key id"),
        (["keys", "rotate", "sk-otela-" + "A" * 32], 1, "no key that API key"),
        (["keys", "list", "--db", "postgresql://u@127.0.0.1:1/x"], 1, "cannot open database"),
        (["usage", "--days", "0"], 2, "invalid --days 0"),
    ],
)
def test_mistakes_are_one_line(tmp_path: Path, args: list[str], code: int, match: str) -> None:
    home = tmp_path / "head"
    created(run_cli("keys", "create", "--home", str(home), "--owner", "x"))
    p = (
        run_cli(*args[:2], "--home", str(home), *args[2:])
        if args[0] == "keys"
        else run_cli(args[0], "--home", str(home), *args[1:])
    )
    one_error_line(p, code, match)


def test_a_mistyped_home_is_an_error_not_an_empty_list(tmp_path: Path) -> None:
    for args in (["keys", "list"], ["usage"]):
        one_error_line(run_cli(*args, "--home", str(tmp_path / "typo")), 1, "no store at")
    assert not (tmp_path / "typo").exists()
