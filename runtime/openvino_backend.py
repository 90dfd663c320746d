"""OpenVINO backend: the bundle's ONNX graphs compiled for this x86 CPU.

The runtime that Intel and AMD factory PCs and anomalib users already have. The
same ONNX files run unchanged; with the f32 inference hint the maps match ONNX
Runtime's to 7e-7 (``docs/benchmarks.md``).

``decoder_precision="bf16"`` runs the decoder (the nearest-neighbour matmul,
the upsampling and smoothing) in bfloat16 on CPUs that have it
(``openvino-bf16``, which ``auto`` takes there): the bank and the features
come in f32, and the dev set's macro means stay within 0.002 of f32 (image
and pixel AUROC; ``benchmarks/accuracy.py --backend openvino-bf16``,
docs/benchmarks.md). The encoder runs as the bundle has it: never in bf16
(its features would drift from the bank's, fitted in f32, and maps move ten
times more), and as int8 where export quantized it and fitted the bank through
it (``export.int8_encoder``).
"""

from __future__ import annotations

import functools
import os
import threading
from pathlib import Path

import numpy as np

from edge_anomaly import bundle_format as fmt
from edge_anomaly.errors import BackendError

PRECISIONS = ("f32", "bf16")


def openvino_problem(precision: str = "f32") -> str | None:
    """Why OpenVINO cannot run here (at ``precision`` for the decoder), or None."""
    try:
        import openvino  # noqa: F401
    except ImportError:
        return "openvino is not installed (pip install edge-anomaly[openvino])"
    if precision == "bf16" and "BF16" not in _cpu_capabilities():
        return "this CPU has no bfloat16 instructions (AVX512_BF16 or AMX)"
    return None


@functools.cache
def _cpu_capabilities() -> tuple[str, ...]:
    """What OpenVINO's CPU plugin can run here; asked once (it loads the plugin), as auto probes on every load."""
    import openvino as ov

    return tuple(ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))


class OpenVinoBackend:
    """``encode`` and ``decode`` on OpenVINO's CPU plugin; one infer request per graph, each behind a lock (a
    pipelined stream encodes on one thread while it decodes on another)."""

    # Each graph's thread pool fills every core, so encoding the next frame beside a decode only contends:
    # the stream runs serially on this backend unless asked (bench: serial 95 against pipelined 81 frames/s).
    overlaps = False

    def __init__(self, encoder: Path, decoder: Path, threads: int = 0, decoder_precision: str = "f32") -> None:
        if decoder_precision not in PRECISIONS:
            raise BackendError(f"openvino decoder precision must be one of {PRECISIONS}, got {decoder_precision!r}")
        problem = openvino_problem(decoder_precision)
        if problem:
            raise BackendError(problem)
        import openvino as ov

        self.threads = threads or len(os.sched_getaffinity(0))
        config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": self.threads}
        try:
            core = ov.Core()
            self._encoder = core.compile_model(str(encoder), "CPU", {**config, "INFERENCE_PRECISION_HINT": "f32"})
            self._decoder = core.compile_model(
                str(decoder), "CPU", {**config, "INFERENCE_PRECISION_HINT": decoder_precision}
            )
        except RuntimeError as exc:
            raise BackendError(f"openvino cannot compile the bundle's graphs: {exc}") from None
        _check_names(self._encoder, [fmt.ENCODER_INPUT], [fmt.ENCODER_OUTPUT], encoder)
        _check_names(self._decoder, list(fmt.DECODER_INPUTS), list(fmt.DECODER_OUTPUTS), decoder)
        self._requests = {g: (m.create_infer_request(), threading.Lock()) for g, m in
                          (("encoder", self._encoder), ("decoder", self._decoder))}  # fmt: skip
        self.name = "openvino-cpu" if decoder_precision == "f32" else f"openvino-cpu-{decoder_precision}"

    def encode(self, images: np.ndarray) -> np.ndarray:
        """Normalized images ``[B x 3 x H x W]`` float32 -> patch features ``[B x N x D]``."""
        request, lock = self._requests["encoder"]
        with lock:
            return request.infer({fmt.ENCODER_INPUT: images})[self._encoder.output(0)].copy()

    def decode(self, features: np.ndarray, memory_bank: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Patch features + bank -> ``(anomaly_map [B x H x W], score [B])``."""
        request, lock = self._requests["decoder"]
        with lock:
            out = request.infer(dict(zip(fmt.DECODER_INPUTS, (features, memory_bank))))
            return out[self._decoder.output(0)].copy(), out[self._decoder.output(1)].copy()

    def close(self) -> None:
        self._requests.clear()


def _check_names(model, inputs: list[str], outputs: list[str], path: Path) -> None:
    found_in = [i.get_any_name() for i in model.inputs]
    found_out = [o.get_any_name() for o in model.outputs]
    if found_in != inputs or found_out != outputs:
        raise BackendError(f"{path}: graph has inputs {found_in} / outputs {found_out}, expected {inputs} / {outputs}")
