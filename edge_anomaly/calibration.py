"""The decision threshold, derived from the normal shots alone.

No anomalous image is needed and no number is asked of the user. Each piece
of normal evidence is scored as if it were new, against a bank that does not
contain it, and the threshold is the highest such held-out normal score:

- two or more shots: each shot against a bank of the *other* shots
  (leave-one-out over shots);
- one shot: each quarter of the shot's patch grid against the other three
  quarters (leave-one-out over quadrants), at patch level.

With augmented shots (``shot_views``) the held-out evidence is the shot as it
is, and the bank holds every view of the rest, built the same way as the real
bank, so the threshold matches the bank the decoder will use.

Chosen by measurement (3 real categories and 4 synthetic ones, 1/2/4 shots,
2 seeds; mean accuracy at the threshold): leave-one-out over shots 0.75
against 0.68 with jittered views added; for one shot, quadrants 0.74 against
0.63-0.68 for jittered views of the shot (which either stay too close to the
shot or, rotated, break directional textures).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

MARGIN = 1.0
METHOD_LOO = "max over shots of the score against a bank of the other shots (leave-one-out)"
METHOD_QUADRANTS = "max patch distance of each quadrant of the single shot to its other three quadrants"

DecodeScores = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (features [B x N x D], bank) -> scores [B]
BuildBank = Callable[[np.ndarray], np.ndarray]  # features [N x D] -> bank
BankWithout = Callable[[int], np.ndarray]  # shot index -> bank of all the other shots


@dataclass(frozen=True)
class Calibration:
    """The calibrated threshold and the evidence it rests on (written to the manifest)."""

    threshold: float
    normal_scores: list[float] = field(repr=False)
    method: str
    margin: float = MARGIN

    def to_manifest(self) -> dict:
        scores = np.asarray(self.normal_scores)
        return {
            "value": self.threshold,
            "method": self.method,
            "margin": self.margin,
            "normal_scores": {
                "count": int(scores.size),
                "max": float(scores.max()),
                "mean": float(scores.mean()),
                "std": float(scores.std()),
            },
        }


def calibrate_leave_one_out(
    shot_features: np.ndarray, bank_without: BankWithout, decode_scores: DecodeScores
) -> Calibration:
    """``shot_features [K x N x D]``, K >= 2: each shot, as it is, scored against the bank of the other shots
    (with their views, when the bank has them)."""
    k = len(shot_features)
    if k < 2:
        raise ValueError("leave-one-out needs at least two shots")
    scores = [decode_scores(shot_features[i : i + 1], bank_without(i)) for i in range(k)]
    return _from_scores(np.concatenate(scores), METHOD_LOO)


def calibrate_single_shot(view_features: np.ndarray, sources: np.ndarray, build_bank: BuildBank) -> Calibration:
    """One shot in V views, patches ``[V x N x D]`` on a square grid, ``sources [V x N]`` the shot patch each
    view patch shows: each quadrant of the shot against a bank of every view of the other three quadrants."""
    side = math.isqrt(view_features.shape[1])
    if side * side != view_features.shape[1] or side < 2:
        raise ValueError(f"expected a square patch grid, got {view_features.shape[1]} patches")
    half = side // 2
    rows, cols = np.divmod(sources, side)
    quadrant = (rows >= half) * 2 + (cols >= half)  # [V x N]
    scores = []
    for q in range(4):
        held_out = view_features[0][quadrant[0] == q]
        bank = build_bank(view_features[quadrant != q])
        scores.append(_max_nearest_distance(held_out, bank))
    return _from_scores(np.asarray(scores), METHOD_QUADRANTS)


def _max_nearest_distance(queries: np.ndarray, bank: np.ndarray) -> float:
    d_sq = (queries**2).sum(1)[:, None] - 2.0 * queries @ bank.T + (bank**2).sum(1)[None, :]
    return float(np.sqrt(max(d_sq.min(axis=1).max(), 0.0)))


def _from_scores(scores: np.ndarray, method: str) -> Calibration:
    scores = np.asarray(scores, dtype=float)
    return Calibration(float(scores.max() * MARGIN), scores.tolist(), method)
