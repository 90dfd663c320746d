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

Every record carries the run's id (``run``), the stream's source and, for
event records, ``event_uid`` (run id and event number), which stays the same
wherever the record goes (log, broker). A run on an existing log continues its
event numbering and first closes, as ``interrupted``, the events a killed run
left open. The event log is the one sink whose failure ends the run (an event
that cannot be recorded must not be reported as if it were): the loop stops
and ``stream_end`` says why. Any other sink that fails is logged and skipped
for that record; the loop goes on.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from edge_anomaly.errors import BackendUnavailable, InferenceError, InputError
from edge_anomaly.protocols import InspectorLike

from .event_log import EventLogError, LogHistory
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
    failed_frames: int = 0  # the graphs gave no usable answer (a non-finite score): counted, never "normal"
    unreachable_frames: int = 0  # a remote backend (Triton) did not answer for them: not inspected
    dropped: int = 0
    events: int = 0
    verdicts: int = 0
    source_errors: int = 0
    started: float = field(default_factory=time.perf_counter)
    loop_ended: float | None = None  # set when frames stop; draining verdicts afterwards does not count
    latency_ms: deque = field(default_factory=lambda: deque(maxlen=LATENCY_WINDOW), repr=False)

    @property
    def handled(self) -> int:
        """Frames taken off the queue and dealt with, inspected or not (``max_frames`` counts these)."""
        return self.inspected + self.bad_frames + self.failed_frames + self.unreachable_frames

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
        inspector: InspectorLike,
        source: FrameSource,
        sinks: list[Sink] | None = None,
        gate: EventGate | None = None,
        provider: VerdictProvider | None = None,
        verdict_timeout: float = 10.0,
        queue_size: int = 8,
        max_frames: int | None = None,
        history: LogHistory | None = None,
        run_id: str | None = None,
        pipelined: bool | None = None,
    ) -> None:
        """``history``: what earlier runs left in the event log (``EventLog.history``): numbering continues
        from it and its unclosed events are closed as ``interrupted``. ``run_id``: a new one by default.
        ``pipelined``: encode frame t+1 on a thread of its own while frame t is decoded and gated (same
        results, in the same order); by default where the backend gains from it (``overlaps``, True unless
        the backend says otherwise); wrappers that inspect as a whole (settling, zero-shot) run serially."""
        if max_frames is not None and max_frames < 1:
            raise InputError(f"max_frames must be at least 1, got {max_frames}")
        self.inspector = inspector
        self.source = source
        self.sinks = list(sinks or [])
        self.gate = gate or EventGate()
        self.history = history or LogHistory()
        self.gate.continue_numbering(self.history.next_event)
        self.run_id = run_id or uuid.uuid4().hex[:12]
        self._next_seq = self.history.next_seq
        self.failure: str | None = None  # why the run had to end early (the event log failed), else None
        self.worker = VerdictWorker(provider, verdict_timeout)
        self.max_frames = max_frames
        self.stats = StreamStats()
        self._frames: queue.Queue[Frame | None] = queue.Queue(maxsize=queue_size)
        self._last_frame = -1
        self._stop = threading.Event()
        self._capture = threading.Thread(target=self._capture_loop, name="capture", daemon=True)
        if pipelined is None:
            pipelined = pipelines_by_default(inspector)
        self.pipelined = pipelined and hasattr(inspector, "encode_frames") and hasattr(inspector, "decide")
        self._encoded: queue.Queue = queue.Queue(maxsize=2)  # (frame, features or None, error or None), or None
        self._encoder = threading.Thread(target=self._encode_loop, name="encode", daemon=True)

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
        if self.pipelined:
            self._encoder.start()
        try:
            for sink in self.sinks:
                if hasattr(sink, "start"):
                    sink.start(self)  # sinks that report on the run (heartbeats, the live page) see its stats
            yield from self._close_interrupted()
            yield from self._loop()
            self.stats.loop_ended = time.perf_counter()
            yield from self._finish("stopped" if self._stop.is_set() else "end_of_stream")
        finally:
            self._stop.set()
            self.source.close()
            for sink in self.sinks:
                sink.close()

    def _loop(self) -> Iterator[StreamEvent]:
        ready = self._encoded if self.pipelined else self._frames
        while not self._stop.is_set():
            yield from self._verdicts(self.worker.poll())
            try:
                item = ready.get(timeout=0.05)
            except queue.Empty:
                continue
            if item is None:
                return
            yield from self._process(*(item if self.pipelined else (item, None, None)))
            if self.max_frames is not None and self.stats.handled >= self.max_frames:
                return

    def _process(self, frame: Frame, encoded=None, error: Exception | None = None) -> Iterator[StreamEvent]:
        """One frame: decide it (its features already encoded when ``pipelined``), then the gate. ``error``:
        what encoding it raised on the encoder's thread."""
        self._last_frame = frame.id
        if isinstance(error, BackendUnavailable):
            self._unreachable(frame, error)
            return
        if error is not None and not isinstance(error, InputError):
            raise error
        if frame.image is None or error is not None:
            self._skip(frame, str(error) if error is not None else frame.error)
            return
        start = time.perf_counter()
        try:
            if encoded is not None:
                result = self.inspector.decide(encoded)[0]
                start -= (encoded.latency_ms["preprocess"] + encoded.latency_ms["encoder"]) / 1000.0
            else:
                result = self.inspector.inspect(frame.image)
        except InputError as exc:
            self._skip(frame, str(exc))
            return
        except InferenceError as exc:
            self._no_decision(frame, "failed_frames", exc, "not inspected")
            return
        except BackendUnavailable as exc:
            self._unreachable(frame, exc)
            return
        self.stats.latency_ms.append((time.perf_counter() - start) * 1000)
        self.stats.inspected += 1
        self._show(frame, result)
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
                "frame_source": frame.source,
            }
            yield from self._emit(StreamEvent("event_opened", record, result, frame.image))
        if step.closed is not None:
            yield from self._close(step.closed, frame.id, "normal")

    def _show(self, frame: Frame, result) -> None:
        """Hand the latest frame to sinks that show it live (``frame``); they keep a reference, nothing more."""
        for sink in self.sinks:
            if hasattr(sink, "frame"):
                try:
                    sink.frame(frame, result)
                except Exception as exc:  # noqa: BLE001  a viewer must never stop the line
                    log.error("sink %s failed on a frame: %s", type(sink).__name__, exc)

    def _unreachable(self, frame: Frame, exc: BackendUnavailable) -> None:
        """Count a frame the remote backend did not answer for; the backend itself backs off between tries,
        so the camera and the event log go on while it is away."""
        self._no_decision(frame, "unreachable_frames", exc, "not inspected")

    def _skip(self, frame: Frame, why: str | None) -> None:
        """Count a bad frame (unreadable, or refused by the inspector)."""
        self._no_decision(frame, "bad_frames", why, "skipped", logging.WARNING)

    def _no_decision(self, frame: Frame, counter: str, why, what: str, level: int = logging.ERROR) -> None:
        """Add a frame that got no decision to ``stats.<counter>``; log the first few of each kind and then
        every 1000th, so months of them never flood the log."""
        count = getattr(self.stats, counter) + 1
        setattr(self.stats, counter, count)
        if count <= 10 or count % 1000 == 0:
            log.log(level, "frame %d %s (%d %s so far): %s", frame.id, what, count, counter.replace("_", " "), why)

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

    def _close_interrupted(self) -> Iterator[StreamEvent]:
        """Close the events a killed run left open in the log, each under its own run's ``event_uid``."""
        for opened in self.history.dangling:
            record = {
                "type": "event_closed",
                "event": opened["event"],
                "opened_frame": opened.get("frame"),
                "reason": "interrupted",
                "closed_by_run": self.run_id,
            }
            yield from self._emit(StreamEvent("event_closed", record), opened.get("run"), opened.get("source"))

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
        if self.failure is not None:
            reason = "event_log_failed"
        record = {"type": "stream_end", "reason": reason, **self.stats.to_dict(), "verdict_counts": self.worker.counts}
        yield from self._emit(StreamEvent("stream_end", record))

    def _emit(self, event: StreamEvent, run: str | None = None, source: str | None = None) -> Iterator[StreamEvent]:
        """Stamp the record with run, source and event uid, hand it to every sink (the event log first), then
        yield it: a yielded record is on disk. A record the event log refused is not yielded."""
        if self.failure is not None and event.kind != "stream_end":
            return
        run = run or self.run_id
        event.record.update(run=run, source=source or self.source.name, seq=self._next_seq)
        self._next_seq += 1
        if "event" in event.record:
            event.record["event_uid"] = f"{run}-{event.record['event']}"
        for sink in self.sinks:
            if self.failure is not None and isinstance(sink, EventLogSink):
                continue
            try:
                sink.handle(event)
            except EventLogError as exc:
                self.failure = str(exc)
                self._stop.set()
                log.error("%s; the run ends here, every earlier record is on disk", exc)
                if event.kind != "stream_end":
                    return
            except Exception as exc:  # noqa: BLE001  a broken sink must not end the line's inspection
                log.error("sink %s failed on a %s record: %s", type(sink).__name__, event.kind, exc)
        if self.failure is not None and event.kind == "stream_end":
            event.record["error"] = self.failure
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

    def _encode_loop(self) -> None:
        """Pipelined: encode frames in capture order; the loop decodes them in the same order."""
        while not self._stop.is_set():
            try:
                frame = self._frames.get(timeout=0.05)
            except queue.Empty:
                continue
            if frame is None:
                self._enqueue(None, live=False, target=self._encoded)
                return
            item = (frame, None, None)
            if frame.image is not None:
                try:
                    item = (frame, self.inspector.encode_frames([frame.image]), None)
                except Exception as exc:  # noqa: BLE001  raised again on the loop's thread, as when serial
                    item = (frame, None, exc)
            self._enqueue(item, live=False, target=self._encoded)

    def _enqueue(self, item, live: bool, target: queue.Queue | None = None) -> None:
        """Put ``item`` on ``target`` (the captured frames by default), waiting for room unless the run stops;
        a ``live`` frame drops the oldest queued one instead of waiting."""
        target = self._frames if target is None else target
        while not self._stop.is_set():
            try:
                target.put(item, timeout=0.1)
                return
            except queue.Full:
                if live and item is not None:
                    try:
                        target.get_nowait()
                        self.stats.dropped += 1
                    except queue.Empty:
                        pass


