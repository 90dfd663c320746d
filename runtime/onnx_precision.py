"""FP16 and INT8 versions of the bundle's ONNX graphs, for TensorRT engines.

TensorRT for RTX builds *strongly typed* networks: precision comes from the
graph, not from builder flags. So precision is decided here, once, in ONNX,
and both TensorRT flavours build from the result:

- fp16: every float tensor inside the graph in half precision, inputs and
  outputs kept float32 (onnxruntime's converter);
- int8: explicit Q/DQ from ``onnxruntime.quantization.quantize_static``,
  calibrated on normal images, symmetric, per channel, biases left in float
  (TensorRT takes neither zero points nor int32 bias tensors). Only the
  encoder is quantized; nearest-neighbour distances stay in float.

The calibrated graph records the sha256 of its source graph and the number of
calibration images, so a kept calibration is reused only for the same graph.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx

from edge_anomaly.bundle import sha256_file

log = logging.getLogger(__name__)
SOURCE_KEY = "edge_anomaly.source_sha256"
SAMPLES_KEY = "edge_anomaly.calibration_samples"


def to_fp16(source: Path, out: Path) -> Path:
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(source)), keep_io_types=True)
    onnx.save(model, str(out))
    return out


def to_int8(source: Path, out: Path, batches: list[dict[str, np.ndarray]], cache: Path | None = None) -> Path:
    """Q/DQ graph calibrated on ``batches`` (input name -> array); reuses ``cache`` when it matches ``source``."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    source_sha = sha256_file(source)
    if cache is not None and cache.is_file() and _metadata(cache).get(SOURCE_KEY) == source_sha:
        log.info("reusing INT8 calibration %s", cache)
        out.write_bytes(cache.read_bytes())
        return out
    if not batches:
        raise ValueError("INT8 needs calibration images")

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(batches)

        def get_next(self):
            return next(self._it, None)

    quantize_static(
        str(source),
        str(out),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False},
    )
    model = onnx.load(str(out))
    onnx.helper.set_model_props(model, {SOURCE_KEY: source_sha, SAMPLES_KEY: str(len(batches))})
    onnx.save(model, str(out))
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_bytes(out.read_bytes())
    return out


def _metadata(path: Path) -> dict[str, str]:
    return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
