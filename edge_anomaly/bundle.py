"""Reading and writing bundles: validate everything before trusting anything.

>>> bundle = open_bundle("bundle/")          # or "bundle.tar.gz"
>>> bundle.threshold, bundle.memory_bank().shape
(0.61, (1024, 152))

The reader checks the format name and version, that every file the manifest
lists is present with the recorded sha256, that no unlisted file sits beside
them, and that the memory bank is a plain float32 array of the recorded shape
(``np.load(..., allow_pickle=False)``). A failing bundle raises ``BundleError``
naming the file and the reason.
"""

from __future__ import annotations

import hashlib
import json
import math
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import bundle_format as fmt
from .errors import BundleError
from .placement import PLACE_COLUMNS, check_rows


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class Bundle:
    """A bundle that passed every check; ``manifest`` is the parsed ``manifest.json``."""

    root: Path
    manifest: dict[str, Any]

    @property
    def threshold(self) -> float:
        return float(self.manifest["threshold"]["value"])

    @property
    def input_size(self) -> int:
        return int(self.manifest["input"]["size"])

    @property
    def mean(self) -> tuple[float, ...]:
        return tuple(self.manifest["input"]["mean"])

    @property
    def std(self) -> tuple[float, ...]:
        return tuple(self.manifest["input"]["std"])

    @property
    def object_name(self) -> str:
        return str(self.manifest.get("object", "part"))

    def path_of(self, role: str) -> Path:
        """The single file of ``role`` (encoder, decoder, memory bank)."""
        names = self.files_of(role)
        if len(names) != 1:
            raise BundleError(f"{self.root}: expected one {role} file, manifest lists {len(names)}")
        return names[0]

    def files_of(self, role: str) -> list[Path]:
        return sorted(self.root / n for n, e in self.manifest["files"].items() if e["role"] == role)

    def memory_bank(self) -> np.ndarray:
        return _load_memory_bank(self.path_of(fmt.ROLE_MEMORY_BANK), self.manifest)


def open_bundle(path: str | Path) -> Bundle:
    """Open and fully verify a bundle directory or ``.tar``/``.tar.gz``; raise ``BundleError`` if anything is off."""
    path = Path(path)
    if not path.exists():
        raise BundleError(f"bundle {path} does not exist")
    root = _extract_tar(path) if path.is_file() else path
    manifest = _read_manifest(root)
    _check_files(root, manifest)
    bundle = Bundle(root, manifest)
    bundle.memory_bank()  # shape, dtype and pickle checks happen on load
    return bundle


def seal_bundle(root: Path, manifest: dict[str, Any], roles: dict[str, str]) -> Bundle:
    """Hash the files named in ``roles`` (relative path -> role), write the manifest, and verify the result."""
    for name, role in roles.items():
        if role not in fmt.ROLES:
            raise ValueError(f"unknown role {role!r} for {name}")
    manifest = dict(manifest)
    manifest["format"] = fmt.FORMAT_NAME
    manifest["format_version"] = fmt.FORMAT_VERSION
    manifest["files"] = {
        name: {"role": role, "sha256": sha256_file(root / name), "bytes": (root / name).stat().st_size}
        for name, role in sorted(roles.items())
    }
    (root / fmt.MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return open_bundle(root)


def write_tar(bundle: Bundle, out: Path) -> Path:
    """Pack a bundle directory into one ``.tar.gz`` for shipping to the edge box."""
    with tarfile.open(out, "w:gz") as tar:
        for name in [fmt.MANIFEST, *bundle.manifest["files"]]:
            tar.add(bundle.root / name, arcname=name)
    return out


def _extract_tar(path: Path) -> Path:
    if not tarfile.is_tarfile(path):
        raise BundleError(f"bundle {path} is a file but not a tar archive")
    target = Path(tempfile.mkdtemp(prefix="edge-anomaly-bundle-"))
    try:
        with tarfile.open(path) as tar:
            tar.extractall(target, filter="data")  # refuses links and paths outside target
    except (tarfile.TarError, OSError) as exc:
        raise BundleError(f"bundle {path}: cannot unpack: {exc}") from None
    return target


def _read_manifest(root: Path) -> dict[str, Any]:
    manifest_path = root / fmt.MANIFEST
    if not manifest_path.is_file():
        raise BundleError(f"{root}: no {fmt.MANIFEST}; not a bundle")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{manifest_path}: not valid JSON ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != fmt.FORMAT_NAME:
        raise BundleError(f"{manifest_path}: not an {fmt.FORMAT_NAME} manifest")
    version = manifest.get("format_version")
    if version != fmt.FORMAT_VERSION:
        raise BundleError(f"{manifest_path}: format version {version}, this SDK reads version {fmt.FORMAT_VERSION}")
    for key in ("files", "input", "threshold", "encoder", "memory_bank"):
        if not isinstance(manifest.get(key), dict):
            raise BundleError(f"{manifest_path}: missing section {key!r}")
    threshold = manifest["threshold"].get("value")
    if not isinstance(threshold, (int, float)) or not math.isfinite(threshold):
        raise BundleError(f"{manifest_path}: threshold value {threshold!r} is not a finite number")
    return manifest


def _check_files(root: Path, manifest: dict[str, Any]) -> None:
    files = manifest["files"]
    roles = {entry.get("role") for entry in files.values()}
    for role in fmt.REQUIRED_ROLES:
        if role not in roles:
            raise BundleError(f"{root / fmt.MANIFEST}: lists no {role} file")
    for name, entry in files.items():
        target = (root / name).resolve()
        if root.resolve() not in target.parents:
            raise BundleError(f"{root / fmt.MANIFEST}: file name {name!r} points outside the bundle")
        if not target.is_file():
            raise BundleError(f"{root / name}: listed in the manifest but missing")
        if sha256_file(target) != entry.get("sha256"):
            raise BundleError(f"{root / name}: sha256 does not match the manifest (corrupt or tampered)")
    listed = {Path(n) for n in files} | {Path(fmt.MANIFEST)}
    for found in root.rglob("*"):
        if found.is_file() and found.relative_to(root) not in listed:
            raise BundleError(f"{found}: not listed in the manifest; refusing an altered bundle")


def _load_memory_bank(path: Path, manifest: dict[str, Any]) -> np.ndarray:
    try:
        bank = np.load(path, allow_pickle=False)
    except ValueError as exc:
        raise BundleError(f"{path}: not a plain numpy array ({exc})") from None
    expected = (int(manifest["memory_bank"]["size"]), int(manifest["encoder"]["feature_dim"]) + PLACE_COLUMNS)
    if bank.dtype != np.float32 or bank.shape != expected:
        raise BundleError(f"{path}: expected float32 {expected}, found {bank.dtype} {bank.shape}")
    try:
        check_rows(bank, tuple(manifest["encoder"]["grid"]))
    except ValueError as exc:
        raise BundleError(f"{path}: {exc}") from None
    return bank
