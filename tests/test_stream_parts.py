"""Gate, event log and sources of the camera runtime, each on its own."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from edge_anomaly.runtime.event_log import EventLog, read_events
from edge_anomaly.runtime.gate import EventGate
from edge_anomaly.runtime.sources import (
    Frame,
    ImageFolderSource,
    ReconnectingSource,
    SourceError,
    VideoCaptureSource,
    open_source,
)


def _feed(gate: EventGate, decisions: str):
    """'x' anomalous, '.' normal; returns the (opened, closed) frame ids."""
    opened, closed = [], []
    for i, ch in enumerate(decisions):
        step = gate.update(i, float(i), ch == "x", 2.0 if ch == "x" else 0.1, payload=i)
        if step.opened:
            opened.append(i)
        if step.closed:
            closed.append(i)
    return opened, closed


def test_a_single_noisy_frame_opens_no_event():
    assert _feed(EventGate(open_n=2, open_m=3), "..x....x...") == ([], [])


def test_debounced_event_opens_once_and_closes_after_normal_frames():
    gate = EventGate(open_n=2, open_m=3, close_n=3, close_m=3)
    assert _feed(gate, "..x.xxx.x....x.") == ([4], [11])


def test_event_keeps_its_best_frame():
    gate = EventGate(open_n=1, open_m=1, close_n=2, close_m=2)
    gate.update(0, 0.0, True, 1.0, "first")
    gate.update(1, 1.0, True, 3.0, "best")
    gate.update(2, 2.0, True, 2.0, "later")
    event = gate.close()
    assert (event.best_frame, event.best, event.frames) == (1, "best", 3)


def test_event_log_survives_a_torn_last_line(tmp_path):
    path = tmp_path / "events.jsonl"
    log = EventLog(path)
    log.append({"event": 0})
    log.append({"event": 1})
    log.close()
    with open(path, "ab") as fh:
        fh.write(b'{"event": 2, "text": "cut sh')  # a crash in the middle of a write
    log = EventLog(path)
    log.append({"event": 3})
    log.close()
    assert [r["event"] for r in read_events(path)] == [0, 1, 3]


def test_event_log_rotates(tmp_path):
    path = tmp_path / "events.jsonl"
    log = EventLog(path, max_bytes=200, backups=2)
    for i in range(30):
        log.append({"event": i, "pad": "x" * 20})
    log.close()
    kept = read_events(path.with_name("events.jsonl.2")) + read_events(path.with_name("events.jsonl.1"))
    kept += read_events(path)
    assert [r["event"] for r in kept] == list(range(30 - len(kept), 30))
    assert path.stat().st_size <= 200 and not path.with_name("events.jsonl.3").exists()


def test_event_log_writes_numpy_values(tmp_path):
    log = EventLog(tmp_path / "e.jsonl")
    log.append({"score": np.float32(1.5), "frame": np.int64(3)})
    log.close()
    assert json.loads((tmp_path / "e.jsonl").read_text()) == {"score": 1.5, "frame": 3}


def test_folder_and_glob_sources_flag_corrupt_files(tmp_path):
    for i in range(3):
        cv2.imwrite(str(tmp_path / f"{i}.png"), np.full((40, 40), i * 50, np.uint8))
    (tmp_path / "3.png").write_bytes(b"broken")
    for spec in (tmp_path, str(tmp_path / "*.png")):
        source = open_source(spec)
        assert isinstance(source, ImageFolderSource) and not source.live
        frames = []
        while (frame := source.read()) is not None:
            frames.append(frame)
        assert [f.id for f in frames] == [0, 1, 2, 3]
        assert frames[3].image is None and "cannot decode" in frames[3].error


def test_video_file_source_reads_to_the_end(tmp_path):
    path = tmp_path / "line.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    for i in range(12):
        writer.write(np.full((48, 64, 3), i * 20, np.uint8))
    writer.release()
    source = open_source(str(path))
    assert isinstance(source, VideoCaptureSource) and not source.live
    count = 0
    while (frame := source.read()) is not None:
        assert frame.image.shape == (48, 64, 3)
        count += 1
    assert count == 12


def test_missing_sources_are_refused(tmp_path):
    with pytest.raises(SourceError, match="does not exist"):
        open_source(tmp_path / "nope.mp4")
    with pytest.raises(SourceError, match="no image files"):
        open_source(str(tmp_path / "*.png"))


class _Flaky:
    """Delivers ``good`` frames, then fails; the next instance starts over."""

    opened = 0

    def __init__(self, good: int = 3):
        _Flaky.opened += 1
        self.name, self.live, self._left = "flaky", True, good

    def read(self):
        if self._left == 0:
            raise SourceError("cable pulled")
        self._left -= 1
        return Frame(0, 0.0, np.zeros((40, 40, 3), np.uint8), "flaky")

    def close(self):
        pass


def test_reconnecting_source_backs_off_and_keeps_ids_unique():
    _Flaky.opened = 0
    sleeps: list[float] = []
    source = ReconnectingSource(_Flaky, initial_backoff=0.5, max_backoff=1.0, sleep=sleeps.append)
    ids = [source.read().id for _ in range(9)]
    assert ids == list(range(9))
    assert source.reconnects == 2 and _Flaky.opened == 3 and sleeps == [0.5, 0.5]


def test_reconnecting_source_gives_up_after_max_attempts():
    def never():
        raise SourceError("no camera")

    sleeps: list[float] = []
    source = ReconnectingSource(never, initial_backoff=0.1, max_backoff=0.3, max_attempts=4, sleep=sleeps.append)
    assert source.read() is None
    assert sleeps == [0.1, 0.2, 0.3] and source.failures == 4
