"""Building TensorRT engines from a bundle's graphs, for either TensorRT flavour, and judging fit.

One builder serves both APIs, which differ only in the module name:

- ``rtx``: TensorRT for RTX (``tensorrt_rtx_bindings``). Builds on the build
  host with no GPU; engines run on compute capability 8.0, 8.6, 8.9 and 12.x
  (RTX boxes, A100) and specialise on the device at first run.
- ``full``: TensorRT (``tensorrt``; JetPack on Jetson, data-center GPUs).
  Builds on the target (or a host with the same GPU); engines run on that GPU
  model and TensorRT version only.

Optimization profiles cover batch 1..``max_batch`` (optimum 1) and a memory
bank of 1..``max_bank`` patches (optimum: the bank the bundle has now), so
``add_normal_shots`` never needs a rebuild until the bank outgrows ``max_bank``.
Each engine is listed in the manifest with flavour, TensorRT version,
precision, profiles and the compute capabilities it runs on.
"""

from __future__ import annotations

import importlib
import platform
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from types import ModuleType

import numpy as np

from edge_anomaly import bundle_format as fmt
from edge_anomaly.bundle import Bundle, open_bundle, seal_bundle
from edge_anomaly.errors import BackendError
from edge_anomaly.images import read_image
from edge_anomaly.manifest import EngineEntry
from edge_anomaly.memory_bank import DEFAULT_MAX_SIZE
from edge_anomaly.placement import PLACE_COLUMNS

from .gpu_info import GpuInfo, detect_gpu

FLAVOURS = {
    "rtx": ("tensorrt_rtx_bindings", "pip install tensorrt-rtx-cu13-libs tensorrt-rtx-cu13-bindings"),
    "full": ("tensorrt", "use JetPack's TensorRT on Jetson, or NVIDIA's tensorrt wheels on x86"),
}
RTX_COMPUTE_CAPABILITIES = ((8, 0), (8, 6), (8, 9))  # and every 12.x and newer
PRECISIONS = ("fp32", "fp16", "int8")


class EngineBuildError(BackendError):
    """TensorRT could not parse or build a graph; the message carries TensorRT's own errors."""


@dataclass(frozen=True)
class EngineOptions:
    precision: str = "fp16"
    max_batch: int = 8
    max_bank: int = DEFAULT_MAX_SIZE
    workspace_gib: float | None = None
    timing_cache: Path | None = None
    calibration_images: tuple[Path, ...] = ()
    calibration_cache: Path | None = None


def load_tensorrt(flavour: str) -> ModuleType:
    if flavour not in FLAVOURS:
        raise BackendError(f"unknown TensorRT flavour {flavour!r}: expected one of {tuple(FLAVOURS)}")
    module, hint = FLAVOURS[flavour]
    try:
        return importlib.import_module(module)
    except ImportError:
        raise BackendError(f"TensorRT flavour {flavour!r} needs the module {module}: {hint}") from None


def build_engines(bundle_dir: Path, flavour: str, options: EngineOptions) -> Bundle:
    """Build encoder and decoder engines into ``bundle_dir`` (a directory bundle) and reseal its manifest."""
    if options.precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {options.precision!r}")
    bundle = open_bundle(bundle_dir)
    if bundle.root != Path(bundle_dir):
        raise BackendError("build engines into a bundle directory, not a tar: unpack it first")
    trt = load_tensorrt(flavour)
    gpu = detect_gpu()
    if flavour == "full" and gpu is None:
        raise BackendError("full TensorRT builds engines for the GPU it runs on, and there is none here")
    entries = [e for e in bundle.manifest.engines if not _same_slot(e, flavour, options.precision)]
    roles = {name: e.role for name, e in bundle.manifest.files.items()}
    for name in [n for n, r in roles.items() if r == fmt.ROLE_ENGINE and not _kept(n, entries)]:
        (bundle.root / name).unlink()  # the engine this build replaces
        del roles[name]
    with tempfile.TemporaryDirectory(prefix="edge-anomaly-engine-") as work:
        for graph, shapes in _profiles(bundle, options).items():
            source = _graph_for_precision(bundle, graph, options, Path(work))
            start = time.perf_counter()
            plan = _build(trt, source, shapes, options)
            name = f"{graph}.{flavour}.{options.precision}.engine"
            (bundle.root / name).write_bytes(plan)
            roles[name] = fmt.ROLE_ENGINE
            entries.append(_entry(trt, name, graph, flavour, options, shapes, gpu, time.perf_counter() - start, plan))
    return seal_bundle(bundle.root, replace(bundle.manifest, engines=tuple(entries)), roles)


