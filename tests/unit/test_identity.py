"""The node identity file: created once, 0600, refuses to be clobbered or world-readable."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from opentela.overlay import identity
from opentela.overlay.identity import (
    IdentityError,
    create,
    key_path,
    load,
    load_or_create,
    peer_id,
    seed,
)
from opentela.table.signing import public_key_bytes


def mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_create_writes_0600_pem(tmp_path: Path) -> None:
    home = tmp_path / "node"
    key = create(home)
    path = key_path(home)
    assert path == home / identity.KEY_FILE
    assert mode(path) == 0o600
    data = path.read_bytes()
    assert data.startswith(b"-----BEGIN PRIVATE KEY-----")
    assert isinstance(key, Ed25519PrivateKey)
    assert mode(home) & 0o077 == 0  # directory created private


def test_load_round_trips_peer_id(tmp_path: Path) -> None:
    key = create(tmp_path)
    loaded = load(tmp_path)
    assert peer_id(loaded) == peer_id(key)
    assert seed(loaded) == seed(key)
    assert public_key_bytes(loaded) == public_key_bytes(key)


def test_peer_id_shape(tmp_path: Path) -> None:
    pid = peer_id(create(tmp_path))
    assert pid.startswith("12D3KooW") and len(pid) == 52
    assert len(seed(load(tmp_path))) == 32


def test_create_refuses_to_overwrite(tmp_path: Path) -> None:
    key = create(tmp_path)
    before = key_path(tmp_path).read_bytes()
    with pytest.raises(IdentityError, match="exists"):
        create(tmp_path)
    assert key_path(tmp_path).read_bytes() == before
    assert peer_id(load(tmp_path)) == peer_id(key)


@pytest.mark.parametrize("bad_mode", [0o640, 0o604, 0o644, 0o660, 0o666, 0o610])
def test_load_refuses_readable_by_others(tmp_path: Path, bad_mode: int) -> None:
    create(tmp_path)
    os.chmod(key_path(tmp_path), bad_mode)
    with pytest.raises(IdentityError, match="chmod 600"):
        load(tmp_path)


def test_load_accepts_0400(tmp_path: Path) -> None:
    key = create(tmp_path)
    os.chmod(key_path(tmp_path), 0o400)
    assert peer_id(load(tmp_path)) == peer_id(key)


def test_load_missing(tmp_path: Path) -> None:
    with pytest.raises(IdentityError, match="no identity"):
        load(tmp_path)


def test_load_garbage(tmp_path: Path) -> None:
    path = key_path(tmp_path)
    path.write_bytes(b"not a pem")
    os.chmod(path, 0o600)
    with pytest.raises(IdentityError, match="not a PEM"):
        load(tmp_path)


def test_load_rejects_non_ed25519(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path = key_path(tmp_path)
    path.write_bytes(pem)
    os.chmod(path, 0o600)
    with pytest.raises(IdentityError, match="Ed25519"):
        load(tmp_path)


def test_load_or_create_is_stable(tmp_path: Path) -> None:
    home = tmp_path / "h"
    first = peer_id(load_or_create(home))
    assert key_path(home).exists()
    assert peer_id(load_or_create(home)) == first
    assert peer_id(load_or_create(home)) == first
    assert peer_id(load(home)) == first


def test_distinct_homes_distinct_keys(tmp_path: Path) -> None:
    assert peer_id(create(tmp_path / "a")) != peer_id(create(tmp_path / "b"))


def test_home_is_expanded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    key = create(Path("~/node"))
    assert (tmp_path / "node" / identity.KEY_FILE).exists()
    assert peer_id(load(Path("~/node"))) == peer_id(key)
