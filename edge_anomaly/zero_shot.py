"""Zero-shot inspection of a new product: mutual scoring over unlabeled frames (the MuSc idea), then
the frames most typical of the line become its normal shots.

Before anyone has picked a normal shot, the frames themselves are the
reference. In a set of frames of one product, a normal patch finds close
look-alikes in most other frames, a defect patch in few. So each frame is
decoded against every other frame's patches as the bank, and a pixel's score
is the mean of its distances to the ``fraction`` of other frames that match it
best: a defect shared by a few frames, or a few defective frames, cannot make a
normal patch look rare.

Mutual scores rank frames but have nothing to calibrate a decision against.
So, given at least ``MIN_BOOTSTRAP_FRAMES`` frames, the most typical ones
(lowest mutual scores) stand in for shots a person would pick: the lowest
``PSEUDO_SHOTS`` become the normal shots, and the bank and the threshold are
fitted from them as from any shots (held-out quarters, no anomalous image).
Being the quietest frames of the line, they alone set the threshold too low,
so the next most typical frames, up to ``MIN_BOOTSTRAP_FRAMES`` in all, are
presumed normal and scored against the bank, and the threshold is raised to
a robust bound of their scores (``calibration.raise_to_presumed_normal``).
Every frame is then inspected against that bank. Figures (3 real dev
categories) are in ``docs/accuracy.md``: ``benchmarks.accuracy --shots 0``
for a batch, ``benchmarks.line --shots 0`` for a line with 10% defects. With
fewer frames the decision is an outlier test over the mutual scores: above
the median by ``OUTLIER_Z`` robust standard deviations (1.4826 x MAD), which
assumes, as a line does, that most frames are normal.

- ``mutual_results(inspector, frames)``: a batch of frames scored against each other, then against the
  shots picked from them (the inspector is left fitted on those shots, ready to ``save``);
- ``ZeroShotInspector(inspector)``: frames as they arrive, each scored against a window of earlier
  frames that were not flagged, until the window can give shots; then a calibrated few-shot inspector.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .calibration import OUTLIER_Z, outlier_threshold
from .errors import InputError
from .few_shot import encode_images
from .images import ImageLike, as_rgb, resize_square
from .inspector import Inspector
from .placement import PLACE_COLUMNS, free_rows
from .result import InspectionResult
from .streaming import FrameByFrame

FRACTION = 0.3
# Other frames each frame of a batch is scored against, drawn at random (MuSc samples its references too):
# the cost grows with the batch, not with its square. A batch this size or smaller is scored in full.
MAX_REFERENCES = 32
MIN_FRAMES = 4  # fewer other frames than this and there is no "most frames" to compare against
PSEUDO_SHOTS = 4  # as many shots as the calibration holds out quarters of
MIN_BOOTSTRAP_FRAMES = 4 * PSEUDO_SHOTS  # the picked shots are at most a quarter of the frames
DECODE_BATCH = 8
OUTLIER_METHOD = f"zero-shot: median + {OUTLIER_Z:g} robust standard deviations of the mutual scores (no normal shot)"
BOOTSTRAP_METHOD = (
    f"zero-shot: of the {MIN_BOOTSTRAP_FRAMES} frames with the lowest mutual scores, the lowest {PSEUDO_SHOTS} "
    "became the normal shots and the rest were presumed normal; threshold: "
)


def mutual_maps(
    inspector: Inspector,
    features: np.ndarray,
    fraction: float = FRACTION,
    references: int | None = MAX_REFERENCES,
    seed: int = 0,
) -> np.ndarray:
    """Patch features ``[B x N x D]`` -> anomaly maps ``[B x H x W]``, each frame against the others: all of
    them, or ``references`` of them drawn at random (``seed``) for each block of frames once there are more."""
    count = len(features)
    if count < MIN_FRAMES + 1:
        raise InputError(f"zero-shot scoring needs at least {MIN_FRAMES + 1} frames, got {count}")
    if references is not None and references < MIN_FRAMES:
        raise InputError(f"zero-shot scoring needs at least {MIN_FRAMES} references per frame, got {references}")
    banks = [free_rows(f) for f in features]  # no shot shows yet whether the product sits aligned
    rng = np.random.default_rng(seed)
    everyone = references is None or count - 1 <= references
    out = []
    for start in range(0, count, DECODE_BATCH):
        queries = features[start : start + DECODE_BATCH]
        if everyone:
            refs = np.arange(count)
        else:  # none of the block itself, so every frame of it has exactly ``references`` others
            others = np.setdiff1d(np.arange(count), np.arange(start, start + len(queries)))
            refs = np.sort(rng.choice(others, size=min(references, len(others)), replace=False))
        stack = np.stack([inspector.backend.decode(queries, banks[j])[0] for j in refs])  # [R x b x H x W]
        if everyone:
            for k in range(len(queries)):
                stack[start + k, k] = np.inf  # a frame is not its own reference
        keep = max(1, math.ceil(fraction * (len(refs) - (1 if everyone else 0))))
        out.append(np.partition(stack, keep - 1, axis=0)[:keep].mean(axis=0))
    return np.concatenate(out)


def mutual_scores(
    inspector: Inspector,
    features: np.ndarray,
    fraction: float = FRACTION,
    references: int | None = MAX_REFERENCES,
    seed: int = 0,
) -> np.ndarray:
    """Each frame's image score (map maximum) from ``mutual_maps``."""
    maps = mutual_maps(inspector, features, fraction, references, seed)
    return maps.reshape(len(maps), -1).max(axis=1)


