"""Choosing the inference backend for a bundle on this machine, and saying why.

Every backend offers the same two calls, ``encode(images)`` and
``decode(features, memory_bank)``, so the SDK never cares which one runs.
Backends are a table of entries, each with a probe that says why it cannot run
here. ``auto`` takes the first that can: the bundle's TensorRT engines when a
pair of them (encoder and decoder, same flavour and precision) fits this GPU
and TensorRT version, else ONNX Runtime on CUDA, else OpenVINO on an x86 CPU
where it is installed (the decoder in bf16 where the CPU has bfloat16), else
ONNX Runtime on the CPU; the reason names what the
ones before it lacked. A new backend is one more entry.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import platform
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from edge_anomaly import bundle_format as fmt
from edge_anomaly.bundle import Bundle
from edge_anomaly.errors import BackendError

BACKENDS = ("auto", "tensorrt", "onnxruntime", "onnxruntime-cpu", "onnxruntime-cuda", "openvino", "openvino-bf16")
PRECISION_PREFERENCE = ("fp16", "int8", "fp32")
ONNXRUNTIME_CUDA_WHEEL = "onnxruntime-gpu"  # the CUDA provider's wheel, PyPI's and NVIDIA's Jetson builds alike


class Backend(Protocol):
    """What a backend offers: the two graphs, and ``close`` to release sessions, engines or clients."""

    name: str

    def encode(self, images: np.ndarray) -> np.ndarray: ...

    def decode(self, features: np.ndarray, memory_bank: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class BackendChoice:
    """The backend that will run, and the reason it was picked (shown to the user)."""

    backend: Backend
    reason: str


@dataclass(frozen=True)
class BackendEntry:
    """One way to run a bundle: ``probe`` says why it cannot run here (None: it can), ``make`` builds it
    (``bundle, threads -> backend`` and why it was picked) and may still raise ``BackendError``."""

    name: str
    probe: Callable[[Bundle], str | None]
    make: Callable[[Bundle, int], BackendChoice]


def select_backend(bundle: Bundle, backend: str = "auto", threads: int = 0) -> BackendChoice:
    """``auto``: the first entry of ``TABLE`` that can run here (TensorRT engines that fit this GPU, ONNX
    Runtime on CUDA, OpenVINO on an x86 CPU, ONNX Runtime on the CPU), with what the ones before it lacked;
    a name: that entry, or ``BackendError`` saying why it cannot run; ``triton://host:port/model``: the
    bundle's graphs on that Triton server (``triton_backend``)."""
    from .triton_backend import TritonAddress, TritonBackend, is_triton_url

    if is_triton_url(backend):
        address = TritonAddress.parse(backend)
        return BackendChoice(TritonBackend(address, bundle), f"asked for the Triton server at {address.url}")
    if backend not in BACKENDS:
        raise BackendError(f"unknown backend {backend!r}: expected one of {BACKENDS} or triton://host:port/model")
    if backend == "onnxruntime":  # ONNX Runtime on whatever device it has
        backend = "onnxruntime-cuda" if _onnxruntime_problem(bundle, "cuda") is None else "onnxruntime-cpu"
    if backend != "auto":
        return _by_name(bundle, backend, threads)
    return _first_that_runs(bundle, threads)


def _by_name(bundle: Bundle, name: str, threads: int) -> BackendChoice:
    entry = next(e for e in TABLE if e.name == name)
    problem = entry.probe(bundle)
    if problem:
        raise BackendError(f"{name} cannot run here: {problem}")
    return BackendChoice(entry.make(bundle, threads).backend, f"asked for {name}")


def _first_that_runs(bundle: Bundle, threads: int) -> BackendChoice:
    """``auto``: the first entry that runs, and why each one before it did not."""
    passed = []
    for entry in TABLE:
        problem = entry.probe(bundle)
        if problem is None:
            try:
                choice = entry.make(bundle, threads)
            except BackendError as exc:
                problem = str(exc)
            else:
                return BackendChoice(choice.backend, "; ".join([choice.reason, *passed]))
        if entry.name != "tensorrt" or bundle.manifest.engines:  # engines are only news where there are some
            passed.append(f"{_SHORT[entry.name]} not used: {problem}")
    raise BackendError("no backend can run this bundle here: " + "; ".join(passed))


def probe(bundle: Bundle) -> dict[str, str | None]:
    """Each table entry's name -> why it cannot run ``bundle`` here, or None where it can (``bench`` reports
    this beside the backend that was chosen)."""
    return {entry.name: entry.probe(bundle) for entry in TABLE}


def _graphs(bundle: Bundle) -> tuple:
    return bundle.path_of(fmt.ROLE_ENCODER), bundle.path_of(fmt.ROLE_DECODER)