def pipelines_by_default(inspector: InspectorLike) -> bool:
    """Whether a stream encodes frame t+1 beside frame t's decode unless told: yes, unless the inspector's
    backend says its graphs already fill the cores (``overlaps = False``)."""
    return getattr(getattr(inspector, "backend", None), "overlaps", True)


def stream(
    inspector: InspectorLike,
    source: FrameSource | int | str | Path,
    on_event=None,
    events: str | Path | None = None,
    overlays: str | Path | None = None,
    speak: bool = False,
    sinks: list[Sink] | None = None,
    **options,
) -> StreamRunner:
    """Build a runner for ``source`` with the usual sinks, then ``sinks`` (yours: anything with ``handle``
    and ``close``): iterate it, or call ``.run()``."""
    if not hasattr(source, "read"):
        source = open_source(source)
    chosen: list[Sink] = []
    try:
        if events is not None:
            log_sink = EventLogSink(events)  # first: an event is on disk before anyone else hears of it
            chosen.append(log_sink)
            options.setdefault("history", log_sink.log.history)
        if overlays is not None:
            chosen.append(OverlaySink(overlays))
        if speak:
            chosen.append(SpeechSink())
        chosen += list(sinks or [])
        if on_event is not None:
            chosen.append(CallbackSink(on_event))
        options.setdefault("provider", inspector.narrator)  # the bundle's model, or None for template verdicts
        return StreamRunner(inspector, source, chosen, **options)
    except BaseException:
        for sink in chosen:
            sink.close()
        source.close()
        raise