def bootstrap_split(scores: Sequence[float]) -> tuple[list[int], list[int]]:
    """Of the ``MIN_BOOTSTRAP_FRAMES`` frames with the lowest mutual scores (the most typical), the indices
    of the ``PSEUDO_SHOTS`` lowest (the shots) and of the rest (presumed normal, for the threshold)."""
    order = [int(i) for i in np.argsort(np.asarray(scores), kind="stable")[:MIN_BOOTSTRAP_FRAMES]]
    return order[:PSEUDO_SHOTS], order[PSEUDO_SHOTS:]


@dataclass(frozen=True)
class ZeroShotBatch:
    """A batch's results, which frames became the normal shots (none below ``MIN_BOOTSTRAP_FRAMES``),
    and how the threshold was set."""

    results: list[InspectionResult]
    shot_indices: list[int]
    method: str


def mutual_results(
    inspector: Inspector,
    frames: Sequence[ImageLike],
    color_order: str = "bgr",
    fraction: float = FRACTION,
    references: int | None = MAX_REFERENCES,
    seed: int = 0,
) -> ZeroShotBatch:
    """Score a batch of unlabeled frames of one product with no normal shot.

    With at least ``MIN_BOOTSTRAP_FRAMES`` frames, the most typical ones become ``inspector``'s shots
    (replacing any it had) and every frame is inspected against them; with fewer, the mutual maps are the
    result and the outlier test decides. ``references``: how many others each frame is scored against
    (``mutual_maps``; None: all of them, quadratic in the batch), drawn by ``seed``."""
    rgbs = [as_rgb(f, color_order) for f in frames]
    sources = [f if isinstance(f, (str, Path)) else None for f in frames]
    features = encode_images(inspector.backend, rgbs, inspector.preprocessing)
    if len(rgbs) < MIN_BOOTSTRAP_FRAMES:
        maps = mutual_maps(inspector, features, fraction, references, seed)
        scores = [float(m.max()) for m in maps]
        threshold = outlier_threshold(scores)
        results = [inspector.finding(*args, threshold=threshold) for args in zip(rgbs, maps, scores, sources)]
        return ZeroShotBatch(results, [], OUTLIER_METHOD)
    picked, presumed = bootstrap_split(mutual_scores(inspector, features, fraction, references, seed))
    calibration = inspector.use_normal_shots(
        [rgbs[i] for i in picked], color_order="rgb", presumed_normal=[rgbs[i] for i in presumed]
    )
    results = []
    for start in range(0, len(rgbs), DECODE_BATCH):
        maps, scores = inspector.backend.decode(features[start : start + DECODE_BATCH], inspector.memory_bank)
        chunk = zip(rgbs[start:], maps, scores, sources[start:])
        results += [inspector.finding(rgb, m, float(s), source) for rgb, m, s, source in chunk]
    return ZeroShotBatch(results, picked, BOOTSTRAP_METHOD + calibration.method)


