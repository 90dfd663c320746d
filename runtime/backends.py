"""Choosing the inference backend for a bundle on this machine, and saying why.

Every backend offers the same two calls, ``encode(images)`` and
``decode(features, memory_bank)``, so the SDK never cares which one runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from edge_anomaly import bundle_format as fmt
from edge_anomaly.bundle import Bundle
from edge_anomaly.errors import BackendError

BACKENDS = ("auto", "onnxruntime", "onnxruntime-cpu", "onnxruntime-cuda")


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
        return BackendChoice(OnnxRuntimeBackend(encoder, decoder, "cuda", threads), "onnxruntime sees a CUDA GPU")
    why = "asked for onnxruntime" if backend == "onnxruntime" else "no GPU provider available"
    return BackendChoice(OnnxRuntimeBackend(encoder, decoder, "cpu", threads), f"{why}: running on the CPU")
