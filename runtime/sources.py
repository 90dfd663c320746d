"""Frame sources: cameras, V4L2 devices, GStreamer pipelines, RTSP, video files, image folders.

Every source yields ``Frame`` objects with an id and a timestamp, or ``None``
once it has ended. Live sources (cameras, RTSP, GStreamer) are expected to
drop; ``ReconnectingSource`` reopens them with exponential backoff. Files and
folders end, and then the stream ends.

>>> source = open_source("rtsp://10.0.0.5/stream1")      # or 0, "/dev/video0", "line.mp4", "frames/*.png",
>>> source = open_source("nvarguscamerasrc ! nvvidconv ! video/x-raw,format=BGRx ! videoconvert ! appsink")
"""

from __future__ import annotations

import glob
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from edge_anomaly.errors import InputError
from edge_anomaly.images import IMAGE_SUFFIXES, decode_image

log = logging.getLogger(__name__)
NETWORK_SCHEMES = ("rtsp://", "rtsps://", "http://", "https://")


@dataclass(frozen=True)
class Frame:
    """One captured frame; ``image`` is BGR (OpenCV order) unless the source says otherwise."""

    id: int
    timestamp: float
    image: np.ndarray | None = field(repr=False)  # None: the source delivered something unreadable
    source: str = ""
    error: str | None = None


class FrameSource(Protocol):
    name: str
    live: bool

    def read(self) -> Frame | None: ...

    def close(self) -> None: ...


class SourceError(InputError):
    """A source could not be opened or failed while reading."""


class VideoCaptureSource:
    """OpenCV capture: camera index, ``/dev/videoN``, RTSP/HTTP URL, GStreamer pipeline or video file."""

    def __init__(self, spec: int | str) -> None:
        self.name = str(spec)
        self.live = _is_live(spec)
        if isinstance(spec, str) and "!" in spec:
            self._capture = cv2.VideoCapture(spec, cv2.CAP_GSTREAMER)
        else:
            self._capture = cv2.VideoCapture(spec)
        if not self._capture.isOpened():
            raise SourceError(f"cannot open video source {spec!r}")
        self._next_id = 0

    def read(self) -> Frame | None:
        ok, image = self._capture.read()
        if not ok:
            if self.live:
                raise SourceError(f"video source {self.name!r} stopped delivering frames")
            return None
        frame = Frame(self._next_id, time.time(), image, self.name)
        self._next_id += 1
        return frame

    def close(self) -> None:
        self._capture.release()


