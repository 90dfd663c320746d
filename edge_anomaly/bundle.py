"""Reading and writing bundles: validate everything before trusting anything.

>>> bundle = open_bundle("bundle/")          # or "bundle.tar.gz"; trusted_keys=["line7.pub"] for signed ones
>>> bundle.threshold, bundle.memory_bank().shape
(0.61, (1024, 152))

The reader checks the format name and version, that ``manifest.json`` is the
one sealed at export (its sha256 in ``manifest.sha256``) and, where trusted
keys are given, signed by one of them; that every key the runtime reads is of
the right type and range (``manifest.check_manifest``); that every file the
manifest lists is present with the recorded sha256 and no unlisted file sits
beside them; and that the memory bank is a plain, finite float32 array of the
recorded shape (``np.load(..., allow_pickle=False)``). A failing bundle raises
``BundleError`` naming the file and the reason.

A tarred bundle is unpacked into a private temporary folder, after its
members were checked against its manifest (names, kinds and sizes), so a tar
that would unpack to more than it declares is refused before a byte is
written. The folder is removed by ``Bundle.close()`` (``Inspector.close()``)
or, failing that, when the bundle is garbage-collected.
"""

from __future__ import annotations

import hashlib
import json
import tarfile
import tempfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from . import bundle_format as fmt
from .errors import BundleError
from .manifest import FileEntry, Manifest
from .placement import PLACE_COLUMNS, check_rows
from .signing import KeyLike

MAX_MANIFEST_BYTES = 4 << 20  # a manifest is a few KB; anything near this is not one
SEAL_FILES = (fmt.MANIFEST, fmt.MANIFEST_SEAL, fmt.MANIFEST_SIGNATURE)  # beside the listed files, never in the list


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class Bundle:
    """A bundle that passed every check; ``manifest`` is its checked ``manifest.json``. ``signed_by``: the
    fingerprint of the trusted key that signed it, when trusted keys were asked for."""

    root: Path
    manifest: Manifest
    signed_by: str | None = None
    unpacked: tempfile.TemporaryDirectory | None = field(default=None, repr=False, compare=False)

    @property
    def threshold(self) -> float:
        return self.manifest.threshold.value

    @property
    def input_size(self) -> int:
        return self.manifest.input.size

    @property
    def mean(self) -> tuple[float, ...]:
        return self.manifest.input.mean

    @property
    def std(self) -> tuple[float, ...]:
        return self.manifest.input.std

    @property
    def object_name(self) -> str:
        return self.manifest.object

    def path_of(self, role: str) -> Path:
        """The single file of ``role`` (encoder, decoder, memory bank)."""
        names = self.files_of(role)
        if len(names) != 1:
            raise BundleError(f"{self.root}: expected one {role} file, manifest lists {len(names)}")
        return names[0]

    def files_of(self, role: str) -> list[Path]:
        return sorted(self.root / n for n, e in self.manifest.files.items() if e.role == role)

    @property
    def digest(self) -> str:
        """sha256 of ``manifest.json``: names this exact bundle (its files' digests are in the manifest), so a
        client and a server can tell whether they hold the same one."""
        return hashlib.sha256((self.root / fmt.MANIFEST).read_bytes()).hexdigest()

    def memory_bank(self) -> np.ndarray:
        return _load_memory_bank(self.path_of(fmt.ROLE_MEMORY_BANK), self.manifest)

    def close(self) -> None:
        """Remove the folder a tarred bundle was unpacked into (nothing to do for a directory)."""
        if self.unpacked is not None:
            self.unpacked.cleanup()


def open_bundle(path: str | Path, trusted_keys: Sequence[KeyLike] | None = None) -> Bundle:
    """Open and fully verify a bundle directory or ``.tar``/``.tar.gz``; raise ``BundleError`` if anything is
    off. ``trusted_keys``: Ed25519 public keys (PEM paths or bytes); when given, only a bundle whose manifest
    one of them signed is opened."""
    path = Path(path)
    if not path.exists():
        raise BundleError(f"bundle {path} does not exist")
    keys = None
    if trusted_keys is not None:
        from .signing import load_public_keys

        keys = load_public_keys(trusted_keys)
    unpacked = _extract_tar(path) if path.is_file() else None
    try:
        root = Path(unpacked.name) if unpacked is not None else path
        manifest, signed_by = _read_manifest(root, keys)
        _check_files(root, manifest)
        bundle = Bundle(root, manifest, signed_by, unpacked)
        bundle.memory_bank()  # shape, dtype, finiteness and pickle checks happen on load
    except BaseException:
        if unpacked is not None:
            unpacked.cleanup()
        raise
    return bundle


