"""The frame loop: source -> bounded queue -> inspect -> gate -> sinks, verdicts on the side.

>>> for event in inspector.stream("rtsp://10.0.0.5/stream1", events="events.jsonl"):
...     print(event.kind, event.record)

A capture thread reads the source into a bounded queue. Drop policy: for live
sources the *oldest* queued frame is dropped when the queue is full (the line
moves on; a stale frame is worth less than a fresh one) and counted in
``stats.dropped``; files and folders are never dropped (capture waits).
Unreadable or odd frames are counted in ``stats.bad_frames`` and skipped.
An event's verdict is asked for when the event closes, for its best frame;
the loop never waits for it. ``stop()`` (SIGINT/SIGTERM in the CLI) ends the
loop cleanly: the open event is closed, pending verdicts are drained (template
sentences if the provider does not answer in time), every sink is flushed.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from edge_anomaly.errors import InputError
from edge_anomaly.inspector import Inspector

from .gate import EventGate, OpenEvent
from .sinks import CallbackSink, EventLogSink, OverlaySink, Sink, SpeechSink, StreamEvent
from .sources import Frame, FrameSource, SourceError, open_source
from .verdict_worker import VerdictProvider, VerdictWorker

log = logging.getLogger(__name__)
LATENCY_WINDOW = 1000


@dataclass
class StreamStats:
    """Counters of the run; ``latency_ms`` keeps the last frames only, so memory stays flat."""

    captured: int = 0
    inspected: int = 0
    bad_frames: int = 0
    dropped: int = 0
    events: int = 0
    verdicts: int = 0
    source_errors: int = 0
    started: float = field(default_factory=time.perf_counter)
    loop_ended: float | None = None  # set when frames stop; draining verdicts afterwards does not count
    latency_ms: deque = field(default_factory=lambda: deque(maxlen=LATENCY_WINDOW), repr=False)

    @property
    def fps(self) -> float:
        end = self.loop_ended if self.loop_ended is not None else time.perf_counter()
        return self.inspected / max(end - self.started, 1e-9)

    @property
    def p99_ms(self) -> float:
        return float(np.percentile(self.latency_ms, 99)) if self.latency_ms else 0.0

    def to_dict(self) -> dict:
        counters = {k: v for k, v in asdict(self).items() if k not in ("started", "loop_ended", "latency_ms")}
        return counters | {"fps": round(self.fps, 2), "p99_ms": round(self.p99_ms, 2)}


class StreamRunner:
    def __init__(
        self,
        inspector: Inspector,
        source: FrameSource,
        sinks: list[Sink] | None = None,
        gate: EventGate | None = None,
        provider: VerdictProvider | None = None,
        verdict_timeout: float = 10.0,
        queue_size: int = 8,
        max_frames: int | None = None,
    ) -> None:
        self.inspector = inspector
        self.source = source
        self.sinks = list(sinks or [])
        self.gate = gate or EventGate()
        self.worker = VerdictWorker(provider, verdict_timeout)
        self.max_frames = max_frames
        self.stats = StreamStats()
        self._frames: queue.Queue[Frame | None] = queue.Queue(maxsize=queue_size)
        self._last_frame = -1
        self._stop = threading.Event()
        self._capture = threading.Thread(target=self._capture_loop, name="capture", daemon=True)

    def stop(self) -> None:
        """Ask the loop to finish; safe from signal handlers and other threads."""
        self._stop.set()

    def run(self) -> StreamStats:
        """Run to the end of the source (or ``stop()``), delivering events to the sinks only."""
        for _ in self:
            pass
        return self.stats

    def __iter__(self) -> Iterator[StreamEvent]:
        self._capture.start()
        try:
            yield from self._loop()
            self.stats.loop_ended = time.perf_counter()
            reason = "stopped" if self._stop.is_set() else "end_of_stream"
            yield from self._finish(reason)
        finally:
            self._stop.set()
            self.source.close()
            for sink in self.sinks:
                sink.close()

    def _loop(self) -> Iterator[StreamEvent]:
        while not self._stop.is_set():
            yield from self._verdicts(self.worker.poll())
            try:
                frame = self._frames.get(timeout=0.05)
            except queue.Empty:
                continue
            if frame is None:
                return
            yield from self._process(frame)
            if self.max_frames is not None and self.stats.inspected + self.stats.bad_frames >= self.max_frames:
                return

    def _process(self, frame: Frame) -> Iterator[StreamEvent]:
        self._last_frame = frame.id
        if frame.image is None:
            self._skip(frame, frame.error)
            return
        start = time.perf_counter()
        try:
            result = self.inspector.inspect(frame.image)
        except InputError as exc:
            self._skip(frame, str(exc))
            return
        self.stats.latency_ms.append((time.perf_counter() - start) * 1000)
        self.stats.inspected += 1
        step = self.gate.update(frame.id, frame.timestamp, result.is_anomalous, result.score, (frame, result))
        if step.opened is not None:
            self.stats.events += 1
            record = {
                "type": "event_opened",
                "event": step.opened.id,
                "frame": frame.id,
                "time": frame.timestamp,
                "score": result.score,
                "threshold": result.threshold,
                "location": result.location,
                "source": frame.source,
            }
            yield from self._emit(StreamEvent("event_opened", record, result, frame.image))
        if step.closed is not None:
            yield from self._close(step.closed, frame.id, "normal")

    def _skip(self, frame: Frame, why: str | None) -> None:
        """Count a bad frame; log the first few and then every 1000th, so months of them never flood the log."""
        self.stats.bad_frames += 1
        if self.stats.bad_frames <= 10 or self.stats.bad_frames % 1000 == 0:
            log.warning("frame %d skipped (%d bad so far): %s", frame.id, self.stats.bad_frames, why)

    def _close(self, event: OpenEvent, frame_id: int, reason: str) -> Iterator[StreamEvent]:
        best_frame, best = event.best
        record = {
            "type": "event_closed",
            "event": event.id,
            "opened_frame": event.opened_frame,
            "closed_frame": frame_id,
            "frames": event.frames,
            "best_frame": event.best_frame,
            "best_score": event.best_score,
            "threshold": best.threshold,
            "location": best.location,
            "regions": [r.to_dict() for r in best.regions],
            "reason": reason,
        }
        yield from self._emit(StreamEvent("event_closed", record, best, best_frame.image))
        self.worker.submit(event.id, best)

    def _verdicts(self, verdicts) -> Iterator[StreamEvent]:
        for v in verdicts:
            self.stats.verdicts += 1
            record = {
                "type": "verdict",
                "event": v.key,
                "text": v.text,
                "verdict_source": v.source,
                "fallback_reason": v.fallback_reason,
            }
            yield from self._emit(StreamEvent("verdict", record))

    def _finish(self, reason: str) -> Iterator[StreamEvent]:
        open_event = self.gate.close()
        if open_event is not None:
            yield from self._close(open_event, self._last_frame, reason)
        yield from self._verdicts(self.worker.drain(self.worker.timeout))
        record = {"type": "stream_end", "reason": reason, **self.stats.to_dict(), "verdict_counts": self.worker.counts}
        yield from self._emit(StreamEvent("stream_end", record))

    def _emit(self, event: StreamEvent) -> Iterator[StreamEvent]:
        for sink in self.sinks:
            sink.handle(event)
        yield event

    def _capture_loop(self) -> None:
        live = getattr(self.source, "live", False)
        try:
            while not self._stop.is_set():
                frame = self.source.read()
                if frame is None:
                    break
                self.stats.captured += 1
                self._enqueue(frame, live)
        except (SourceError, OSError) as exc:
            self.stats.source_errors += 1
            log.error("source %s failed and cannot recover: %s", self.source.name, exc)
        finally:
            self._enqueue(None, live=False)

    def _enqueue(self, item: Frame | None, live: bool) -> None:
        while not self._stop.is_set():
            try:
                self._frames.put(item, timeout=0.1)
                return
            except queue.Full:
                if live and item is not None:
                    try:
                        self._frames.get_nowait()
                        self.stats.dropped += 1
                    except queue.Empty:
                        pass


def stream(
    inspector: Inspector,
    source: FrameSource | int | str | Path,
    on_event=None,
    events: str | Path | None = None,
    overlays: str | Path | None = None,
    speak: bool = False,
    **options,
) -> StreamRunner:
    """Build a runner for ``source`` with the usual sinks: iterate it, or call ``.run()``."""
    if not hasattr(source, "read"):
        source = open_source(source)
    sinks: list[Sink] = []
    if events is not None:
        sinks.append(EventLogSink(events))  # first: an event is on disk before anyone else hears of it
    if overlays is not None:
        sinks.append(OverlaySink(overlays))
    if speak:
        sinks.append(SpeechSink())
    if on_event is not None:
        sinks.append(CallbackSink(on_event))
    options.setdefault("provider", inspector.narrator)  # the bundle's model, or None for template verdicts
    return StreamRunner(inspector, source, sinks, **options)
