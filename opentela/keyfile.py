"""Private key files (the node identity, the pool authority): PKCS#8 PEM, mode 0600, written
once and never overwritten. The callers say what a failure means for their key."""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


def why(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def write_new(path: Path) -> Ed25519PrivateKey:
    """A new random key written to ``path`` (created exclusively, mode 0600). Raises
    ``FileExistsError`` when a key is there, ``OSError`` when it cannot be written; a write that
    fails halfway leaves no truncated key behind."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
    except OSError:
        path.unlink(missing_ok=True)
        raise
    return key
