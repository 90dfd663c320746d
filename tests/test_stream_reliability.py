"""The frame loop under the faults a factory throws at it: real processes, bounded in time."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import cv2
import numpy as np
import pytest

from edge_anomaly.runtime.event_log import read_events
from edge_anomaly.runtime.gate import EventGate
from edge_anomaly.runtime.sources import IterableSource
from edge_anomaly.synthetic import defect_line


@pytest.fixture(scope="module")
def line_frames():
    """60 BGR frames of the fabric line, defects in frames 20-25 and 40-42."""
    return defect_line(60, lambda i: 20 <= i < 26 or 40 <= i < 43, seed=11)


def _gate():
    return EventGate(open_n=2, open_m=3, close_n=3, close_m=3)


def test_stream_finds_the_two_defect_passes(inspector, line_frames, tmp_path):
    runner = inspector.stream(
        IterableSource(line_frames), events=tmp_path / "e.jsonl", overlays=tmp_path / "ov", gate=_gate()
    )
    events = list(runner)
    kinds = [e.kind for e in events]
    assert kinds.count("event_opened") == 2 == kinds.count("event_closed") == kinds.count("verdict")
    opened = [e.record["frame"] for e in events if e.kind == "event_opened"]
    assert 20 <= opened[0] <= 22 and 40 <= opened[1] <= 42
    assert kinds[-1] == "stream_end" and events[-1].record["inspected"] == 60
    logged = read_events(tmp_path / "e.jsonl")
    assert [r["type"] for r in logged] == kinds
    assert len(list((tmp_path / "ov").glob("event_*.jpg"))) == 2


def test_odd_frames_are_counted_and_skipped_never_fatal(inspector, line_frames):
    odd = [
        np.zeros((8, 8, 3), np.uint8),  # too small
        np.zeros((64, 64, 2), np.uint8),  # two channels
        np.zeros((64, 64, 3), np.int32),  # wrong dtype
    ]
    fine = [
        np.zeros((256, 256, 3), np.uint8),  # all black: inspected, not an error
        cv2.cvtColor(line_frames[0], cv2.COLOR_BGR2GRAY),  # grey
        line_frames[1].astype(np.uint16) * 257,  # 16-bit
        cv2.resize(line_frames[2], (300, 180)),  # another size
    ]
    runner = inspector.stream(IterableSource(odd + fine + line_frames[3:10]))
    stats = runner.run()
    assert stats.bad_frames == 3 and stats.inspected == len(fine) + 7


class _Raising:
    def __init__(self, error):
        self.error = error
        self.name = "raising"

    def verdict(self, result):
        raise self.error


class _Hanging:
    name = "hanging"

    def __init__(self):
        self.release = threading.Event()

    def verdict(self, result):
        self.release.wait(30)
        return "too late"


def test_crashing_verdict_model_yields_template_verdicts(inspector, line_frames):
    runner = inspector.stream(IterableSource(line_frames), provider=_Raising(RuntimeError("llama abort")), gate=_gate())
    verdicts = [e.record for e in runner if e.kind == "verdict"]
    assert len(verdicts) == 2
    assert all(v["verdict_source"] == "template" and v["fallback_reason"] == "failed" for v in verdicts)
    assert all("anomalous" in v["text"] for v in verdicts)
    assert runner.stats.inspected == 60


def test_hanging_verdict_model_never_stalls_detection(inspector, line_frames):
    hanging = _Hanging()
    runner = inspector.stream(IterableSource(line_frames), provider=hanging, gate=_gate(), verdict_timeout=0.5)
    events = list(runner)
    hanging.release.set()
    verdicts = [e.record for e in events if e.kind == "verdict"]
    assert [v["fallback_reason"] for v in verdicts] == ["timed_out", "busy"]
    assert runner.stats.inspected == 60


def test_frame_loop_keeps_going_while_the_model_thinks(inspector, line_frames):
    """Between the first event closing and its (slow) verdict arriving, frames keep being inspected."""

    class Slow:
        name = "slow"

        def verdict(self, result):
            time.sleep(1.0)
            return "The part is anomalous."

    progress = {}
    runner = inspector.stream(IterableSource(line_frames * 3), provider=Slow(), gate=_gate())
    for event in runner:
        if event.kind in ("event_closed", "verdict") and event.record["event"] == 0:
            progress[event.kind] = runner.stats.inspected
    assert progress["verdict"] - progress["event_closed"] >= 10


@pytest.mark.skipif(not hasattr(os, "sched_getscheduler"), reason="thread scheduling policies are Linux-only")
def test_the_model_runs_below_the_frame_loop(inspector, line_frames):
    """The verdict model's thread is SCHED_IDLE (or niced where that is refused); the loop's is not."""

    class Probe:
        name = "probe"
        seen: list[tuple[int, int]] = []

        def verdict(self, result):
            tid = threading.get_native_id()
            self.seen.append((os.sched_getscheduler(tid), os.getpriority(os.PRIO_PROCESS, tid)))
            return "The part is anomalous at the center."

    list(inspector.stream(IterableSource(line_frames), provider=Probe(), gate=_gate()))
    assert Probe.seen and all(policy == os.SCHED_IDLE or nice >= 10 for policy, nice in Probe.seen)
    assert os.sched_getscheduler(threading.get_native_id()) != os.SCHED_IDLE


def test_source_that_raises_mid_stream_stops_cleanly(inspector, line_frames):
    def frames():
        yield from line_frames[:5]
        raise OSError("USB camera vanished")

    runner = inspector.stream(IterableSource(frames()))
    events = list(runner)
    assert events[-1].kind == "stream_end" and events[-1].record["source_errors"] == 1
    assert runner.stats.inspected == 5


STREAM_SCRIPT = r"""
import sys
from edge_anomaly.cli import main
sys.exit(main(["run", sys.argv[1], "--source", sys.argv[2], "--events", sys.argv[3], "--quiet"]))
"""


@pytest.fixture(scope="module")
def frame_folder(line_frames, tmp_path_factory):
    folder = tmp_path_factory.mktemp("line")
    for i in range(600):
        cv2.imwrite(str(folder / f"{i:05d}.png"), line_frames[i % 60])
    return folder


def _start(bundle_dir, frame_folder, log):
    return subprocess.Popen(
        [sys.executable, "-c", STREAM_SCRIPT, str(bundle_dir), str(frame_folder), str(log)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )


def test_kill_9_loses_no_acknowledged_event(bundle_dir, frame_folder, tmp_path):
    log = tmp_path / "events.jsonl"
    proc = _start(bundle_dir, frame_folder, log)
    acknowledged = []
    deadline = time.monotonic() + 120
    while len(acknowledged) < 8 and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        acknowledged.append(json.loads(line.split(" ", 1)[1]))
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert len(acknowledged) >= 8, "the stream produced too few events before the kill"
    logged = read_events(log)
    for line in log.read_bytes().splitlines(keepends=True)[:-1]:
        json.loads(line)  # every complete line parses
    assert acknowledged == logged[: len(acknowledged)]


def test_a_run_after_kill_9_continues_the_numbering_and_closes_the_dead_runs_event(bundle_dir, frame_folder, tmp_path):
    log = tmp_path / "events.jsonl"
    proc = _start(bundle_dir, frame_folder, log)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # kill it while an event is open: right after an event_opened
        line = proc.stdout.readline()
        if not line or line.startswith("event_opened"):
            break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    dead = read_events(log)
    dead_run = dead[0]["run"]
    left_open = {r["event"] for r in dead if r["type"] == "event_opened"} - {
        r["event"] for r in dead if r["type"] == "event_closed"
    }
    assert left_open, "the killed run left no open event to close"

    short = tmp_path / "short"
    short.mkdir()
    for path in sorted(frame_folder.iterdir())[15:45]:  # one defect pass (frames 20-25)
        (short / path.name).write_bytes(path.read_bytes())
    again = _start(bundle_dir, short, log)
    again.communicate(timeout=120)
    assert again.returncode == 0
    after = read_events(log)[len(dead) :]
    interrupted = [r for r in after if r["type"] == "event_closed" and r["reason"] == "interrupted"]
    assert {r["event"] for r in interrupted} == left_open
    assert all(r["run"] == dead_run and r["event_uid"] == f"{dead_run}-{r['event']}" for r in interrupted)
    new_events = [r for r in after if r["type"] == "event_opened"]
    assert new_events and new_events[0]["event"] == max(r["event"] for r in dead if "event" in r) + 1
    new_run = after[-1]["run"]
    assert new_run != dead_run and after[-1]["type"] == "stream_end"
    assert all(r["run"] == new_run for r in after if r not in interrupted)
    assert all(r["source"] == (str(frame_folder) if r in interrupted else str(short)) for r in after)


def test_sigterm_stops_cleanly_and_flushes(bundle_dir, frame_folder, tmp_path):
    log = tmp_path / "events.jsonl"
    proc = _start(bundle_dir, frame_folder, log)
    first = proc.stdout.readline()
    assert first.startswith("event_opened")
    proc.send_signal(signal.SIGTERM)
    rest = proc.communicate(timeout=60)[0]
    assert proc.returncode == 0
    logged = read_events(log)
    assert logged[-1]["type"] == "stream_end" and logged[-1]["reason"] == "stopped"
    opened = {r["event"] for r in logged if r["type"] == "event_opened"}
    closed = {r["event"] for r in logged if r["type"] == "event_closed"}
    answered = {r["event"] for r in logged if r["type"] == "verdict"}
    assert opened == closed == answered  # the open event was closed and got its verdict
    assert "stream_end" in rest


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs Linux /proc to read RSS")
def test_long_stream_keeps_memory_flat(bundle_dir, line_frames):
    """3,000 frames here (benchmarks/soak.py runs tens of thousands): RSS after warm-up stays put."""
    from edge_anomaly import Inspector

    small = [cv2.resize(f, (128, 128)) for f in line_frames]  # the bundle's own input size
    insp = Inspector.load(bundle_dir, backend="onnxruntime-cpu")
    marks = {}

    def frames():
        for i in range(3000):
            if i in (500, 2999):
                marks[i] = _rss_mb()
            yield small[i % 60]

    stats = insp.stream(IterableSource(frames()), gate=_gate()).run()
    assert stats.inspected == 3000 and stats.events >= 80
    assert marks[2999] - marks[500] < 10.0


class _Scores:
    """A sink that keeps every frame's score, as a live view would see them."""

    def __init__(self) -> None:
        self.scores: list[tuple[int, float, bool]] = []

    def frame(self, frame, result) -> None:
        self.scores.append((frame.id, result.score, result.is_anomalous))

    def handle(self, event) -> None:
        pass

    def close(self) -> None:
        pass


