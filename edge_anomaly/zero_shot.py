"""Zero-shot inspection of a new product: mutual scoring over unlabeled frames (the MuSc idea).

Before anyone has picked a normal shot, the frames themselves are the
reference. In a set of frames of one product, a normal patch finds close
look-alikes in most other frames, a defect patch in few. So each frame is
decoded against every other frame's patches as the bank, and a pixel's score
is the mean of its distances to the ``fraction`` of other frames that match it
best: a defect shared by a few frames, or a few defective frames, cannot make a
normal patch look rare.

There is no calibration without normal shots. The decision is an outlier test
over the scores seen so far: above the median by ``OUTLIER_Z`` robust
standard deviations (1.4826 x MAD). It assumes, as a line does, that most
frames are normal; rank quality (AUROC) does not depend on it.

- ``mutual_results(inspector, frames)``: a batch of frames scored against each other;
- ``ZeroShotInspector(inspector)``: frames as they arrive, each scored against a
  window of earlier frames that were not flagged; drop-in for ``Inspector`` in
  ``stream``.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .errors import InputError
from .few_shot import encode_images
from .images import ImageLike, as_rgb
from .inspector import InspectionResult, Inspector

FRACTION = 0.3
OUTLIER_Z = 3.0
MIN_FRAMES = 4  # fewer other frames than this and there is no "most frames" to compare against
DECODE_BATCH = 8
METHOD = "zero-shot: median + 3 robust standard deviations of the mutual scores (no normal shot)"


def mutual_maps(inspector: Inspector, features: np.ndarray, fraction: float = FRACTION) -> np.ndarray:
    """Patch features ``[B x N x D]`` -> anomaly maps ``[B x H x W]``, each frame against the others."""
    count = len(features)
    if count < MIN_FRAMES + 1:
        raise InputError(f"zero-shot scoring needs at least {MIN_FRAMES + 1} frames, got {count}")
    keep = max(1, math.ceil(fraction * (count - 1)))
    out = []
    for start in range(0, count, DECODE_BATCH):
        queries = features[start : start + DECODE_BATCH]
        stack = np.stack([inspector.backend.decode(queries, features[j])[0] for j in range(count)])  # [B x b x H x W]
        for k in range(len(queries)):
            stack[start + k, k] = np.inf  # a frame is not its own reference
        out.append(np.sort(stack, axis=0)[:keep].mean(axis=0))
    return np.concatenate(out)


def outlier_threshold(scores: Sequence[float]) -> float:
    """Median + ``OUTLIER_Z`` robust standard deviations of the scores."""
    s = np.asarray(scores, dtype=float)
    median = float(np.median(s))
    return median + OUTLIER_Z * 1.4826 * float(np.median(np.abs(s - median)))


def mutual_results(
    inspector: Inspector, frames: Sequence[ImageLike], color_order: str = "bgr", fraction: float = FRACTION
) -> list[InspectionResult]:
    """Score a batch of unlabeled frames of one product against each other."""
    rgbs = [as_rgb(f, color_order) for f in frames]
    features = encode_images(inspector.backend, rgbs, inspector.preprocessing)
    maps = mutual_maps(inspector, features, fraction)
    scores = [float(m.max()) for m in maps]
    threshold = outlier_threshold(scores)
    return [
        inspector.finding(rgb, m, s, f if isinstance(f, (str, Path)) else None, threshold=threshold)
        for rgb, m, s, f in zip(rgbs, maps, scores, frames)
    ]


class ZeroShotInspector:
    """Inspects frames as they arrive with no normal shot: each against a window of earlier unflagged frames.

    The first ``MIN_FRAMES`` frames only fill the window (reported as passed, with an infinite threshold).
    Flagged frames never enter the window, so a run of defects cannot become the reference.
    """

    def __init__(self, inspector: Inspector, window: int = 32, fraction: float = FRACTION) -> None:
        if window < MIN_FRAMES:
            raise ValueError(f"window must hold at least {MIN_FRAMES} frames")
        self.inspector, self.fraction = inspector, fraction
        self.narrator = inspector.narrator
        self._window: deque[np.ndarray] = deque(maxlen=window)
        self._scores: deque[float] = deque(maxlen=window)

    @property
    def ready(self) -> bool:
        return len(self._window) >= MIN_FRAMES

    @property
    def reference_frames(self) -> int:
        """How many earlier frames the next one is compared against."""
        return len(self._window)

    def inspect(self, frame: ImageLike, color_order: str = "bgr") -> InspectionResult:
        rgb = as_rgb(frame, color_order)
        features = encode_images(self.inspector.backend, [rgb], self.inspector.preprocessing)
        source = frame if isinstance(frame, (str, Path)) else None
        if not self.ready:
            self._window.append(features[0])
            blank = np.zeros(rgb.shape[:2], np.float32)
            return self.inspector.finding(rgb, blank, 0.0, source, threshold=math.inf)
        keep = max(1, math.ceil(self.fraction * len(self._window)))
        maps = np.stack([self.inspector.backend.decode(features, bank)[0][0] for bank in self._window])
        anomaly_map = np.sort(maps, axis=0)[:keep].mean(axis=0)
        score = float(anomaly_map.max())
        threshold = outlier_threshold(self._scores) if len(self._scores) >= MIN_FRAMES else math.inf
        result = self.inspector.finding(rgb, anomaly_map, score, source, threshold=threshold)
        if not result.is_anomalous:
            self._window.append(features[0])
            self._scores.append(score)
        return result

    def stream(self, source, on_event=None, **options):
        """As ``Inspector.stream``, with zero-shot decisions."""
        from edge_anomaly.runtime.stream import stream

        return stream(self, source, on_event, **options)