class ZeroShotInspector(FrameByFrame):
    """Inspects frames as they arrive with no normal shot: each against a window of earlier unflagged
    frames, until ``bootstrap_after`` unflagged frames are in the window; then the most typical of them
    become ``inspector``'s normal shots, the next most typical set the threshold with them (see the
    module), and every later frame is inspected as with picked shots.

    The first ``MIN_FRAMES`` frames only fill the window (reported as passed, with an infinite threshold).
    Flagged frames never enter the window, so a run of defects cannot become the reference.
    ``bootstrap_after=None`` keeps mutual scoring for good; ``on_bootstrap(inspector)`` is called once the
    shots are taken (``edge-anomaly run --zero-shot --save-bundle`` saves them there).
    """

    def __init__(
        self,
        inspector: Inspector,
        window: int = 32,
        fraction: float = FRACTION,
        bootstrap_after: int | None = MIN_BOOTSTRAP_FRAMES,
        on_bootstrap: Callable[[Inspector], None] | None = None,
    ) -> None:
        if window < MIN_FRAMES:
            raise InputError(f"window must hold at least {MIN_FRAMES} frames")
        if bootstrap_after is not None and not 2 * PSEUDO_SHOTS <= bootstrap_after <= window:
            raise InputError(f"bootstrap_after must lie between {2 * PSEUDO_SHOTS} and the window ({window})")
        self.inspector, self.fraction, self.bootstrap_after = inspector, fraction, bootstrap_after
        self.on_bootstrap = on_bootstrap  # called once with the fitted inspector, e.g. to save it as a bundle
        self.narrator = inspector.narrator
        self._window: deque[np.ndarray] = deque(maxlen=window)  # each frame's patches as free bank rows
        self._frames: deque[np.ndarray] = deque(maxlen=window)  # the same frames at the input size, to fit from
        self._scores: deque[float] = deque(maxlen=window)
        self._numbers: deque[int] = deque(maxlen=window)  # each window frame's place in the stream, from 0
        self._seen = 0
        self.shot_frames: list[int] = []  # the places in the stream of the frames that became the shots

    @property
    def bootstrapped(self) -> bool:
        return bool(self.shot_frames)

    @property
    def ready(self) -> bool:
        return self.bootstrapped or len(self._window) >= MIN_FRAMES

    @property
    def reference_frames(self) -> int:
        """How many earlier frames the next one is compared against (0 once bootstrapped: it has shots)."""
        return len(self._window)

    def inspect_one(self, frame: ImageLike, color_order: str = "bgr") -> InspectionResult:
        if self.bootstrapped:
            return self.inspector.inspect(frame, color_order)
        rgb = as_rgb(frame, color_order)
        features = encode_images(self.inspector.backend, [rgb], self.inspector.preprocessing)
        source = frame if isinstance(frame, (str, Path)) else None
        self._seen += 1
        if not self.ready:
            self._remember(features[0], rgb, None)
            blank = np.zeros(rgb.shape[:2], np.float32)
            return self.inspector.finding(rgb, blank, 0.0, source, threshold=math.inf)
        keep = max(1, math.ceil(self.fraction * len(self._window)))
        maps = np.stack([self.inspector.backend.decode(features, rows)[0][0] for rows in self._window])
        anomaly_map = np.sort(maps, axis=0)[:keep].mean(axis=0)
        score = float(anomaly_map.max())
        threshold = outlier_threshold(self._scores) if len(self._scores) >= MIN_FRAMES else math.inf
        result = self.inspector.finding(rgb, anomaly_map, score, source, threshold=threshold)
        if not result.is_anomalous:
            self._remember(features[0], rgb, score)
            if self.bootstrap_after is not None and len(self._window) >= self.bootstrap_after:
                self._bootstrap()
        return result

    def _remember(self, features: np.ndarray, rgb: np.ndarray, score: float | None) -> None:
        self._window.append(free_rows(features))
        self._frames.append(resize_square(rgb, self.inspector.preprocessing.size))
        self._numbers.append(self._seen - 1)
        if score is not None:
            self._scores.append(score)

    def _bootstrap(self) -> None:
        """The window's most typical frames, scored against each other afresh, become the shots."""
        features = np.stack(self._window)[..., :-PLACE_COLUMNS]
        picked, presumed = bootstrap_split(mutual_scores(self.inspector, features, self.fraction))
        frames = list(self._frames)
        self.inspector.use_normal_shots(
            [frames[i] for i in picked], color_order="rgb", presumed_normal=[frames[i] for i in presumed]
        )
        self.shot_frames = sorted(self._numbers[i] for i in picked)
        for kept in (self._window, self._frames, self._scores, self._numbers):
            kept.clear()
        if self.on_bootstrap is not None:
            self.on_bootstrap(self.inspector)