def seal_bundle(root: Path, manifest: Manifest, roles: dict[str, str]) -> Bundle:
    """Hash the files named in ``roles`` (relative path -> role), write and seal the manifest, and verify the
    result. Every file a section names must be among them, with its role. A signature of an earlier manifest
    no longer holds and is removed: sign after the last change."""
    for name, role in roles.items():
        if role not in fmt.ROLES:
            raise ValueError(f"unknown role {role!r} for {name}")
    for name, role in manifest.named_files().items():
        if roles.get(name) != role:
            raise ValueError(f"the manifest names {name!r} as a {role} file, and it is not among the bundle's files")
    files = {
        name: FileEntry(role, sha256_file(root / name), (root / name).stat().st_size)
        for name, role in sorted(roles.items())
    }
    document = replace(manifest, files=files).to_json()
    text = (json.dumps(document, indent=2, sort_keys=True, allow_nan=False) + "\n").encode()
    (root / fmt.MANIFEST).write_bytes(text)
    (root / fmt.MANIFEST_SEAL).write_text(hashlib.sha256(text).hexdigest() + "\n")
    (root / fmt.MANIFEST_SIGNATURE).unlink(missing_ok=True)
    return open_bundle(root)


def sign_bundle(root: Path, private_key: Path) -> Path:
    """Sign the sealed manifest at ``root`` with an Ed25519 private key (PEM); returns the signature file."""
    from .signing import sign

    bundle = open_bundle(root)  # never sign what would not open
    signature = sign((bundle.root / fmt.MANIFEST).read_bytes(), private_key)
    out = bundle.root / fmt.MANIFEST_SIGNATURE
    out.write_bytes(signature)
    return out


def write_tar(bundle: Bundle, out: Path) -> Path:
    """Pack a bundle directory into one ``.tar.gz`` for shipping to the edge box."""
    with tarfile.open(out, "w:gz") as tar:
        for name in [*SEAL_FILES, *bundle.manifest.files]:
            if (bundle.root / name).is_file():
                tar.add(bundle.root / name, arcname=name)
    return out


def _extract_tar(path: Path) -> tempfile.TemporaryDirectory:
    """Check every member against the tar's own manifest, then unpack into a private temporary folder."""
    try:
        if not tarfile.is_tarfile(path):
            raise BundleError(f"bundle {path} is a file but not a tar archive")
        with tarfile.open(path) as tar:
            _check_members(path, tar)
            target = tempfile.TemporaryDirectory(prefix="edge-anomaly-bundle-")
            try:
                tar.extractall(target.name, filter="data")  # refuses links and paths outside target
            except BaseException:
                target.cleanup()
                raise
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise BundleError(f"bundle {path}: cannot unpack: {exc or type(exc).__name__}") from None
    return target


def _check_members(path: Path, tar: tarfile.TarFile) -> None:
    """Only plain files that the manifest lists (or the seal files), each of the size it records: a tar
    that would unpack to more, or to anything else, is refused before a byte is written."""
    members = {m.name.removeprefix("./"): m for m in tar.getmembers()}
    manifest_member = members.get(fmt.MANIFEST)
    if manifest_member is None or not manifest_member.isfile():
        raise BundleError(f"bundle {path}: holds no {fmt.MANIFEST} file; not a bundle")
    if manifest_member.size > MAX_MANIFEST_BYTES:
        raise BundleError(f"bundle {path}: {fmt.MANIFEST} is {manifest_member.size} bytes; not a manifest")
    try:
        files = json.loads(tar.extractfile(manifest_member).read()).get("files")
        sizes = {name: int(entry["bytes"]) for name, entry in files.items()}
    except (ValueError, TypeError, KeyError, AttributeError):
        raise BundleError(f"bundle {path}: {fmt.MANIFEST} does not list its files with their sizes") from None
    for name, member in members.items():
        if not member.isfile():
            raise BundleError(f"bundle {path}: {name} is not a plain file (links and devices are refused)")
        if name in SEAL_FILES:
            if member.size > MAX_MANIFEST_BYTES:
                raise BundleError(f"bundle {path}: {name} is {member.size} bytes, far more than it can be")
        elif name not in sizes:
            raise BundleError(f"bundle {path}: {name} is not listed in the manifest; refusing an altered bundle")
        elif member.size != sizes[name]:
            raise BundleError(f"bundle {path}: {name} is {member.size} bytes, the manifest lists {sizes[name]}")