def engine_fit(entry: EngineEntry, gpu: GpuInfo | None) -> str | None:
    """``None`` when the engine of ``entry`` can run here, else the reason it cannot."""
    flavour = entry.flavour
    try:
        trt = load_tensorrt(flavour)
    except BackendError as exc:
        return str(exc)
    if trt.__version__ != entry.tensorrt_version:
        return (
            f"{entry.file} was built with {flavour} TensorRT {entry.tensorrt_version}, "
            f"this machine has {trt.__version__}: rebuild with edge-anomaly build-engine"
        )
    if gpu is None:
        return f"{entry.file} needs an NVIDIA GPU and none is visible (install cuda-python, check the driver)"
    if flavour == "rtx" and not (gpu.compute_capability in RTX_COMPUTE_CAPABILITIES or gpu.compute_capability[0] >= 12):
        return (
            f"{entry.file} is a TensorRT-RTX engine; the {gpu.name} (compute capability {gpu.cc}) "
            "is not an RTX-class GPU (8.0, 8.6, 8.9, 12.x): build a full TensorRT engine on it"
        )
    if flavour == "full" and gpu.cc not in entry.compute_capabilities:
        return (
            f"{entry.file} was built for compute capability {', '.join(entry.compute_capabilities)} "
            f"({entry.gpu}), this GPU is {gpu.name} ({gpu.cc}): rebuild on this device"
        )
    return None


def _same_slot(entry: EngineEntry, flavour: str, precision: str) -> bool:
    return entry.flavour == flavour and entry.precision == precision


def _kept(name: str, entries: list[EngineEntry]) -> bool:
    return any(e.file == name for e in entries)


def _profiles(bundle: Bundle, options: EngineOptions) -> dict[str, dict[str, tuple[tuple, tuple, tuple]]]:
    size = bundle.input_size
    grid = bundle.manifest.encoder.grid
    n, dim = grid[0] * grid[1], bundle.manifest.encoder.feature_dim
    bank, row = bundle.manifest.memory_bank.size, dim + PLACE_COLUMNS
    b = options.max_batch
    return {
        "encoder": {fmt.ENCODER_INPUT: ((1, 3, size, size), (1, 3, size, size), (b, 3, size, size))},
        "decoder": {
            fmt.DECODER_INPUTS[0]: ((1, n, dim), (1, n, dim), (b, n, dim)),
            fmt.DECODER_INPUTS[1]: ((1, row), (bank, row), (max(bank, options.max_bank), row)),
        },
    }


def _graph_for_precision(bundle: Bundle, graph: str, options: EngineOptions, work: Path) -> Path:
    from .onnx_precision import to_fp16, to_int8

    source = bundle.path_of(graph)
    if options.precision == "fp32" or (graph == "encoder" and bundle.manifest.encoder.precision == "int8"):
        return source  # an int8 encoder is already Q/DQ, calibrated at export with the bank fitted through it
    if options.precision == "int8" and graph == "encoder":
        return to_int8(
            source, work / f"{graph}.int8.onnx", _calibration_batches(bundle, options), options.calibration_cache
        )
    return to_fp16(source, work / f"{graph}.fp16.onnx")  # int8 bundles keep the decoder in fp16


def _calibration_batches(bundle: Bundle, options: EngineOptions) -> list[dict[str, np.ndarray]]:
    """Calibration images (or, without any, the bundle's normal shots and their mirror images)."""
    from edge_anomaly.images import Preprocessing

    prep = Preprocessing(bundle.input_size, bundle.mean, bundle.std)
    images = [read_image(p) for p in options.calibration_images]
    if not images:
        shots = [read_image(p) for p in bundle.files_of(fmt.ROLE_SHOT)]
        images = shots + [np.ascontiguousarray(s[:, ::-1]) for s in shots]
    return [{fmt.ENCODER_INPUT: prep.batch([im])} for im in images]


def _build(trt: ModuleType, onnx_path: Path, shapes: dict, options: EngineOptions) -> bytes:
    logger = trt.Logger(trt.Logger.ERROR)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineBuildError(f"TensorRT cannot parse {onnx_path.name}: {errors}")
    config = builder.create_builder_config()
    if options.workspace_gib is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(options.workspace_gib * (1 << 30)))
    if options.precision == "fp16" and hasattr(trt.BuilderFlag, "FP16"):
        config.set_flag(trt.BuilderFlag.FP16)  # full TensorRT: lets weakly typed layers pick fp16 too
    profile = builder.create_optimization_profile()
    for name, (low, opt, high) in shapes.items():
        profile.set_shape(name, low, opt, high)
    config.add_optimization_profile(profile)
    cache = None
    if options.timing_cache is not None:
        data = options.timing_cache.read_bytes() if options.timing_cache.is_file() else b""
        cache = config.create_timing_cache(data)
        config.set_timing_cache(cache, False)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise EngineBuildError(f"TensorRT could not build an engine from {onnx_path.name} (see its log above)")
    if cache is not None:
        options.timing_cache.write_bytes(bytes(config.get_timing_cache().serialize()))
    return bytes(plan)


def _entry(trt, name, graph, flavour, options, shapes, gpu, seconds, plan) -> EngineEntry:
    if flavour == "rtx":
        capabilities = [f"{a}.{b}" for a, b in RTX_COMPUTE_CAPABILITIES] + ["12.0+"]
    else:
        capabilities = [gpu.cc]
    return EngineEntry(
        file=name,
        graph=graph,
        flavour=flavour,
        tensorrt_version=trt.__version__,
        precision=options.precision,
        profiles={k: [list(s) for s in v] for k, v in shapes.items()},
        compute_capabilities=tuple(capabilities),
        gpu=gpu.name if gpu is not None else None,
        built_on=platform.node() or platform.platform(),
        build_seconds=round(seconds, 2),
        bytes=len(plan),
    )
