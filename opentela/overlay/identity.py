"""The node's Ed25519 identity, kept in ``<home>/identity.key`` (PKCS#8 PEM, mode 0600).

Keys are random, never derived from a seed anyone could rebuild (an upstream flaw).
"""

from __future__ import annotations

import os
from pathlib import Path

import base58
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from .. import keyfile

KEY_FILE = "identity.key"


class IdentityError(Exception):
    pass


def key_path(home: Path) -> Path:
    return Path(home).expanduser() / KEY_FILE


_why = keyfile.why


def _make_home(home: Path) -> None:
    """The node directory, created if missing; a mistake in ``--home`` is one clear line."""
    home = Path(home).expanduser()
    if home.exists() and not home.is_dir():
        raise IdentityError(f"--home {home} is a file, not a directory")
    try:
        home.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:  # a parent is a file, read-only file system, permission denied
        raise IdentityError(f"cannot create --home {home}: {_why(exc)}") from exc


def create(home: Path) -> Ed25519PrivateKey:
    """Write a new key; refuse to overwrite one (losing a key changes the node's peer ID)."""
    path = key_path(home)
    _make_home(path.parent)
    try:
        return keyfile.write_new(path)
    except FileExistsError as exc:
        raise IdentityError(f"{path} already exists") from exc
    except OSError as exc:
        raise IdentityError(f"cannot write {path}: {_why(exc)} (is --home writable?)") from exc


def load(home: Path) -> Ed25519PrivateKey:
    path = key_path(home)
    try:
        data = path.read_bytes()
        mode = path.stat().st_mode & 0o777
    except FileNotFoundError as exc:
        raise IdentityError(f"no identity at {path}; run `opentela-node init --home DIR`") from exc
    except IsADirectoryError as exc:
        raise IdentityError(f"{path} is a directory, not a key file") from exc
    except NotADirectoryError as exc:
        raise IdentityError(f"--home {path.parent} is not a directory") from exc
    except OSError as exc:  # permission denied (another user's key), I/O error
        raise IdentityError(f"cannot read {path}: {_why(exc)}") from exc
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
    # lexists: False (not an exception) when home is a file or cannot be searched; create()
    # then says what is wrong with --home.
    return load(home) if os.path.lexists(key_path(home)) else create(home)


# protobuf PublicKey{Type: Ed25519 (1), Data: 32 bytes}
_PB_ED25519_PREFIX = b"\x08\x01\x12\x20"


def peer_id_from_public_key(public_key: bytes) -> str:
    """The libp2p peer ID of an Ed25519 public key, computed without libp2p: the identity
    multihash of the protobuf-encoded key, base58btc. The key that signs a record or is named in
    a grant is thereby bound to the peer ID the Noise handshake authenticates."""
    if len(public_key) != 32:
        raise ValueError("ed25519 public key must be 32 bytes")
    pb = _PB_ED25519_PREFIX + public_key
    return base58.b58encode(b"\x00" + bytes([len(pb)]) + pb).decode()


def public_key_bytes(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def peer_id(key: Ed25519PrivateKey) -> str:
    return peer_id_from_public_key(public_key_bytes(key))


def seed(key: Ed25519PrivateKey) -> bytes:
    """The 32-byte private seed, the form libp2p's Ed25519 key pair is built from."""
    return key.private_bytes(
        serialization.Encoding.Raw,
        serialization.PrivateFormat.Raw,
        serialization.NoEncryption(),
    )