def _read_manifest(root: Path, keys: list | None) -> tuple[Manifest, str | None]:
    manifest_path = root / fmt.MANIFEST
    if not manifest_path.is_file():
        raise BundleError(f"{root}: no {fmt.MANIFEST}; not a bundle")
    if manifest_path.stat().st_size > MAX_MANIFEST_BYTES:
        raise BundleError(f"{manifest_path}: {manifest_path.stat().st_size} bytes; not a manifest")
    text = manifest_path.read_bytes()
    try:
        manifest = json.loads(text, parse_constant=_refuse_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BundleError(f"{manifest_path}: not valid JSON ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != fmt.FORMAT_NAME:
        raise BundleError(f"{manifest_path}: not an {fmt.FORMAT_NAME} manifest")
    version = manifest.get("format_version")
    if version != fmt.FORMAT_VERSION:
        advice = "re-export it with this SDK" if isinstance(version, int) and version < fmt.FORMAT_VERSION else ""
        raise BundleError(
            f"{manifest_path}: format version {version}, this SDK reads version {fmt.FORMAT_VERSION}"
            + (f"; {advice}" if advice else "")
        )
    _check_seal(root, text)
    signed_by = None
    if keys is not None:
        from .signing import verify

        signature_path = root / fmt.MANIFEST_SIGNATURE
        signature = signature_path.read_bytes() if signature_path.is_file() else None
        signed_by = verify(text, signature, keys, str(manifest_path))
    return Manifest.from_json(manifest, str(manifest_path)), signed_by


def _check_seal(root: Path, text: bytes) -> None:
    seal_path = root / fmt.MANIFEST_SEAL
    if not seal_path.is_file():
        raise BundleError(f"{seal_path}: missing; the manifest is not sealed (re-export the bundle)")
    if seal_path.read_text(errors="replace").strip() != hashlib.sha256(text).hexdigest():
        raise BundleError(f"{root / fmt.MANIFEST}: does not match its seal {fmt.MANIFEST_SEAL} (edited after export)")


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number")


def _check_files(root: Path, manifest: Manifest) -> None:
    files = manifest.files
    roles = {entry.role for entry in files.values()}
    for role in fmt.REQUIRED_ROLES:
        if role not in roles:
            raise BundleError(f"{root / fmt.MANIFEST}: lists no {role} file")
    for name, entry in files.items():
        target = (root / name).resolve()
        if root.resolve() not in target.parents:
            raise BundleError(f"{root / fmt.MANIFEST}: file name {name!r} points outside the bundle")
        if name in SEAL_FILES:
            raise BundleError(f"{root / fmt.MANIFEST}: lists {name!r}, which only the seal may use")
        if not target.is_file():
            raise BundleError(f"{root / name}: listed in the manifest but missing")
        if sha256_file(target) != entry.sha256:
            raise BundleError(f"{root / name}: sha256 does not match the manifest (corrupt or tampered)")
    listed = {Path(n) for n in files} | {Path(n) for n in SEAL_FILES}
    for found in root.rglob("*"):
        if found.is_file() and found.relative_to(root) not in listed:
            raise BundleError(f"{found}: not listed in the manifest; refusing an altered bundle")


def _load_memory_bank(path: Path, manifest: Manifest) -> np.ndarray:
    try:
        bank = np.load(path, allow_pickle=False)
    except ValueError as exc:
        raise BundleError(f"{path}: not a plain numpy array ({exc})") from None
    expected = (manifest.memory_bank.size, manifest.encoder.feature_dim + PLACE_COLUMNS)
    if bank.dtype != np.float32 or bank.shape != expected:
        raise BundleError(f"{path}: expected float32 {expected}, found {bank.dtype} {bank.shape}")
    features = bank[:, : expected[1] - PLACE_COLUMNS]
    if not np.isfinite(features).all():
        raise BundleError(f"{path}: {int((~np.isfinite(features)).any(axis=1).sum())} rows hold non-finite features")
    try:
        check_rows(bank, manifest.encoder.grid)
    except ValueError as exc:
        raise BundleError(f"{path}: {exc}") from None
    return bank
