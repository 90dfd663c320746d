"""The decision threshold, derived from the normal shots alone.

No anomalous image is needed and no number is asked of the user. With two or
more shots, each shot is scored as if it were a new frame, against a bank of
the *other* shots (leave-one-out); on real parts (MPDD metal plates, 4 shots)
the maximum of these scores landed within 1% of the highest normal test score.
One shot has no "other", so views of it that differ the way parts differ on
a line (shift and scale up to 10%, rotation up to 20 degrees, lighting up to
20%) are scored against the shot's own bank instead; milder views were
measured to sit far below real normal scores. The threshold is the maximum
held-out normal score times ``MARGIN``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import cv2
import numpy as np

VIEWS_PER_SHOT = 8
MARGIN = 1.0
METHOD_LOO = "max over shots of the score against a bank of the other shots (leave-one-out)"
METHOD_VIEWS = "max score of jittered views of the single shot against its own bank"

DecodeScores = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (features [B x N x D], bank) -> scores [B]
BuildBank = Callable[[np.ndarray], np.ndarray]  # features [N x D] -> bank


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


def jittered_views(rgb: np.ndarray, count: int = VIEWS_PER_SHOT, seed: int = 0) -> list[np.ndarray]:
    """``count`` views of a normal image as a line might show it again: shifted and
    scaled <=10%, rotated <=20 degrees, brighter or darker <=20%."""
    rng = np.random.default_rng(seed)
    h, w = rgb.shape[:2]
    views = []
    for _ in range(count):
        angle = rng.uniform(-20, 20)
        scale = rng.uniform(0.9, 1.1)
        matrix = cv2.getRotationMatrix2D((w / 2, h / 2), angle, scale)
        matrix[:, 2] += rng.uniform(-0.1, 0.1, size=2) * (w, h)
        moved = cv2.warpAffine(rgb, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
        gain = rng.uniform(0.8, 1.2)
        views.append(np.clip(moved.astype(np.float32) * gain, 0, 255).astype(np.uint8))
    return views


def calibrate_leave_one_out(
    shot_features: np.ndarray, build_bank: BuildBank, decode_scores: DecodeScores
) -> Calibration:
    """``shot_features [K x N x D]``, K >= 2: each shot scored against the bank of the others."""
    k = len(shot_features)
    if k < 2:
        raise ValueError("leave-one-out needs at least two shots")
    scores = []
    for i in range(k):
        others = np.concatenate([shot_features[j] for j in range(k) if j != i])
        scores.append(decode_scores(shot_features[i : i + 1], build_bank(others)))
    return _from_scores(np.concatenate(scores), METHOD_LOO)


def calibrate_single_shot(
    shot_features: np.ndarray, view_features: np.ndarray, decode_scores: DecodeScores
) -> Calibration:
    """One shot's patches ``[N x D]`` as the bank; its jittered views ``[V x N x D]`` scored against it."""
    return _from_scores(decode_scores(view_features, shot_features), METHOD_VIEWS)


def _from_scores(scores: np.ndarray, method: str) -> Calibration:
    scores = np.asarray(scores, dtype=float)
    return Calibration(float(scores.max() * MARGIN), scores.tolist(), method)
