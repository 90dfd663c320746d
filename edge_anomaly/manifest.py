"""The bundle manifest as typed sections: one ``from_json`` that checks, one ``to_json`` that writes.

In the manner of gguf-py's ``constants.py`` and its writer: the names live in
``bundle_format``, the shapes here. Every section is a frozen dataclass, so
every read in the package is an attribute (``manifest.memory_bank.size``), and
every write builds sections and hands them to ``bundle.seal_bundle``.

``Manifest.from_json`` is where a manifest earns trust: each key's type (``True``
is not a number here, and neither is NaN), each range that the runtime relies
on (``input.size`` a multiple of 16, ``encoder.grid`` the grid of that size, a
non-negative threshold), and that every file a section names (the language
model, its adapter, each engine) is listed with its role. A failure is one
``BundleError`` with the key's dotted name (``memory_bank.size must be a whole
number, found '768'``), never a traceback at inspect time or, worse, a
silently wrong decision.

>>> manifest = Manifest.from_json(json.loads(Path("bundle/manifest.json").read_text()), "bundle/manifest.json")
>>> manifest.memory_bank.layout, manifest.fit.augmentation
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from . import bundle_format as fmt
from .errors import BundleError, InputError
from .fit_options import FitOptions

OBJECT_NAME_MAX = 64
_OBJECT_NAME = re.compile(r"[\w][\w .,'()/+-]*")  # words, spaces and the punctuation of part names
_SHA256 = re.compile(r"[0-9a-f]{64}")
MEMORY_BANK_LAYOUTS = ("aligned", "free")
LLM_PROMPTS = ("tuned", "few-shot")  # ``runtime.verdict_prompts.STYLES``


@dataclass(frozen=True)
class InputSection:
    size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    color: str = "RGB"
    layout: str = "NCHW float32"
    resize: str = "squashed to a square; area averaging when shrinking"


@dataclass(frozen=True)
class EncoderSection:
    name: str
    weights_sha256: str
    stages: tuple[int, ...]
    strides: tuple[int, ...]
    feature_dim: int
    grid: tuple[int, ...]
    aggregation: str
    feature_norm: str
    precision: str = "fp32"  # "int8": the encoder graph is quantized and the bank fitted through it
    quantization: str | None = None  # how, and how far from fp32 it was measured; or why int8 was refused
    bank_features: int | None = None  # the leading columns the bank's rows and the layout are chosen by; None: all


@dataclass(frozen=True)
class HeadSection:
    """The text-free head baked into the decoder graph (``export.head_model``)."""

    weight: float
    weights_sha256: str
    method: str


@dataclass(frozen=True)
class DecoderSection:
    kind: str
    smoothing_sigma: float
    score: str
    text_free_head: HeadSection | None = None
    score_features: int | None = None  # the leading feature columns the score reads; None: all (the map's maximum)


@dataclass(frozen=True)
class OnnxSection:
    opset: int
    dynamic_axes: tuple[str, ...]


@dataclass(frozen=True)
class GraphSections:
    """What the exporter knows of the two graphs before any shot is fitted (``export.onnx_export``)."""

    input: InputSection
    encoder: EncoderSection
    decoder: DecoderSection
    onnx: OnnxSection
    precision: str = "fp32"


@dataclass(frozen=True)
class BankSection:
    """The memory bank as fitted: the applied augmentation and layout (``fit`` keeps what was asked)."""

    size: int
    shots: int
    coreset: bool
    augmentation: str
    layout: str
    aligned_share: float | None
    reach: int | None
    columns: str


@dataclass(frozen=True)
class NormalScores:
    """The held-out normal scores a threshold rests on: their summary, and the scores themselves (empty in
    bundles made before they were kept), so that other threshold rules can be studied from a bundle or an
    eval report without refitting."""

    count: int
    max: float
    mean: float
    std: float
    values: tuple[float, ...] = ()


@dataclass(frozen=True)
class ThresholdSection:
    value: float
    method: str
    normal_scores: NormalScores
    map_value: float | None = None  # the map's own threshold for its regions, where the score is not its maximum


@dataclass(frozen=True)
class LlmSection:
    file: str
    source: str
    quantization: str
    architecture: str
    adapter: str | None
    prompt: str


@dataclass(frozen=True)
class EngineEntry:
    """One TensorRT engine (``runtime.tensorrt_engines``); ``profiles``: input name -> [min, opt, max] shapes."""

    file: str
    graph: str
    flavour: str
    tensorrt_version: str
    precision: str
    profiles: dict[str, Any]
    compute_capabilities: tuple[str, ...]
    gpu: str | None
    built_on: str
    build_seconds: float
    bytes: int


@dataclass(frozen=True)
class FileEntry:
    role: str
    sha256: str
    bytes: int


@dataclass(frozen=True)
class Manifest:
    """A whole manifest. ``files`` is filled in by sealing (``bundle.seal_bundle``), from the files on disk."""

    input: InputSection
    encoder: EncoderSection
    decoder: DecoderSection
    onnx: OnnxSection
    precision: str
    fit: FitOptions
    memory_bank: BankSection
    threshold: ThresholdSection
    object: str
    created: str
    sdk_version: str
    shot_sources: tuple[str, ...]
    llm: LlmSection | None = None
    engines: tuple[EngineEntry, ...] = ()
    files: dict[str, FileEntry] = field(default_factory=dict)

    @classmethod
    def of(cls, graphs: GraphSections, **sections: Any) -> Manifest:
        """The graphs' sections plus the rest (``fit``, ``memory_bank``, ``threshold``, ``object``, ...)."""
        return cls(**{f.name: getattr(graphs, f.name) for f in dataclasses.fields(graphs)}, **sections)

    def named_files(self) -> dict[str, str]:
        """Every file a section names -> the role it must be listed with."""
        named = {e.file: fmt.ROLE_ENGINE for e in self.engines}
        if self.llm is not None:
            named[self.llm.file] = fmt.ROLE_LLM
            if self.llm.adapter is not None:
                named[self.llm.adapter] = fmt.ROLE_LLM_ADAPTER
        return named

    def to_json(self) -> dict[str, Any]:
        return {"format": fmt.FORMAT_NAME, "format_version": fmt.FORMAT_VERSION, **as_json(self)}

    @classmethod
    def from_json(cls, document: object, where: str) -> Manifest:
        """The checked manifest, or ``BundleError`` naming the first key the runtime could not rely on."""
        if not isinstance(document, dict):
            raise BundleError(f"{where}: manifest must be an object, found {type(document).__name__}")
        body = {k: v for k, v in document.items() if k not in ("format", "format_version")}
        manifest = _read(cls, body, "", where)
        _check_ranges(manifest, where)
        return manifest


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


