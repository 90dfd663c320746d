"""Settling a few-shot inspector on a running line: its first frames, presumed normal, raise the threshold.

A few shots set a lenient threshold: on a simulated line they stop many
normal frames (``benchmarks/line.py``; the figures are in ``docs/accuracy.md``,
"On a line"). ``SettlingInspector`` inspects the first ``frames`` frames of
the line as usual, then hands them to ``Inspector.presume_normal``, which
raises the threshold to a robust bound of their scores (a few defects among
them cannot drag it up) and keeps them out of the bank. False alarms fall,
and so does recall: the trade is the user's, which is why settling is asked
for (``edge-anomaly run --settle N``), not done by default.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .errors import InputError
from .images import ImageLike, as_rgb, resize_square
from .inspector import Inspector
from .result import InspectionResult
from .streaming import FrameByFrame

MIN_SETTLE_FRAMES = 8  # fewer and the median and its spread say little


class SettlingInspector(FrameByFrame):
    """Drop-in for ``Inspector`` in ``stream``: after ``frames`` frames the threshold is settled;
    ``on_settled(inspector)`` is then called once (``edge-anomaly run --save-bundle`` saves it there)."""

    def __init__(
        self, inspector: Inspector, frames: int = 16, on_settled: Callable[[Inspector], None] | None = None
    ) -> None:
        if frames < MIN_SETTLE_FRAMES:
            raise InputError(f"settling needs at least {MIN_SETTLE_FRAMES} frames, got {frames}")
        self.inspector, self.frames, self.on_settled = inspector, frames, on_settled
        self.narrator = inspector.narrator
        self._seen: list[np.ndarray] = []  # at the input size, to bound memory
        self.settled = False

    def inspect_one(self, frame: ImageLike, color_order: str = "bgr") -> InspectionResult:
        result = self.inspector.inspect(frame, color_order)  # a path stays the result's source
        if self.settled:
            return result
        self._seen.append(resize_square(as_rgb(frame, color_order), self.inspector.preprocessing.size))
        if len(self._seen) >= self.frames:
            self.inspector.presume_normal(self._seen, "rgb")
            self.settled, self._seen = True, []
            if self.on_settled is not None:
                self.on_settled(self.inspector)
        return result
