"""Detection and localization metrics, as fractions in [0, 1].

AUROCs come from scikit-learn. AU-PRO (Bergmann et al.) is written here: the
mean per-region overlap, integrated over the false-positive rate of normal
pixels up to 30% and divided by 0.3, so 1.0 is perfect.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score, roc_curve

PRO_FPR_LIMIT = 0.3
PRO_STEPS = 1000


def image_auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """AUROC of image scores; NaN when only one class is present."""
    labels = np.asarray(labels, dtype=int)
    if labels.min() == labels.max():
        return float("nan")
    return float(roc_auc_score(labels, scores))


def pixel_auroc(masks: list[np.ndarray], maps: list[np.ndarray]) -> float:
    truth = np.concatenate([m.ravel() for m in masks]).astype(bool)
    scores = np.concatenate([m.ravel() for m in maps])
    if truth.all() or not truth.any():
        return float("nan")
    return float(roc_auc_score(truth, scores))


def au_pro(masks: list[np.ndarray], maps: list[np.ndarray], fpr_limit: float = PRO_FPR_LIMIT) -> float:
    """Area under the per-region-overlap curve up to ``fpr_limit``, normalized to [0, 1]."""
    normal = np.sort(np.concatenate([m[~k.astype(bool)] for m, k in zip(maps, masks)]))
    regions = []
    for score_map, mask in zip(maps, masks):
        labels, count = ndimage.label(mask.astype(bool))
        regions.extend(np.sort(score_map[labels == i]) for i in range(1, count + 1))
    if not regions or normal.size == 0:
        return float("nan")
    fpr_grid = np.linspace(0.0, fpr_limit, PRO_STEPS)
    thresholds = np.quantile(normal, 1.0 - fpr_grid)
    # A pixel is flagged when its score is strictly above the threshold, so tied normal
    # scores never count as false positives at their own value.
    fpr = 1.0 - np.searchsorted(normal, thresholds, side="right") / normal.size
    overlap = np.mean([1.0 - np.searchsorted(r, thresholds, side="right") / r.size for r in regions], axis=0)
    fpr, overlap = np.append(fpr, 1.0), np.append(overlap, 1.0)  # threshold below everything
    order = np.lexsort((overlap, fpr))
    fpr, overlap = fpr[order], overlap[order]
    at_limit = np.interp(fpr_limit, fpr, overlap)
    keep = fpr < fpr_limit
    fpr, overlap = np.append(fpr[keep], fpr_limit), np.append(overlap[keep], at_limit)
    return float(np.trapezoid(overlap, fpr) / fpr_limit)


def decision_metrics(labels: np.ndarray, predicted: np.ndarray) -> dict[str, float | int]:
    labels, predicted = np.asarray(labels, dtype=int), np.asarray(predicted, dtype=int)
    normal, anomalous = labels == 0, labels == 1
    return {
        "accuracy": float(accuracy_score(labels, predicted)),
        "f1": float(f1_score(labels, predicted, zero_division=0.0)),
        # normal images flagged, and anomalous ones found: what a line pays for and what it gets
        "false_positive_rate": float(predicted[normal].mean()) if normal.any() else float("nan"),
        "recall": float(predicted[anomalous].mean()) if anomalous.any() else float("nan"),
        "true_positives": int(((labels == 1) & (predicted == 1)).sum()),
        "false_positives": int(((labels == 0) & (predicted == 1)).sum()),
        "true_negatives": int(((labels == 0) & (predicted == 0)).sum()),
        "false_negatives": int(((labels == 1) & (predicted == 0)).sum()),
    }


def best_accuracy(labels: np.ndarray, scores: np.ndarray) -> float:
    """Accuracy at the best threshold in hindsight: the ceiling an auto threshold is compared with."""
    labels = np.asarray(labels, dtype=int)
    if labels.min() == labels.max():
        return float("nan")
    fpr, tpr, _ = roc_curve(labels, scores)
    positives, negatives = labels.sum(), (1 - labels).sum()
    return float(np.max((tpr * positives + (1 - fpr) * negatives) / labels.size))