def as_json(value: Any) -> Any:
    """A section (or a value in one) as JSON data: what ``to_json`` writes, and what reports quote."""
    if dataclasses.is_dataclass(value):
        return {f.name: as_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple):
        return [as_json(v) for v in value]
    if isinstance(value, dict):
        return {k: as_json(v) for k, v in value.items()}
    return value


def _fail(where: str, key: str, problem: str) -> typing.NoReturn:
    raise BundleError(f"{where}: {key} {problem}")


def _read(cls: type, value: object, path: str, where: str) -> Any:
    """``value`` read as the dataclass ``cls`` at dotted ``path``: every field typed, unknown keys refused."""
    name = path or "manifest"
    if not isinstance(value, dict):
        _fail(where, name, f"must be an object, found {type(value).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(value) - set(known))
    if unknown:
        _fail(where, name, f"holds unknown key(s) {unknown}")
    values = {}
    for key, spec in known.items():
        dotted = f"{path}.{key}" if path else key
        if key not in value:
            if spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING:
                _fail(where, dotted, "is missing")
            continue
        values[key] = _typed(hints[key], value[key], dotted, where)
    if cls is FitOptions:
        try:
            return FitOptions(**values)
        except InputError as exc:
            _fail(where, name, str(exc).removeprefix("fit options: "))
    return cls(**values)


def _typed(hint: Any, value: object, path: str, where: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _typed(inner, value, path, where)
    if dataclasses.is_dataclass(hint):
        return _read(hint, value, path, where)
    if origin is tuple:
        if not isinstance(value, list):
            _fail(where, path, f"must be a list, found {value!r}")
        return tuple(_typed(args[0], v, f"{path}[{i}]", where) for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            _fail(where, path, f"must be an object, found {type(value).__name__}")
        return {k: _typed(args[1], v, f"{path}[{k!r}]", where) for k, v in value.items()}
    if hint is Any:
        return value
    accepts, words = _SCALARS[hint]
    if not accepts(value):
        _fail(where, path, f"must be {words}, found {value!r}")
    return float(value) if hint is float else value


def _check_ranges(m: Manifest, where: str) -> None:
    """What the types cannot say: the ranges and relations the runtime acts on."""
    if m.input.size < 64 or m.input.size % 16:
        _fail(where, "input.size", f"must be a multiple of 16 of at least 64, found {m.input.size}")
    for key in ("mean", "std"):
        values = getattr(m.input, key)
        if len(values) != 3 or (key == "std" and min(values) <= 0):
            _fail(where, f"input.{key}", f"must be 3 {'positive ' if key == 'std' else ''}numbers, found {values}")
    if m.encoder.feature_dim < 1:
        _fail(where, "encoder.feature_dim", f"must be at least 1, found {m.encoder.feature_dim}")
    strides = m.encoder.strides
    if not strides or len(strides) != len(m.encoder.stages) or min(strides) < 1:
        _fail(where, "encoder.strides", f"must be positive numbers, one per stage, found {strides}")
    expected = (math.ceil(m.input.size / min(strides)),) * 2  # the bank's grid is the finest stage's
    if m.encoder.grid != expected:
        _fail(where, "encoder.grid", f"must be {list(expected)} for input.size {m.input.size}, found {m.encoder.grid}")
    if m.memory_bank.size < 1 or m.memory_bank.shots < 1:
        _fail(where, "memory_bank", f"must hold a patch and a shot, found {m.memory_bank.size} / {m.memory_bank.shots}")
    if m.memory_bank.layout not in MEMORY_BANK_LAYOUTS:
        _fail(where, "memory_bank.layout", f"must be one of {MEMORY_BANK_LAYOUTS}, found {m.memory_bank.layout!r}")
    share = m.memory_bank.aligned_share
    if share is not None and not 0.0 <= share <= 1.0:
        _fail(where, "memory_bank.aligned_share", f"must be null or a number in [0, 1], found {share}")
    if m.threshold.value < 0:
        _fail(where, "threshold.value", f"must not be negative, found {m.threshold.value}")
    split = m.decoder.score_features
    if split is not None and not 1 <= split < m.encoder.feature_dim:
        _fail(where, "decoder.score_features", f"must be null or 1-{m.encoder.feature_dim - 1}, found {split}")
    chosen = m.encoder.bank_features
    if chosen is not None and not 1 <= chosen <= (split or m.encoder.feature_dim - 1):
        _fail(where, "encoder.bank_features", f"must be null or 1-{split or m.encoder.feature_dim - 1}, found {chosen}")
    if (m.threshold.map_value is None) != (split is None):
        _fail(where, "threshold.map_value", "must be given exactly where decoder.score_features is")
    if m.threshold.map_value is not None and m.threshold.map_value < 0:
        _fail(where, "threshold.map_value", f"must not be negative, found {m.threshold.map_value}")
    held_out = m.threshold.normal_scores
    if held_out.values and len(held_out.values) != held_out.count:
        _fail(where, "threshold.normal_scores.values", f"must hold count ({held_out.count}) scores, found "
              f"{len(held_out.values)}")
    problem = object_name_problem(m.object)
    if problem:
        _fail(where, "object", problem)
    if m.llm is not None and m.llm.prompt not in LLM_PROMPTS:
        _fail(where, "llm.prompt", f"must be one of {LLM_PROMPTS}, found {m.llm.prompt!r}")
    for name, entry in m.files.items():
        key = f"files[{name!r}]"
        if entry.role not in fmt.ROLES:
            _fail(where, f"{key}.role", f"must be one of {fmt.ROLES}, found {entry.role!r}")
        if not _SHA256.fullmatch(entry.sha256):
            _fail(where, f"{key}.sha256", "must be 64 lowercase hex digits")
        if entry.bytes < 0:
            _fail(where, f"{key}.bytes", f"must be a byte count, found {entry.bytes}")
    for name, role in m.named_files().items():
        listed = m.files.get(name)
        if listed is None or listed.role != role:
            _fail(where, "files", f"must list {name!r} as a {role} file (a section names it)")


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


_SCALARS = {  # a field's type -> what it accepts, in words for the message
    bool: (lambda v: isinstance(v, bool), "true or false"),
    int: (lambda v: isinstance(v, int) and not isinstance(v, bool), "a whole number"),
    float: (_is_number, "a finite number"),
    str: (lambda v: isinstance(v, str), "text"),
}
