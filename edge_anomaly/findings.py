"""What the decoder found, in the terms an operator (and the language model) uses.

A region is a connected part of the anomaly map above the threshold, with its
box in frame pixels, the share of the frame it covers and its peak score.
Its place is named on a 3x3 grid in AnomalyGPT's words ("top left", "top",
"top right", "left", "center", ...).
"""

from __future__ import annotations

import cv2
import numpy as np

from .result import Region

GRID_WORDS = (
    ("top left", "top", "top right"),
    ("left", "center", "right"),
    ("bottom left", "bottom", "bottom right"),
)
MAX_REGIONS = 10


def grid_location(x: float, y: float) -> str:
    """Fractional position ``(x, y)`` in ``[0, 1]`` -> the 3x3 grid cell's name."""
    col = min(int(x * 3), 2)
    row = min(int(y * 3), 2)
    return GRID_WORDS[row][col]


def find_regions(anomaly_map: np.ndarray, threshold: float, frame_size: tuple[int, int]) -> list[Region]:
    """Connected regions of ``anomaly_map >= threshold``, strongest first.

    ``anomaly_map`` may be at any resolution; boxes are scaled to
    ``frame_size = (width, height)``.
    """
    h, w = anomaly_map.shape
    mask = (anomaly_map >= threshold).astype(np.uint8)
    count, labels, stats, centroids = cv2.connectedComponentsWithStats(mask, connectivity=8)
    sx, sy = frame_size[0] / w, frame_size[1] / h
    regions = []
    for label in range(1, count):
        x, y, bw, bh, area = stats[label]
        peak = float(anomaly_map[labels == label].max())
        cx, cy = (centroids[label][0] + 0.5) / w, (centroids[label][1] + 0.5) / h
        box = (int(x * sx), int(y * sy), int(np.ceil((x + bw) * sx)), int(np.ceil((y + bh) * sy)))
        regions.append(Region(box, float(area) / (h * w), peak, (float(cx), float(cy)), grid_location(cx, cy)))
    regions.sort(key=lambda r: r.peak_score, reverse=True)
    return regions[:MAX_REGIONS]


def size_words(area_fraction: float) -> str:
    """Operator words for a region's size: tiny < 0.5%, small < 3%, medium < 15%, else large."""
    if area_fraction < 0.005:
        return "tiny"
    if area_fraction < 0.03:
        return "small"
    if area_fraction < 0.15:
        return "medium"
    return "large"
