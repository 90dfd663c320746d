"""Choosing the inference backend for a bundle on this machine, and saying why.

Every backend offers the same two calls, ``encode(images)`` and
``decode(features, memory_bank)``, so the SDK never cares which one runs.
``auto`` takes the bundle's TensorRT engines when a pair of them (encoder and
decoder, same flavour and precision) fits this GPU and TensorRT version, else
ONNX Runtime on CUDA, else on the CPU; the reason names what did not fit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from edge_anomaly import bundle_format as fmt
from edge_anomaly.bundle import Bundle
from edge_anomaly.errors import BackendError

BACKENDS = ("auto", "tensorrt", "onnxruntime", "onnxruntime-cpu", "onnxruntime-cuda")
PRECISION_PREFERENCE = ("fp16", "int8", "fp32")


class Backend(Protocol):
    name: str

    def encode(self, images: np.ndarray) -> np.ndarray: ...

    def decode(self, features: np.ndarray, memory_bank: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


@dataclass(frozen=True)
class BackendChoice:
    """The backend that will run, and the reason it was picked (shown to the user)."""

    backend: Backend
    reason: str


def select_backend(bundle: Bundle, backend: str = "auto", threads: int = 0) -> BackendChoice:
    """``auto``: ONNX Runtime on CUDA when onnxruntime-gpu sees a GPU, else on the CPU."""
    if backend not in BACKENDS:
        raise BackendError(f"unknown backend {backend!r}: expected one of {BACKENDS}")
    no_engine = ""
    if backend == "tensorrt" and not bundle.manifest.get("engines"):
        raise BackendError("the bundle has no TensorRT engines: build them with edge-anomaly build-engine")
    if backend in ("auto", "tensorrt") and bundle.manifest.get("engines"):
        choice, no_engine = _tensorrt_choice(bundle)
        if choice is not None:
            return choice
        if backend == "tensorrt":
            raise BackendError(f"no TensorRT engine of this bundle can run here: {no_engine}")
    try:
        from .onnxruntime_backend import OnnxRuntimeBackend, cuda_available
    except ImportError as exc:
        raise BackendError(f"onnxruntime is not installed ({exc}): pip install edge-anomaly[runtime]") from None
    encoder, decoder = bundle.path_of(fmt.ROLE_ENCODER), bundle.path_of(fmt.ROLE_DECODER)
    if backend == "onnxruntime-cpu":
        return BackendChoice(OnnxRuntimeBackend(encoder, decoder, "cpu", threads), "asked for onnxruntime-cpu")
    if backend == "onnxruntime-cuda":
        return BackendChoice(OnnxRuntimeBackend(encoder, decoder, "cuda", threads), "asked for onnxruntime-cuda")
    if cuda_available():
        why = "onnxruntime sees a CUDA GPU" + (f"; TensorRT not used: {no_engine}" if no_engine else "")
        return BackendChoice(OnnxRuntimeBackend(encoder, decoder, "cuda", threads), why)
    why = "asked for onnxruntime" if backend == "onnxruntime" else "no GPU provider available"
    if no_engine:
        why = f"{why}; TensorRT not used: {no_engine}"
    return BackendChoice(OnnxRuntimeBackend(encoder, decoder, "cpu", threads), f"{why}: running on the CPU")


def _tensorrt_choice(bundle: Bundle) -> tuple[BackendChoice | None, str]:
    """The best-fitting engine pair, or ``None`` and why none fits."""
    entries = bundle.manifest["engines"]
    from .gpu_info import detect_gpu
    from .tensorrt_engines import engine_fit

    gpu = detect_gpu()
    pairs = {}
    for e in entries:
        pairs.setdefault((e["flavour"], e["precision"]), {})[e["graph"]] = e
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
                bundle.root / graphs["encoder"]["file"], bundle.root / graphs["decoder"]["file"], flavour, precision
            )
        except BackendError as exc:
            reasons.append(str(exc))
            continue
        return BackendChoice(backend, f"{flavour} TensorRT {precision} engines fit the {gpu.name} ({gpu.cc})"), ""
    return None, "; ".join(reasons)
