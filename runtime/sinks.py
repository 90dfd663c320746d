"""Where stream events go: a callback, the durable event log, overlay JPEGs, a speaker.

A sink gets every ``StreamEvent`` (``event_opened``, ``event_closed``,
``verdict``, ``stream_end``) and picks what it needs.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np

from edge_anomaly.overlay import render_overlay
from edge_anomaly.result import InspectionResult

from .event_log import EventLog

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StreamEvent:
    """One thing that happened on the stream; ``record`` is what the event log stores."""

    kind: str
    record: dict[str, Any]
    result: InspectionResult | None = field(default=None, repr=False)
    image: np.ndarray | None = field(default=None, repr=False)  # the event's best frame, as captured


class Sink(Protocol):
    def handle(self, event: StreamEvent) -> None: ...

    def close(self) -> None: ...


class CallbackSink:
    def __init__(self, callback: Callable[[StreamEvent], None]) -> None:
        self._callback = callback

    def handle(self, event: StreamEvent) -> None:
        self._callback(event)

    def close(self) -> None:
        pass


class EventLogSink:
    """Every record into the fsync-ed JSONL log; the stream treats an event as acknowledged after this."""

    def __init__(self, path: str | Path, max_bytes: int = 50 * 1024 * 1024) -> None:
        self.log = EventLog(path, max_bytes)

    def handle(self, event: StreamEvent) -> None:
        self.log.append(event.record)

    def close(self) -> None:
        self.log.close()


class OverlaySink:
    """A JPEG per event: its best frame with heatmap, boxes and, once it arrives, the verdict."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._pending: dict[int, tuple[np.ndarray, InspectionResult]] = {}

    def handle(self, event: StreamEvent) -> None:
        if event.kind == "event_closed" and event.result is not None and event.image is not None:
            self._pending[event.record["event"]] = (event.image, event.result)
        elif event.kind == "verdict" and event.record["event"] in self._pending:
            image, result = self._pending.pop(event.record["event"])
            overlay = render_overlay(image, result)
            _put_text_lines(overlay, event.record["text"])
            path = self.folder / f"event_{event.record['event']:06d}.jpg"
            if not cv2.imwrite(str(path), overlay):
                log.error("cannot write overlay %s", path)

    def close(self) -> None:
        self._pending.clear()


class SpeechSink:
    """Speaks verdicts through espeak-ng when it is installed; otherwise says so once and stays silent."""

    def __init__(self, command: str = "espeak-ng") -> None:
        self.executable = shutil.which(command)
        self._speaking: subprocess.Popen | None = None
        if self.executable is None:
            log.warning("%s is not installed (apt-get install espeak-ng): verdicts will not be spoken", command)

    def handle(self, event: StreamEvent) -> None:
        if event.kind != "verdict" or self.executable is None:
            return
        if self._speaking is not None and self._speaking.poll() is None:
            return  # still speaking the last verdict: never queue speech behind the line
        self._speaking = subprocess.Popen(
            [self.executable, event.record["text"]], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    def close(self) -> None:
        if self._speaking is not None:
            self._speaking.wait(timeout=30)


def _put_text_lines(image: np.ndarray, text: str, width_chars: int = 70) -> None:
    words, lines, line = text.split(), [], ""
    for word in words:
        if len(line) + len(word) + 1 > width_chars:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    lines.append(line)
    scale = max(0.35, image.shape[1] / 1400)
    height = int(22 * scale / 0.5)
    y0 = image.shape[0] - height * len(lines) - 6
    cv2.rectangle(image, (0, y0 - 4), (image.shape[1], image.shape[0]), (0, 0, 0), -1)
    for i, text_line in enumerate(lines):
        y = y0 + height * (i + 1) - 6
        cv2.putText(image, text_line, (4, y), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
