"""What one inspected frame gives: plain data, no model, no backend.

Every layer passes these around (the stream, its sinks, the verdict worker,
the language model's prompts, overlays), so they import nothing of the
package but each other; who narrates a result is the ``Inspector``'s business
(``Inspector.verdict``, ``Inspector.chat``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Region:
    """One anomalous region; ``box`` is ``(x0, y0, x1, y1)`` in frame pixels, end-exclusive."""

    box: tuple[int, int, int, int]
    area_fraction: float
    peak_score: float
    centroid: tuple[float, float]  # (x, y) as fractions of width and height
    location: str

    def to_dict(self) -> dict:
        return {
            "box": list(self.box),
            "area_fraction": round(self.area_fraction, 6),
            "peak_score": round(self.peak_score, 6),
            "centroid": [round(c, 4) for c in self.centroid],
            "location": self.location,
        }


@dataclass(frozen=True)
class InspectionResult:
    """One frame's outcome. ``anomaly_map`` is float32 at the frame's own resolution."""

    score: float
    threshold: float
    is_anomalous: bool
    anomaly_map: np.ndarray = field(repr=False)
    regions: tuple[Region, ...]
    object_name: str
    source: str | None = None
    latency_ms: dict[str, float] = field(default_factory=dict, repr=False)
    map_threshold: float | None = None  # where the map's regions were cut, if not at ``threshold``

    @property
    def map_level(self) -> float:
        """The level the map's regions are cut at (``map_threshold``, else the score's ``threshold``)."""
        return self.threshold if self.map_threshold is None else self.map_threshold

    @property
    def location(self) -> str:
        """Grid cell of the strongest region, or ``"none"`` when the frame passed."""
        return self.regions[0].location if self.is_anomalous and self.regions else "none"

    def to_dict(self) -> dict:
        return {
            "image": self.source,
            "score": round(self.score, 6),
            "threshold": round(self.threshold, 6),
            "map_threshold": round(self.map_level, 6),
            "is_anomalous": self.is_anomalous,
            "location": self.location,
            "regions": [r.to_dict() for r in self.regions],
        }