class ImageFolderSource:
    """Image files of a folder or a glob pattern, in name order; unreadable files become error frames."""

    def __init__(self, spec: str | Path) -> None:
        self.name = str(spec)
        self.live = False
        path = Path(spec)
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            files = sorted(Path(p) for p in glob.glob(str(spec)) if Path(p).suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise SourceError(f"no image files in {spec}")
        self._files = files
        self._next = 0

    def read(self) -> Frame | None:
        if self._next >= len(self._files):
            return None
        path = self._files[self._next]
        try:
            image, error = decode_image(np.fromfile(path, dtype=np.uint8), path), None
        except (InputError, OSError) as exc:
            image, error = None, str(exc)
        if image is None and error is None:
            error = f"cannot decode {path}"
        frame = Frame(self._next, time.time(), image, str(path), error)
        self._next += 1
        return frame

    def close(self) -> None:
        self._next = len(self._files)


class IterableSource:
    """Frames from any iterable of arrays (a vendor camera SDK's generator, a list in a test)."""

    def __init__(self, frames, name: str = "iterable", live: bool = False) -> None:
        self._frames = iter(frames)
        self.name, self.live = name, live
        self._next_id = 0

    def read(self) -> Frame | None:
        image = next(self._frames, None)
        if image is None:
            return None
        frame = Frame(self._next_id, time.time(), image, self.name)
        self._next_id += 1
        return frame

    def close(self) -> None:
        self._frames = iter(())


class ReconnectingSource:
    """Wraps a live source: when it raises, close it and reopen with exponential backoff.

    Frame ids keep counting across reconnects so events never reuse an id.
    ``max_attempts`` consecutive failures end the stream (``None``) instead of
    waiting forever; ``reconnects`` counts successful reopenings.
    """

    def __init__(
        self,
        factory: Callable[[], FrameSource],
        initial_backoff: float = 0.5,
        max_backoff: float = 30.0,
        max_attempts: int | None = None,
        sleep: Callable[[float], None] = time.sleep,
        first: FrameSource | None = None,
    ) -> None:
        """``first``: the source already opened once (``open_source`` opens a local camera up front)."""
        self._factory = factory
        self._initial, self._max = initial_backoff, max_backoff
        self._max_attempts = max_attempts
        self._sleep = sleep
        self._source: FrameSource | None = first
        self._next_id = 0
        self.reconnects = 0
        self.failures = 0
        self.name = first.name if first is not None else "reconnecting"
        self.live = True

    def read(self) -> Frame | None:
        attempts, backoff = 0, self._initial
        while True:
            try:
                if self._source is None:
                    self._source = self._factory()
                    self.name = self._source.name
                    if attempts:
                        self.reconnects += 1
                frame = self._source.read()
            except (SourceError, OSError, cv2.error) as exc:
                self.failures += 1
                attempts += 1
                log.warning("source %s failed (%s); retry %d in %.1fs", self.name, exc, attempts, backoff)
                self._drop()
                if self._max_attempts is not None and attempts >= self._max_attempts:
                    return None
                self._sleep(backoff)
                backoff = min(backoff * 2, self._max)
                continue
            if frame is None:
                return None
            renumbered = Frame(self._next_id, frame.timestamp, frame.image, frame.source, frame.error)
            self._next_id += 1
            return renumbered

    def close(self) -> None:
        self._drop()

    def _drop(self) -> None:
        if self._source is not None:
            try:
                self._source.close()
            finally:
                self._source = None


def open_source(spec: int | str | Path, max_attempts: int | None = None) -> FrameSource:
    """A source for ``spec``; live ones come wrapped in ``ReconnectingSource``.

    A source that can never open fails here, at once: a wrong type, a file that is not there, a camera
    that does not answer its first open. Only network sources (a camera on the network may be booting)
    retry their first open; every live source retries after it has delivered once."""
    if isinstance(spec, bool) or not isinstance(spec, (int, str, Path)):
        raise SourceError(
            f"source must be a camera index, a device, a URL, a GStreamer pipeline, a video, a folder or a glob, "
            f"got {type(spec).__name__} {spec!r}"
        )
    if isinstance(spec, str) and not spec.strip():
        raise SourceError("source is empty")
    if isinstance(spec, str) and spec.isdigit():
        spec = int(spec)
    if isinstance(spec, int) and spec < 0:
        raise SourceError(f"camera index must be 0 or more, got {spec}")
    if isinstance(spec, (str, Path)) and not _is_live(spec):
        path = Path(spec)
        if path.is_dir() or any(ch in str(spec) for ch in "*?[") or path.suffix.lower() in IMAGE_SUFFIXES:
            return ImageFolderSource(spec)
        if not path.exists():
            raise SourceError(f"video file {path} does not exist")
        return VideoCaptureSource(str(path))
    if _is_network(spec):
        return ReconnectingSource(lambda: VideoCaptureSource(spec), max_attempts=max_attempts)
    first = VideoCaptureSource(spec)  # a camera or pipeline that cannot open now is a mistake, not an outage
    return ReconnectingSource(lambda: VideoCaptureSource(spec), max_attempts=max_attempts, first=first)


def _is_network(spec: int | str | Path) -> bool:
    return isinstance(spec, str) and spec.startswith(NETWORK_SCHEMES)


def _is_live(spec: int | str | Path) -> bool:
    if isinstance(spec, int):
        return True
    text = str(spec)
    return text.startswith((*NETWORK_SCHEMES, "/dev/video")) or "!" in text
