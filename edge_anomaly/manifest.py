"""What a manifest must hold before anything in it is trusted: types, ranges, finiteness.

The sha256 list proves the files are the ones the manifest names; these checks
prove the manifest itself says something the runtime can act on. Every key the
loader reads is checked here, once, with the key's dotted name in the message
(``memory_bank.size must be a positive integer, found "12"``), so an edited or
hand-written manifest ends in one clear ``BundleError`` instead of a traceback
at inspect time or, worse, a silently wrong decision. ``True`` is not a number
here, and neither is NaN.

>>> check_manifest(json.loads(Path("bundle/manifest.json").read_text()), "bundle/manifest.json")
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from . import bundle_format as fmt
from .errors import BundleError

OBJECT_NAME_MAX = 64
_OBJECT_NAME = re.compile(r"[\w][\w .,'()/+-]*")  # words, spaces and the punctuation of part names
_SHA256 = re.compile(r"[0-9a-f]{64}")
PATCH_STRIDE = 8  # the finest stage the bank's grid lives on (``export.patch_model``)
MEMORY_BANK_LAYOUTS = ("aligned", "free")


def object_name_problem(name: object) -> str | None:
    """Why ``name`` cannot stand in a verdict sentence, or None. One line of words, at most
    ``OBJECT_NAME_MAX`` characters: it is spoken, printed on overlays and put into the model's prompt, so
    a newline or a sentence of its own ("Verdict: ... pass it.") must never get there."""
    if not isinstance(name, str):
        return f"must be text, found {type(name).__name__}"
    if not name.strip():
        return "must not be empty"
    if len(name) > OBJECT_NAME_MAX:
        return f"must be at most {OBJECT_NAME_MAX} characters, found {len(name)}"
    if not _OBJECT_NAME.fullmatch(name):
        return (
            f"may hold letters, digits, spaces and . , ' ( ) / + - only, and start with a letter or digit; "
            f"found {name!r}"
        )
    return None


def check_manifest(manifest: object, where: str) -> None:
    """Raise ``BundleError`` naming the first key of ``manifest`` the runtime could not rely on."""
    m = _Checker(where)
    m.section(manifest, "manifest")
    m.files(manifest.get("files"))
    size = m.integer(manifest, "input", "size", low=64)
    if size % 16:
        m.fail("input.size", f"must be a multiple of 16, found {size}")
    for key in ("mean", "std"):
        values = m.numbers(manifest, "input", key, count=3)
        if key == "std" and min(values) <= 0:
            m.fail("input.std", f"must be positive, found {values}")
    m.integer(manifest, "encoder", "feature_dim", low=1)
    grid = m.numbers(manifest, "encoder", "grid", count=2)
    expected = [math.ceil(size / PATCH_STRIDE)] * 2
    if grid != expected:
        m.fail("encoder.grid", f"must be {expected} for input.size {size}, found {grid}")
    m.integer(manifest, "memory_bank", "size", low=1)
    m.integer(manifest, "memory_bank", "shots", low=1)
    m.choice(manifest, "memory_bank", "layout", MEMORY_BANK_LAYOUTS)
    share = m.value(manifest, "memory_bank", "aligned_share")
    if share is not None and not (_is_number(share) and 0.0 <= share <= 1.0):
        m.fail("memory_bank.aligned_share", f"must be null or a number in [0, 1], found {share!r}")
    threshold = m.number(manifest, "threshold", "value")
    if threshold < 0:
        m.fail("threshold.value", f"must not be negative, found {threshold}")
    problem = object_name_problem(manifest.get("object"))
    if problem:
        m.fail("object", problem)
    llm = manifest.get("llm")
    if llm is not None:
        m.section(llm, "llm")
        for key in ("file", "prompt"):
            if not isinstance(llm.get(key), str):
                m.fail(f"llm.{key}", f"must be text, found {llm.get(key)!r}")
    engines = manifest.get("engines", [])
    if not isinstance(engines, list) or not all(isinstance(e, dict) for e in engines):
        m.fail("engines", "must be a list of objects")


class _Checker:
    """Small typed getters that fail with the key's dotted name."""

    def __init__(self, where: str) -> None:
        self.where = where

    def fail(self, key: str, problem: str) -> None:
        raise BundleError(f"{self.where}: {key} {problem}")

    def section(self, value: object, name: str) -> Mapping[str, Any]:
        if not isinstance(value, dict):
            self.fail(name, f"must be an object, found {type(value).__name__}")
        return value

    def value(self, manifest: Mapping[str, Any], section: str, key: str) -> Any:
        part = manifest.get(section)
        self.section(part, section)
        if key not in part:
            self.fail(f"{section}.{key}", "is missing")
        return part[key]

    def number(self, manifest: Mapping[str, Any], section: str, key: str) -> float:
        value = self.value(manifest, section, key)
        if not _is_number(value):
            self.fail(f"{section}.{key}", f"must be a finite number, found {value!r}")
        return float(value)

    def integer(self, manifest: Mapping[str, Any], section: str, key: str, low: int) -> int:
        value = self.value(manifest, section, key)
        if not (isinstance(value, int) and not isinstance(value, bool)) or value < low:
            self.fail(f"{section}.{key}", f"must be an integer of at least {low}, found {value!r}")
        return value

    def numbers(self, manifest: Mapping[str, Any], section: str, key: str, count: int) -> list[float]:
        value = self.value(manifest, section, key)
        if not (isinstance(value, list) and len(value) == count and all(_is_number(v) for v in value)):
            self.fail(f"{section}.{key}", f"must be a list of {count} finite numbers, found {value!r}")
        return value

    def choice(self, manifest: Mapping[str, Any], section: str, key: str, choices: tuple[str, ...]) -> str:
        value = self.value(manifest, section, key)
        if value not in choices:
            self.fail(f"{section}.{key}", f"must be one of {choices}, found {value!r}")
        return value

    def files(self, files: object) -> None:
        self.section(files, "files")
        for name, entry in files.items():
            if not isinstance(entry, dict):
                self.fail(f"files[{name!r}]", f"must be an object, found {type(entry).__name__}")
            if entry.get("role") not in fmt.ROLES:
                self.fail(f"files[{name!r}].role", f"must be one of {fmt.ROLES}, found {entry.get('role')!r}")
            if not (isinstance(entry.get("sha256"), str) and _SHA256.fullmatch(entry["sha256"])):
                self.fail(f"files[{name!r}].sha256", "must be 64 lowercase hex digits")
            size = entry.get("bytes")
            if not (isinstance(size, int) and not isinstance(size, bool)) or size < 0:
                self.fail(f"files[{name!r}].bytes", f"must be a byte count, found {size!r}")


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
