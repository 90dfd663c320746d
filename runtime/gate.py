"""Turning per-frame decisions into anomaly *events*, with debounce.

A single noisy frame should not page an operator, and one defect passing the
camera for 40 frames is one event, not 40. An event opens when at least
``open_n`` of the last ``open_m`` frames are anomalous and closes when at least
``close_n`` of the last ``close_m`` frames are normal. While it is open the
gate keeps the event's best frame (highest score): that is the frame the
verdict and the overlay describe.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any


@dataclass
class OpenEvent:
    """An event in progress; ``best`` is whatever the caller attached to the best frame."""

    id: int
    opened_frame: int
    opened_at: float
    best_score: float
    best_frame: int
    best: Any = field(repr=False)
    frames: int = 1


@dataclass(frozen=True)
class GateStep:
    """What one frame did to the gate: an event ``opened``, ``closed``, or nothing (both ``None``)."""

    opened: OpenEvent | None = None
    closed: OpenEvent | None = None


class EventGate:
    def __init__(self, open_n: int = 2, open_m: int = 3, close_n: int = 5, close_m: int = 5) -> None:
        if not (1 <= open_n <= open_m and 1 <= close_n <= close_m):
            raise ValueError("need 1 <= open_n <= open_m and 1 <= close_n <= close_m")
        self.open_n, self.close_n = open_n, close_n
        self._recent_open: deque[bool] = deque(maxlen=open_m)
        self._recent_close: deque[bool] = deque(maxlen=close_m)
        self.current: OpenEvent | None = None
        self._next_id = 0

    def continue_numbering(self, next_id: int) -> None:
        """Number the next event ``next_id``: a restarted run continues its event log's numbering."""
        if self.current is not None:
            raise ValueError("cannot renumber while an event is open")
        self._next_id = next_id

    def update(self, frame_id: int, timestamp: float, anomalous: bool, score: float, payload: Any = None) -> GateStep:
        """Feed one frame's decision; ``payload`` is kept if this frame becomes the event's best."""
        self._recent_open.append(anomalous)
        self._recent_close.append(not anomalous)
        event = self.current
        if event is None:
            if sum(self._recent_open) >= self.open_n:
                self.current = OpenEvent(self._next_id, frame_id, timestamp, score, frame_id, payload)
                self._next_id += 1
                self._recent_close.clear()
                return GateStep(opened=self.current)
            return GateStep()
        event.frames += 1
        if anomalous and score > event.best_score:
            event.best_score, event.best_frame, event.best = score, frame_id, payload
        if sum(self._recent_close) >= self.close_n:
            return GateStep(closed=self.close())
        return GateStep()

    def close(self) -> OpenEvent | None:
        """Close the open event now (end of stream, shutdown); returns it, or ``None``."""
        event, self.current = self.current, None
        self._recent_open.clear()
        self._recent_close.clear()
        return event
