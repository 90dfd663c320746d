"""ONNX Runtime backend: the encoder and decoder graphs on the CUDA or CPU execution provider."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnxruntime as ort

from edge_anomaly import bundle_format as fmt
from edge_anomaly.errors import BackendError

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


def cuda_available() -> bool:
    return CUDA in ort.get_available_providers()


class OnnxRuntimeBackend:
    """Runs ``encoder.onnx`` and ``decoder.onnx``; same surface as every other backend.

    ``device="cuda"`` asks for the CUDA provider (onnxruntime-gpu) and fails if
    it is not there; ``"cpu"`` forces the CPU provider. ``threads=0`` means the
    cores this process may run on (its CPU affinity), so a container pinned to
    a few cores of a large host does not start one thread per host core.

    The thread pools do not spin: the encoder and the decoder run one after the
    other, and a pool that spins after its graph ends keeps the cores from the
    other graph's pool (and from the language model and the capture thread).
    """

    def __init__(self, encoder: Path, decoder: Path, device: str = "cpu", threads: int = 0) -> None:
        if device not in ("cpu", "cuda"):
            raise BackendError(f"onnxruntime device must be 'cpu' or 'cuda', got {device!r}")
        if device == "cuda" and not cuda_available():
            raise BackendError("onnxruntime has no CUDA provider here: install onnxruntime-gpu")
        providers = [CUDA, CPU] if device == "cuda" else [CPU]
        options = ort.SessionOptions()
        self.threads = threads or len(os.sched_getaffinity(0))
        options.intra_op_num_threads = self.threads
        options.log_severity_level = 3
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self._encoder = ort.InferenceSession(str(encoder), options, providers=providers)
            self._decoder = ort.InferenceSession(str(decoder), options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own untyped errors for bad graphs
            raise BackendError(f"onnxruntime cannot load the bundle's graphs: {exc}") from None
        self.name = f"onnxruntime-{device}"
        _check_names(self._encoder, [fmt.ENCODER_INPUT], [fmt.ENCODER_OUTPUT], encoder)
        _check_names(self._decoder, list(fmt.DECODER_INPUTS), list(fmt.DECODER_OUTPUTS), decoder)

    def encode(self, images: np.ndarray) -> np.ndarray:
        """Normalized images ``[B x 3 x H x W]`` float32 -> patch features ``[B x N x D]``."""
        return self._encoder.run(None, {fmt.ENCODER_INPUT: images})[0]

    def decode(self, features: np.ndarray, memory_bank: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Patch features + bank -> ``(anomaly_map [B x H x W], score [B])``."""
        feeds = dict(zip(fmt.DECODER_INPUTS, (features, memory_bank)))
        anomaly_map, score = self._decoder.run(None, feeds)
        return anomaly_map, score

    def close(self) -> None:
        """Drop both sessions (their memory and thread pools); the backend is done."""
        self._encoder = self._decoder = None


def _check_names(session: ort.InferenceSession, inputs: list[str], outputs: list[str], path: Path) -> None:
    found_in = [i.name for i in session.get_inputs()]
    found_out = [o.name for o in session.get_outputs()]
    if found_in != inputs or found_out != outputs:
        raise BackendError(f"{path}: graph has inputs {found_in} / outputs {found_out}, expected {inputs} / {outputs}")
