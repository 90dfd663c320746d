"""The decision threshold, derived from the normal shots alone.

No anomalous image is needed and no number is asked of the user. Each piece
of normal evidence is scored as if it were new, by the decoder itself, against
a bank that does not contain it, and the threshold is the highest such
held-out normal score. The evidence is each quarter of each shot: the quarter
is held out of every view of its shot, the bank holds everything else (the
other three quarters and all other shots, built the way the real bank is), the
whole shot is decoded against it, and the score is the map's maximum inside
the held-out quarter. So the held-out score is the very score a frame gets
(bank distance, text-free head and smoothing included), and the bank behind it
is nearly the real one: 1/4 of one shot short, not a whole shot as in a
leave-one-shot-out, whose bank of K-1 shots scores new normal frames higher
than the K-shot bank does and so sets the threshold too strict.

Chosen by measurement (``python -m edge_anomaly.benchmarks.accuracy``, 3 real
categories, 1/2/4 shots, 3 seeds; ``docs/accuracy.md``): accuracy at the
threshold 0.740 / 0.727 / 0.754 against 0.713 / 0.669 / 0.724 for the rule
used before (patch distances of the single shot's quarters at 1 shot,
leave-one-shot-out at 2 and more). Earlier, quarters beat jittered views of
the shot (0.74 against 0.63-0.68), which either stay too close to the shot or,
rotated, break directional textures.

One quarter can hold what no other part of the shots shows (a rim, a
fixture's edge, a seam on a commutator) and score far above the rest; its
score is then no sample of how new normal frames score, and a threshold at it
passes most defects. From ``MIN_SPREAD_SCORES`` held-out scores on (two shots)
there are enough to tell: scores above the median by more than
``HELD_OUT_Z`` robust standard deviations are set aside and the threshold is
the highest of the others (``held_out_threshold``). With one shot's four
scores no spread can be told from a genuine one, and the maximum stays.
Measured on the five dev categories (``docs/accuracy.md``, seeds 0-2): acc@auto
+0.033 at 2 shots and +0.027 at 4, no category lower; at 1 shot it would have
cost screw 0.13, which is why it waits for 8 scores.

Where the score is not the map's maximum (a decoder whose score reads fewer
feature parts than its map, ``DecoderSection.score_features``), the map gets
a threshold of its own for its regions, by the same rule from the same
quarters: the held-out quarter's maximum of the map beside that of the
score's map.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from .manifest import NormalScores, ThresholdSection

OUTLIER_Z = 3.0  # robust standard deviations above the median, for scores that may hold a few defects
# Held-out quarter scores farther above their median than this are a quarter unlike any other part of the shots.
# Measured at 2.5-6 (docs/accuracy.md): 3.5-4.5 gained 0.03-0.04 acc@auto at 2 and 4 shots and lost no dev
# category; 3 lost metal_plate 0.022 at 4 shots, 5 and above lost screw 0.028.
HELD_OUT_Z = 4.0
MIN_SPREAD_SCORES = 8  # two shots' quarters: with fewer, a genuine spread and an odd quarter look alike
# Quarters of at most this many shots are held out. Past 4 shots each held-out bank needs its own coreset
# (about 14 s on 2 cores at 30 shots), and 16 held-out quarters already sample the normal variation.
MAX_HELD_OUT_SHOTS = 4
METHOD = (
    "max over each quarter of each shot of the decoder's score inside that quarter, against a bank of everything "
    "else (the shot's other quarters and the other shots, in every view); from "
    f"{MIN_SPREAD_SCORES} such scores on, scores above their median by more than {HELD_OUT_Z:g} robust standard "
    "deviations are set aside"
)

# (features [B x N x D], bank) -> the score's maps [B x H x W] and the anomaly maps (the same array where the
# score is the map's maximum)
DecodeMaps = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]
ReducePatches = Callable[[np.ndarray], np.ndarray]  # one shot's patches over its views [N x D] -> its part of a bank
MergeParts = Callable[[list[np.ndarray]], np.ndarray]  # parts of a bank -> the bank


@dataclass(frozen=True)
class Calibration:
    """The calibrated threshold and the evidence it rests on (the manifest's ``threshold`` section)."""

    threshold: float
    normal_scores: list[float] = field(repr=False)
    method: str
    map_threshold: float | None = None  # the map's own, where the score is not the map's maximum
    map_scores: list[float] = field(default_factory=list, repr=False)

    @property
    def map_level(self) -> float:
        """What the map's regions are cut at: its own threshold, else the score's."""
        return self.threshold if self.map_threshold is None else self.map_threshold

    def to_section(self) -> ThresholdSection:
        scores = np.asarray(self.normal_scores)
        summary = NormalScores(
            int(scores.size), float(scores.max()), float(scores.mean()), float(scores.std()), tuple(map(float, scores))
        )
        map_value = None if self.map_threshold is None else float(self.map_threshold)
        return ThresholdSection(float(self.threshold), self.method, summary, map_value)


def calibrate_held_out_quarters(
    view_features: np.ndarray,
    sources: np.ndarray,
    shot_parts: list[np.ndarray],
    reduce_patches: ReducePatches,
    merge: MergeParts,
    decode_maps: DecodeMaps,
) -> Calibration:
    """``view_features [K x V x N x D]``: K shots in V views (view 0 the shot as it is) on a square patch grid;
    ``sources [V x N]``: the shot patch each view patch shows; ``shot_parts``: each shot's ready part of the
    bank. Returns the threshold from the held-out quarter scores (4 per shot, of the first
    ``MAX_HELD_OUT_SHOTS`` shots)."""
    shots, _, n, _ = view_features.shape
    side = math.isqrt(n)
    if side * side != n or side < 2 or side % 2:
        raise ValueError(f"expected a square patch grid of even side, got {n} patches")
    if len(shot_parts) != shots:
        raise ValueError(f"expected one bank part per shot ({shots}), got {len(shot_parts)}")
    half = side // 2
    rows, cols = np.divmod(sources, side)
    quarter = (rows >= half) * 2 + (cols >= half)  # [V x N]
    scores, map_scores, split = [], [], False
    for k in range(min(shots, MAX_HELD_OUT_SHOTS)):
        others = [part for i, part in enumerate(shot_parts) if i != k]
        for q in range(4):
            bank = merge([*others, reduce_patches(view_features[k][quarter != q])])
            score_maps, anomaly_maps = decode_maps(view_features[k, :1], bank)
            split = anomaly_maps is not score_maps
            h, w = score_maps.shape[1] // 2, score_maps.shape[2] // 2
            top, left = (q // 2) * h, (q % 2) * w
            scores.append(float(score_maps[0, top : top + h, left : left + w].max()))
            map_scores.append(float(anomaly_maps[0, top : top + h, left : left + w].max()))
    if not split:
        return Calibration(held_out_threshold(scores), scores, METHOD)
    return Calibration(held_out_threshold(scores), scores, METHOD, held_out_threshold(map_scores), map_scores)


def held_out_threshold(scores: Sequence[float], z: float = HELD_OUT_Z) -> float:
    """The highest held-out score, leaving out, from ``MIN_SPREAD_SCORES`` scores on, those above
    ``outlier_threshold(scores, z)``. Scores without any spread (MAD 0) are all kept."""
    s = np.asarray(scores, dtype=float)
    if s.size < MIN_SPREAD_SCORES or not np.median(np.abs(s - np.median(s))) > 0:
        return float(s.max())
    return float(s[s <= outlier_threshold(s, z)].max())


def outlier_threshold(scores: Sequence[float], z: float = OUTLIER_Z) -> float:
    """Median + ``z`` robust standard deviations (1.4826 x MAD) of the scores: a bound that a few
    outliers among them (defects, an odd quarter) cannot drag up."""
    s = np.asarray(scores, dtype=float)
    median = float(np.median(s))
    return median + z * 1.4826 * float(np.median(np.abs(s - median)))


def raise_to_presumed_normal(
    calibration: Calibration, scores: Sequence[float], map_scores: Sequence[float] = ()
) -> Calibration:
    """Raise the threshold to ``outlier_threshold`` of frames presumed normal but not in the bank, and the
    map's own (if any) by the frames' map maxima ``map_scores`` alike.

    Shots picked as the most typical frames of a line (zero-shot bootstrapping) are its quietest: their
    held-out quarters score low and the threshold alone would flag half the normal frames. The frames
    that were nearly as typical, scored against the bank as any new frame is, show the line's real spread;
    the robust bound keeps an unnoticed defect among them from setting it."""
    if len(scores) < 2:
        raise ValueError("presumed-normal frames: at least 2 are needed for a spread")
    bound = outlier_threshold(scores)
    map_threshold = calibration.map_threshold
    if map_threshold is not None:
        if len(map_scores) != len(scores):
            raise ValueError("presumed-normal frames: a map maximum is needed for each score")
        map_threshold = max(map_threshold, outlier_threshold(map_scores))
    return replace(
        calibration,
        threshold=max(calibration.threshold, bound),
        map_threshold=map_threshold,
        map_scores=[*calibration.map_scores, *map(float, map_scores)],
        normal_scores=[*calibration.normal_scores, *map(float, scores)],
        method=f"{calibration.method}; raised to at least median + {OUTLIER_Z:g} robust standard deviations of "
        f"{len(scores)} frames presumed normal, scored against the bank",
    )
