"""Ed25519 signatures over a bundle's manifest, for boxes that must not run a swapped bundle.

The manifest lists the sha256 of every file, so a signature over the manifest's
bytes covers the whole bundle. Keys are PEM files as ``openssl genpkey
-algorithm ed25519`` writes them, or as ``edge-anomaly keygen`` does.

>>> write_key_pair(Path("line7"))                    # line7.key (keep it on the build host) and line7.pub
>>> signature = sign(manifest_bytes, Path("line7.key"))
>>> verify(manifest_bytes, signature, load_public_keys([Path("line7.pub")]))   # the key's fingerprint
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

from .errors import BundleError, InputError

KeyLike = str | Path | bytes


def write_key_pair(stem: Path) -> tuple[Path, Path]:
    """A new Ed25519 key pair as ``STEM.key`` (private, mode 0600) and ``STEM.pub``; refuses to overwrite."""
    ed25519, serialization = _crypto()
    private_path, public_path = stem.with_name(stem.name + ".key"), stem.with_name(stem.name + ".pub")
    for path in (private_path, public_path):
        if path.exists():
            raise InputError(f"{path} exists; keys are never overwritten")
    key = ed25519.Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(private_pem)
    public_path.write_bytes(public_pem)
    return private_path, public_path


def sign(message: bytes, private_key: Path) -> bytes:
    """The 64-byte Ed25519 signature of ``message`` with the PEM private key at ``private_key``."""
    return load_private_key(private_key).sign(message)


def load_private_key(path: Path):
    """The Ed25519 private key in the PEM file at ``path`` (export checks it before any work is done)."""
    ed25519, serialization = _crypto()
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise InputError(f"cannot read signing key {path}: {exc}") from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise InputError(f"signing key {path} is not an Ed25519 private key")
    return key


def load_public_keys(keys: Sequence[KeyLike]) -> list:
    """PEM public keys (paths or PEM bytes) -> key objects; a key that is not Ed25519 is refused."""
    ed25519, serialization = _crypto()
    loaded = []
    for key in keys:
        try:
            pem = key if isinstance(key, bytes) else Path(key).read_bytes()
            public = serialization.load_pem_public_key(pem)
        except (OSError, ValueError, TypeError) as exc:
            name = "(bytes)" if isinstance(key, bytes) else key
            raise InputError(f"cannot read trusted key {name}: {exc}") from None
        if not isinstance(public, ed25519.Ed25519PublicKey):
            raise InputError(f"trusted key {key} is not an Ed25519 public key")
        loaded.append(public)
    if not loaded:
        raise InputError("trusted_keys is empty: name at least one public key, or pass None")
    return loaded


def verify(message: bytes, signature: bytes | None, public_keys: list, where: str) -> str:
    """The fingerprint of the trusted key that signed ``message``; ``BundleError`` when none did."""
    from cryptography.exceptions import InvalidSignature

    if signature is None:
        raise BundleError(f"{where}: the bundle is not signed, and only signed bundles are trusted here")
    for key in public_keys:
        try:
            key.verify(signature, message)
        except InvalidSignature:
            continue
        return fingerprint(key)
    raise BundleError(f"{where}: the signature matches none of the trusted keys (altered, or signed by another key)")


def fingerprint(public_key) -> str:
    """Short hex id of a public key (sha256 of its raw bytes, first 16 digits), for logs and manifests."""
    _, serialization = _crypto()
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def _crypto():
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError:
        raise InputError("signed bundles need the cryptography package: pip install cryptography") from None
    return ed25519, serialization
