"""The node's Ed25519 identity, kept in ``<home>/identity.key`` (PKCS#8 PEM, mode 0600).

Keys are random, never derived from a seed anyone could rebuild (an upstream flaw).
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ..table.signing import peer_id_from_public_key, public_key_bytes

KEY_FILE = "identity.key"


class IdentityError(Exception):
    pass


def key_path(home: Path) -> Path:
    return Path(home).expanduser() / KEY_FILE


def create(home: Path) -> Ed25519PrivateKey:
    """Write a new key; refuse to overwrite one (losing a key changes the node's peer ID)."""
    path = key_path(home)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as exc:
        raise IdentityError(f"{path} already exists") from exc
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    return key


def load(home: Path) -> Ed25519PrivateKey:
    path = key_path(home)
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise IdentityError(f"no identity at {path}; run `opentela-node init --home DIR`") from exc
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise IdentityError(f"{path} is readable by others (mode {mode:o}); chmod 600 it")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except ValueError as exc:
        raise IdentityError(f"{path} is not a PEM private key: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise IdentityError(f"{path} is not an Ed25519 key")
    return key


def load_or_create(home: Path) -> Ed25519PrivateKey:
    return load(home) if key_path(home).exists() else create(home)


def peer_id(key: Ed25519PrivateKey) -> str:
    return peer_id_from_public_key(public_key_bytes(key))


def seed(key: Ed25519PrivateKey) -> bytes:
    """The 32-byte private seed, the form libp2p's Ed25519 key pair is built from."""
    return key.private_bytes(
        serialization.Encoding.Raw,
        serialization.PrivateFormat.Raw,
        serialization.NoEncryption(),
    )