def _onnxruntime_problem(bundle: Bundle, device: str) -> str | None:
    """Asked of the package metadata first: importing onnxruntime (about 30 MB resident) only to learn that it
    has no CUDA provider would cost a box that runs on OpenVINO or TensorRT that memory for nothing."""
    if importlib.util.find_spec("onnxruntime") is None:
        return "onnxruntime is not installed: pip install edge-anomaly[runtime]"
    if device == "cuda":
        no_cuda = "onnxruntime has no CUDA provider here (install onnxruntime-gpu, check the GPU)"
        if not _installed(ONNXRUNTIME_CUDA_WHEEL):
            return no_cuda
        from .onnxruntime_backend import cuda_available

        if not cuda_available():
            return no_cuda
    return None


def _installed(distribution: str) -> bool:
    try:
        importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def _onnxruntime(device: str, why: str) -> Callable[[Bundle, int], BackendChoice]:
    def make(bundle: Bundle, threads: int) -> BackendChoice:
        from .onnxruntime_backend import OnnxRuntimeBackend

        return BackendChoice(OnnxRuntimeBackend(*_graphs(bundle), device, threads), why)

    return make


def _openvino_problem(precision: str) -> Callable[[Bundle], str | None]:
    def problem(bundle: Bundle) -> str | None:
        if platform.machine().lower() not in ("x86_64", "amd64"):
            return f"OpenVINO is chosen on x86 CPUs only, this is {platform.machine()}"
        from .openvino_backend import openvino_problem

        return openvino_problem(precision)

    return problem


def _openvino(precision: str, why: str) -> Callable[[Bundle, int], BackendChoice]:
    def make(bundle: Bundle, threads: int) -> BackendChoice:
        from .openvino_backend import OpenVinoBackend

        return BackendChoice(OpenVinoBackend(*_graphs(bundle), threads, precision), why)

    return make


def _tensorrt_problem(bundle: Bundle) -> str | None:
    if not bundle.manifest.engines:
        return "the bundle has no TensorRT engines (edge-anomaly build-engine)"
    return None


def _make_tensorrt(bundle: Bundle, threads: int) -> BackendChoice:
    choice, why_not = _tensorrt_choice(bundle)
    if choice is None:
        raise BackendError(f"no TensorRT engine of this bundle can run here: {why_not}")
    return choice


_SHORT = {"tensorrt": "TensorRT", "onnxruntime-cuda": "CUDA", "openvino": "OpenVINO", "onnxruntime-cpu": "CPU",
          "openvino-bf16": "OpenVINO bf16"}  # fmt: skip

TABLE = (
    BackendEntry("tensorrt", _tensorrt_problem, _make_tensorrt),
    BackendEntry(
        "onnxruntime-cuda",
        lambda b: _onnxruntime_problem(b, "cuda"),
        _onnxruntime("cuda", "onnxruntime sees a CUDA GPU"),
    ),
    BackendEntry(  # the dev set's figures hold with the decoder in bf16 (docs/benchmarks.md): taken where it runs
        "openvino-bf16",
        _openvino_problem("bf16"),
        _openvino("bf16", "OpenVINO on this x86 CPU with bfloat16: the encoder as exported, bf16 decoder"),
    ),
    BackendEntry("openvino", _openvino_problem("f32"), _openvino("f32", "OpenVINO on this x86 CPU, f32")),
    BackendEntry(
        "onnxruntime-cpu", lambda b: _onnxruntime_problem(b, "cpu"), _onnxruntime("cpu", "onnxruntime on the CPU")
    ),
)


def _tensorrt_choice(bundle: Bundle) -> tuple[BackendChoice | None, str]:
    """The best-fitting engine pair, or ``None`` and why none fits."""
    entries = bundle.manifest.engines
    from .gpu_info import detect_gpu
    from .tensorrt_engines import engine_fit

    gpu = detect_gpu()
    pairs = {}
    for e in entries:
        pairs.setdefault((e.flavour, e.precision), {})[e.graph] = e
    ranked = sorted(pairs.items(), key=lambda kv: PRECISION_PREFERENCE.index(kv[0][1]))
    reasons = []
    for (flavour, precision), graphs in ranked:
        if set(graphs) != {"encoder", "decoder"}:
            reasons.append(f"{flavour} {precision}: encoder or decoder engine missing")
            continue
        misfit = engine_fit(graphs["encoder"], gpu) or engine_fit(graphs["decoder"], gpu)
        if misfit:
            reasons.append(misfit)
            continue
        from .tensorrt_backend import TensorRTBackend

        try:
            backend = TensorRTBackend(
                bundle.root / graphs["encoder"].file, bundle.root / graphs["decoder"].file, flavour, precision
            )
        except BackendError as exc:
            reasons.append(str(exc))
            continue
        return BackendChoice(backend, f"{flavour} TensorRT {precision} engines fit the {gpu.name} ({gpu.cc})"), ""
    return None, "; ".join(reasons)
