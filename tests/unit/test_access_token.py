"""Join tokens, TTLs, model patterns, the authority key and store URLs: the pure parts."""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from opentela.access import authority as auth
from opentela.access import token as tk
from opentela.cli import _fmt_tokens
from opentela.store.url import db_url_problem, redact, resolve, sqlite_path

# -- tokens -----------------------------------------------------------------------------------


def test_token_shape_and_hash() -> None:
    raw = bytes(range(32))
    token = tk.make_token(raw)
    assert token == "otj_" + base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    assert len(token) == 4 + 43 and tk.is_token(token)
    assert tk.hash_token(token) == hashlib.sha256(token.encode()).hexdigest()
    assert tk.hash_token(token) != tk.hash_token(token[4:])  # the prefix is hashed too
    with pytest.raises(ValueError, match="32 bytes"):
        tk.make_token(b"short")


def test_new_tokens_and_ids_are_random_and_well_formed() -> None:
    tokens = {tk.new_token() for _ in range(200)}
    assert len(tokens) == 200 and all(tk.is_token(t) for t in tokens)
    ids = [tk.new_token_id() for _ in range(50)]
    assert all(tk.is_token_id(i) for i in ids) and len(set(ids)) > 45


@pytest.mark.parametrize(
    "text",
    ["", "otj_", "otj_" + "a" * 42, "otj_" + "a" * 44, "otx_" + "a" * 43, "otj_" + "a" * 42 + "="],
)
def test_parse_token_refuses_what_is_not_a_token(text: str) -> None:
    with pytest.raises(ValueError, match="not a join token"):
        tk.parse_token(text)


def test_parse_token_strips_whitespace_and_never_echoes_the_whole_token() -> None:
    token = tk.new_token()
    assert tk.parse_token(f"  {token}\n") == token
    with pytest.raises(ValueError) as err:
        tk.parse_token(token + "x")
    assert token not in str(err.value)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30d", 30 * 86400), ("12h", 12 * 3600), ("90m", 5400), ("1h30m", 5400), ("3600", 3600)],
)
def test_parse_ttl(text: str, seconds: float) -> None:
    assert tk.parse_ttl(text) == seconds


@pytest.mark.parametrize("text", ["", "0", "0s", "-1d", "3x", "d30", "forever"])
def test_parse_ttl_errors_name_the_value(text: str) -> None:
    with pytest.raises(ValueError, match=r"invalid TTL"):
        tk.parse_ttl(text)


def test_patterns_roles_owner() -> None:
    assert tk.parse_patterns(["alice/*", "swiss-ai/Apertus-8B", "alice/*"]) == (
        "alice/*",
        "swiss-ai/Apertus-8B",
    )
    for bad in ([], [""], ["a b"], ["a\tb"], ["x" * 257], ["é"]):
        with pytest.raises(ValueError):
            tk.parse_patterns(bad)
    assert tk.parse_roles([]) == ("worker",)
    assert tk.parse_roles(["relay", "head", "relay"]) == ("relay", "head")
    with pytest.raises(ValueError, match="invalid role 'admin'"):
        tk.parse_roles(["admin"])
    assert tk.parse_owner(" alice@ethz.ch ") == "alice@ethz.ch"
    for bad in ("", "  ", "a\nb", "x" * 201):
        with pytest.raises(ValueError, match="invalid owner"):
            tk.parse_owner(bad)


def _info(**kw: object) -> tk.TokenInfo:
    base: dict[str, object] = {
        "id": "tok_0123abcd",
        "owner": "alice",
        "models": ("alice/*",),
        "roles": ("worker",),
        "expires_at": 1000.0,
        "created_at": 10.0,
    }
    return tk.TokenInfo(**{**base, **kw})  # type: ignore[arg-type]


def test_status_and_rejection() -> None:
    assert _info().status(999.9) == "active"
    assert _info().status(1000.0) == "expired"  # expiry is exclusive
    assert _info(revoked_at=5.0).status(1.0) == "revoked"
    assert _info(revoked_at=5.0).status(2000.0) == "revoked"  # revocation wins over expiry
    assert tk.rejection(None, 0) == "unknown"
    assert tk.rejection(_info(), 1) is None
    assert tk.rejection(_info(), 1000) == "expired"
    err = tk.TokenRejected("revoked", "tok_0123abcd")
    assert err.reason == "revoked" and "tok_0123abcd" in str(err)


def test_token_info_json_and_list_columns() -> None:
    info = _info(models=("a/*", "b"), last_used_at=20.0)
    assert info.to_json()["models"] == ["a/*", "b"]
    assert set(info.to_json()) == {
        "id",
        "owner",
        "models",
        "roles",
        "expires_at",
        "created_at",
        "last_used_at",
        "revoked_at",
    }
    assert tk.load_list(tk.dump_list(("a/*", "b"))) == ("a/*", "b")
    with pytest.raises(ValueError):
        tk.load_list('{"a": 1}')