def test_the_pipelined_stream_gives_the_serial_streams_events_and_scores(inspector, line_frames):
    def run(pipelined: bool):
        seen = _Scores()
        runner = inspector.stream(IterableSource(line_frames), sinks=[seen], gate=_gate(), pipelined=pipelined)
        assert runner.pipelined == pipelined
        volatile = {"time", "run", "event_uid", "seq", "fps", "p99_ms"}
        events = [{k: v for k, v in e.record.items() if k not in volatile} for e in runner]
        return events, seen.scores

    serial_events, serial_scores = run(False)
    piped_events, piped_scores = run(True)
    assert [s[0] for s in piped_scores] == list(range(60))  # every frame, in capture order
    assert piped_scores == serial_scores  # bit for bit: the same graphs on the same features
    assert piped_events == serial_events


class _Recorder:
    def __init__(self) -> None:
        self.kinds: list[str] = []
        self.closed = False

    def handle(self, event) -> None:
        self.kinds.append(event.kind)

    def close(self) -> None:
        self.closed = True


class _Broken(_Recorder):
    def handle(self, event) -> None:
        raise RuntimeError("dashboard down")


def test_a_user_sink_that_fails_is_logged_and_skipped_and_the_others_get_every_record(
    inspector, line_frames, tmp_path, caplog
):
    broken, recorder = _Broken(), _Recorder()
    runner = inspector.stream(
        IterableSource(line_frames), events=tmp_path / "e.jsonl", sinks=[broken, recorder], gate=_gate()
    )
    events = list(runner)
    assert recorder.kinds == [e.kind for e in events] and recorder.kinds[-1] == "stream_end"
    assert [r["type"] for r in read_events(tmp_path / "e.jsonl")] == recorder.kinds  # the log lost nothing
    assert broken.closed and recorder.closed
    assert "sink _Broken failed" in caplog.text and "dashboard down" in caplog.text
