"""Verdicts off the frame loop: a worker thread, a bounded queue, a timeout, a fallback.

The frame loop only ever calls ``submit`` (never blocks) and ``poll`` (never
blocks). The worker asks the verdict provider (a language model, say) for a
sentence; if the provider raises, exceeds ``timeout`` or is still stuck in an
earlier call, the verdict is the template sentence built from the measured
finding, so every event gets a verdict and detection never waits.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Protocol

from edge_anomaly.result import InspectionResult
from edge_anomaly.verdict_wording import verdict_sentence

from .priority import run_below_the_frame_loop

log = logging.getLogger(__name__)


class VerdictProvider(Protocol):
    name: str

    def verdict(self, result: InspectionResult) -> str: ...


class TemplateProvider:
    """The deterministic sentence from the finding's numbers."""

    name = "template"

    def verdict(self, result: InspectionResult) -> str:
        return verdict_sentence(result)


@dataclass(frozen=True)
class Verdict:
    key: Hashable
    text: str
    source: str  # provider name, or "template"
    fallback_reason: str | None = None


class VerdictWorker:
    def __init__(self, provider: VerdictProvider | None = None, timeout: float = 10.0, queue_size: int = 8) -> None:
        self.provider = provider or TemplateProvider()
        self.timeout = timeout
        self._jobs: queue.Queue = queue.Queue(maxsize=queue_size)
        self._ready: queue.Queue[Verdict] = queue.Queue()
        self._stuck: threading.Thread | None = None
        self.counts = dict.fromkeys(
            ("requested", "provider", "failed", "timed_out", "busy", "queue_full", "shutdown"), 0
        )
        self._thread = threading.Thread(target=self._run, name="verdict-worker", daemon=True)
        self._thread.start()

    def submit(self, key: Hashable, result: InspectionResult) -> None:
        """Queue a verdict request; if the queue is full, the template verdict is ready at once."""
        self.counts["requested"] += 1
        try:
            self._jobs.put_nowait((key, result))
        except queue.Full:
            self._fallback(key, result, "queue_full")

    def poll(self) -> list[Verdict]:
        """Verdicts ready now, without waiting."""
        out = []
        while True:
            try:
                out.append(self._ready.get_nowait())
            except queue.Empty:
                return out

    def drain(self, timeout: float) -> list[Verdict]:
        """At shutdown: wait up to ``timeout`` for queued requests; the rest get template verdicts."""
        self._jobs.put(None)
        self._thread.join(timeout)
        leftovers = []
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                leftovers.append(job)
        for key, result in leftovers:
            self._fallback(key, result, "shutdown")
        return self.poll()

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            key, result = job
            if self._stuck is not None and self._stuck.is_alive():
                self._fallback(key, result, "busy")  # an earlier call still hangs: don't pile up threads
                continue
            self._ask(key, result)

    def _ask(self, key: Hashable, result: InspectionResult) -> None:
        box: dict = {}

        def call() -> None:
            run_below_the_frame_loop()
            try:
                box["text"] = self.provider.verdict(result)
            except Exception as exc:  # noqa: BLE001  any provider failure must end in a template verdict
                box["error"] = exc

        caller = threading.Thread(target=call, name="verdict-call", daemon=True)
        caller.start()
        caller.join(self.timeout)
        if caller.is_alive():
            self._stuck = caller
            self._fallback(key, result, "timed_out")
        elif "error" in box:
            log.warning("verdict provider %s failed: %s", self.provider.name, box["error"])
            self._fallback(key, result, "failed")
        else:
            self.counts["provider"] += 1
            self._ready.put(Verdict(key, box["text"], self.provider.name))

    def _fallback(self, key: Hashable, result: InspectionResult, reason: str) -> None:
        self.counts[reason] += 1
        self._ready.put(Verdict(key, verdict_sentence(result), "template", reason))