def test_token_list_table() -> None:
    rows = _fmt_tokens(
        [_info(), _info(id="tok_ffffffff", owner="bob", revoked_at=500.0, last_used_at=400.0)],
        now=100.0,
    ).splitlines()
    assert rows[0].split() == [
        "ID", "OWNER", "STATUS", "MODELS", "ROLES", "EXPIRES", "CREATED", "LAST", "USED", "REVOKED"
    ]  # fmt: skip
    assert rows[1].split()[:5] == ["tok_0123abcd", "alice", "active", "alice/*", "worker"]
    assert rows[1].split()[-2:] == ["-", "-"]  # never used, not revoked
    assert rows[2].split()[:3] == ["tok_ffffffff", "bob", "revoked"]
    assert "1970-01-01 00:08Z" in rows[2]  # revoked_at 500 s


# -- the authority key ------------------------------------------------------------------------


def test_public_key_text_round_trip() -> None:
    key = Ed25519PrivateKey.generate()
    text = auth.public_key_text(key)
    assert text.startswith("ed25519:") and len(text) == 8 + 43 and "=" not in text
    assert auth.public_key_text(key.public_key()) == text
    assert auth.public_key_text(auth.parse_public_key(f" {text}\n")) == text


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", "starts with 'ed25519:'"),
        ("xGunPMgM0QDFLnqTs8RoTseOYzd5iid6ZX3-qLHhpac", "starts with 'ed25519:'"),
        ("ed25519:", "base64url"),
        ("ed25519:xGunPMgM0QDFLnqTs8Ro+seOYzd5iid6ZX3-qLHhpac", "base64url"),
        ("ed25519:xGunPMgM0QDFLnqTs8RoTseOYzd5iid6ZX3-qLHh", "bytes, an Ed25519 key is 32"),
        ("ed25519:" + "A" * 44, "bytes, an Ed25519 key is 32"),
        ("ed25519:A", "base64url"),
    ],
)
def test_parse_public_key_errors(text: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        auth.parse_public_key(text)


def test_authority_key_file(tmp_path: Path) -> None:
    d = tmp_path / "authority"
    key = auth.create(d)
    path = d / "authority.key"
    assert path.stat().st_mode & 0o777 == 0o600
    assert auth.public_key_text(auth.load(path)) == auth.public_key_text(key)
    assert auth.public_key_text(auth.load(d)) == auth.public_key_text(key)  # the directory
    before = path.read_bytes()
    with pytest.raises(auth.AuthorityError, match="already exists"):
        auth.create(d)
    assert path.read_bytes() == before


def test_authority_key_file_errors(tmp_path: Path) -> None:
    with pytest.raises(auth.AuthorityError, match="no authority key at"):
        auth.load(tmp_path / "missing.key")
    (tmp_path / "file").write_text("")
    with pytest.raises(auth.AuthorityError, match="is a file, not a directory"):
        auth.create(tmp_path / "file")
    bad = tmp_path / "bad.key"
    fd = os.open(bad, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b"not a key")
    os.close(fd)
    with pytest.raises(auth.AuthorityError, match="not an unencrypted PEM private key"):
        auth.load(bad)
    auth.create(tmp_path / "ok")
    (tmp_path / "ok" / "authority.key").chmod(0o644)
    with pytest.raises(auth.AuthorityError, match="readable by others"):
        auth.load(tmp_path / "ok")


# -- store URLs ---------------------------------------------------------------------------------


def test_store_urls() -> None:
    assert resolve("/srv/head") == "sqlite:////srv/head/opentela.db"
    assert resolve("postgresql://u@h/otela") == "postgresql+psycopg://u@h/otela"
    assert resolve("postgres://u:pw@h:5433/otela") == "postgresql+psycopg://u:pw@h:5433/otela"
    assert resolve("sqlite:////tmp/x.db") == "sqlite:////tmp/x.db"
    assert sqlite_path("sqlite:////tmp/x.db") == Path("/tmp/x.db")
    assert sqlite_path("sqlite://") is None and sqlite_path("postgresql+psycopg://h/d") is None
    assert redact("postgresql://u:secret@h/d") == "postgresql://u:***@h/d"
    assert redact("postgresql://u@h/d") == "postgresql://u@h/d"
    assert db_url_problem("postgresql://u@h/d") is None
    assert "uses mysql://" in (db_url_problem("mysql://u@h/d") or "")
    assert "names no database" in (db_url_problem("postgresql://u@h") or "")
    assert "must be a URL" in (db_url_problem("h:5432") or "")
    with pytest.raises(ValueError, match=r"u:\*\*\*@h"):  # the password never in an error
        resolve("mysql://u:secret@h/d")
