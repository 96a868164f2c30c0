"""The pool's authority key: Ed25519, in ``<dir>/authority.key`` (PKCS#8 PEM, mode 0600).

Whoever holds it admits members (signs grants); everyone else only needs its public key,
written ``ed25519:`` + base64url (no padding) of the 32 raw bytes: the text ``--authority``
takes and ``opentela-node authority init`` prints.
"""

from __future__ import annotations

import base64
import binascii
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .. import keyfile

KEY_FILE = "authority.key"
PUBLIC_PREFIX = "ed25519:"
_B64URL = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


class AuthorityError(Exception):
    """A key file that cannot be written or read; the message is one line for the user."""


def key_path(directory: Path | str) -> Path:
    return Path(directory).expanduser() / KEY_FILE


_why = keyfile.why


def create(directory: Path | str) -> Ed25519PrivateKey:
    """Write a new key in ``directory``; never overwrite one (every grant hangs on it)."""
    path = key_path(directory)
    if path.parent.exists() and not path.parent.is_dir():
        raise AuthorityError(f"{path.parent} is a file, not a directory")
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise AuthorityError(f"cannot create {path.parent}: {_why(exc)}") from exc
    try:
        return keyfile.write_new(path)
    except FileExistsError as exc:
        raise AuthorityError(
            f"{path} already exists; not overwriting the authority key "
            "(`opentela-node authority show` prints its public key)"
        ) from exc
    except OSError as exc:
        raise AuthorityError(f"cannot write {path}: {_why(exc)}") from exc


def load(path: Path | str) -> Ed25519PrivateKey:
    """The key in ``path``: an ``authority.key`` file, or a directory holding one."""
    path = Path(path).expanduser()
    if path.is_dir():
        path = path / KEY_FILE
    try:
        data = path.read_bytes()
        mode = path.stat().st_mode & 0o777
    except FileNotFoundError as exc:
        raise AuthorityError(
            f"no authority key at {path}; create one with `opentela-node authority init --home DIR`"
        ) from exc
    except OSError as exc:  # permission denied, not a directory, I/O error
        raise AuthorityError(f"cannot read {path}: {_why(exc)}") from exc
    if mode & 0o077:
        raise AuthorityError(f"{path} is readable by others (mode {mode:o}); chmod 600 it")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise AuthorityError(f"{path} is not an unencrypted PEM private key") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise AuthorityError(f"{path} is not an Ed25519 key")
    return key


def public_key_text(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    pub = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    raw = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return PUBLIC_PREFIX + base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def parse_public_key(text: str) -> Ed25519PublicKey:
    """``ed25519:<base64url>`` → the key; ValueError with a message fit for the user."""
    value = text.strip()
    if not value.startswith(PUBLIC_PREFIX):
        raise ValueError(
            "an authority public key starts with 'ed25519:' "
            "(print it with `opentela-node authority show --home DIR`)"
        )
    body = value[len(PUBLIC_PREFIX) :]
    if not body or any(c not in _B64URL for c in body):
        raise ValueError("an authority public key is ed25519: and base64url (A-Z a-z 0-9 - _)")
    try:
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"authority public key is not valid base64url: {exc}") from exc
    if len(raw) != 32:
        raise ValueError(
            f"authority public key is {len(raw)} bytes, an Ed25519 key is 32 (truncated copy?)"
        )
    return Ed25519PublicKey.from_public_bytes(raw)
