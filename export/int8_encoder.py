"""An int8 encoder: NNCF's post-training quantization of the ONNX encoder, with the bank fitted through it.

Two findings decide the design (``docs/benchmarks.md``, session of 2026-12-02):

- Quantizing every convolution moves the per-stage unit features by 23-28% of
  their norm (NNCF and ONNX Runtime's ``quantize_static`` alike). Keeping the
  stem and block 0 in float (the first, full-resolution layers, whose
  activation ranges differ most from channel to channel) brings that to 7-8%.
- A bank fitted in fp32 and queried in int8 sees that error as anomaly. Fitted
  through the int8 encoder itself, the error is common to the bank and the
  frames: on the dev set (five categories, seeds 0-2, 1/2/4 shots) image and
  pixel AUROC stay within 0.004 of fp32, accuracy at the auto threshold moves
  by -0.015 to +0.004 (screw loses 0.046 at 1 and 2 shots), so int8 is asked
  for, not the default.

So the int8 graph replaces the bundle's encoder (QDQ ONNX, which ONNX Runtime,
OpenVINO and TensorRT's strongly typed builders all take), the bank and the
threshold are fitted through it, and export checks it against fp32 before
keeping it, each pipeline against its own bank, on synthetic defect frames new
to both: the thresholds and the image scores must agree within ``MAX_SHIFT``
of the fp32 threshold, and the flagged pixels overlap by ``MIN_OVERLAP`` at
least (intersection over union), or the fp32 encoder is kept and export says
why.
"""

from __future__ import annotations

import contextlib
import io
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_anomaly import bundle_format as fmt
from edge_anomaly.images import Preprocessing
from edge_anomaly.shot_views import shot_views
from edge_anomaly.synthetic import DRAWN_DEFECTS, add_defect

FLOAT_SCOPE = (r"/_conv_stem/.*", r"/_blocks\.0/.*")  # node names kept in float (EfficientNetLite's modules)
MAX_SHIFT = 0.10  # largest threshold or image score difference to fp32 accepted, as a share of the fp32 threshold
MIN_OVERLAP = 0.75  # least intersection over union of the pixels flagged by each
CHECK_FRAMES_PER_SHOT = 2  # synthetic defect frames per shot (at most 4 shots) scored by both pipelines
METHOD = "NNCF post-training int8 (QDQ, per-channel weights), stem and block 0 in float; bank fitted through it"


@dataclass(frozen=True)
class Agreement:
    """How the int8 pipeline decides against fp32's: ``shift``, how far the threshold and the image scores
    moved, as a share of the fp32 threshold; ``overlap``, the intersection over union of the pixels each
    flags (its map above its own threshold)."""

    shift: float
    overlap: float

    @property
    def holds(self) -> bool:
        return bool(np.isfinite(self.shift)) and self.shift <= MAX_SHIFT and self.overlap >= MIN_OVERLAP

    def words(self) -> str:
        return (
            f"threshold and scores moved by {self.shift:.3f} of the fp32 threshold (at most {MAX_SHIFT}), "
            f"flagged pixels overlap {self.overlap:.2f} (at least {MIN_OVERLAP})"
        )


def calibration_images(shots: list[np.ndarray], seed: int) -> list[np.ndarray]:
    """The shots, their dihedral views and a synthetic defect on each: what the encoder will see on a line."""
    rng = np.random.default_rng(seed)
    views = [v for shot in shots for v in shot_views(shot, "dihedral")]
    defects = [add_defect(shot, DRAWN_DEFECTS[i % len(DRAWN_DEFECTS)], rng)[0] for i, shot in enumerate(shots)]
    return views + defects


def quantize_encoder(source: Path, out: Path, images: list[np.ndarray], prep: Preprocessing) -> Path:
    """``source`` (fp32 ONNX) -> ``out`` (int8 QDQ ONNX), calibrated on ``images`` (RGB)."""
    import nncf
    import onnx

    nncf.set_log_level(logging.ERROR)
    samples = [{fmt.ENCODER_INPUT: prep.batch([im])} for im in images]
    with contextlib.redirect_stdout(io.StringIO()):  # NNCF's progress bars: export prints its own lines
        quantized = nncf.quantize(
            onnx.load(str(source)),
            nncf.Dataset(samples),
            subset_size=len(samples),
            ignored_scope=nncf.IgnoredScope(patterns=list(FLOAT_SCOPE)),
        )
    onnx.save(quantized, str(out))
    return out


def agreement(fp32, int8, shots: list[np.ndarray], prep: Preprocessing, seed: int) -> Agreement:
    """``fp32``, ``int8``: ``(backend, fit)`` pairs, each fit through its own encoder. Compares what decides,
    on synthetic defect frames new to both: the thresholds, the image scores and the flagged pixels (a map
    is read by its regions; single pixels of it differ more, and pixel AUROC does not move)."""
    (fp32_backend, fp32_fit), (int8_backend, int8_fit) = fp32, int8
    t32, t8 = fp32_fit.calibration.threshold, int8_fit.calibration.threshold
    rng = np.random.default_rng(seed + 1)  # other defects than those calibrated on
    frames = [
        add_defect(shot, DRAWN_DEFECTS[(i + 1) % len(DRAWN_DEFECTS)], rng)[0]
        for shot in shots[:4]
        for i in range(CHECK_FRAMES_PER_SHOT)
    ]
    batch = prep.batch(frames)
    map32, score32 = fp32_backend.decode(fp32_backend.encode(batch), fp32_fit.memory_bank)
    map8, score8 = int8_backend.decode(int8_backend.encode(batch), int8_fit.memory_bank)
    moved = float(np.max([abs(t8 - t32), *np.abs(score8 - score32)]))  # np.max keeps a NaN: never agreement
    shift = moved / t32 if t32 > 0 else np.inf
    flagged32, flagged8 = map32 > fp32_fit.calibration.map_level, map8 > int8_fit.calibration.map_level
    union = int((flagged32 | flagged8).sum())
    overlap = float((flagged32 & flagged8).sum() / union) if union else 1.0
    return Agreement(shift, overlap)
