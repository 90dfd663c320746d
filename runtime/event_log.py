"""A JSONL event log that survives crashes, power cuts, full disks and restarts.

Each record is one line, written with a single ``write``, flushed and
``fsync``-ed before ``append`` returns: once it returns, the record is on disk
(that is what "acknowledged" means). A crash mid-write can leave only the last
line partial; on reopening, the log starts a fresh line after it, so earlier
records are never touched, and ``read_events`` skips the broken line. A write
that fails (a full disk) is cut back to the last whole line and raises
``EventLogError``: the log never holds a partial line it wrote itself. When the
file passes ``max_bytes`` it is rotated to ``.1`` ... ``.backups``.

One writer at a time: the log takes an exclusive lock (``events.jsonl.lock``,
released by the kernel when the process dies, however it dies), and a second
``run`` on the same log is refused. On opening, the log reads what earlier runs
left (``LogHistory``): the next event number, so numbering continues across
restarts, and the events a killed run opened and never closed.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_anomaly.errors import EdgeAnomalyError


class EventLogError(EdgeAnomalyError):
    """The event log cannot be opened or written (a folder, read-only, full, or taken by another run)."""


@dataclass(frozen=True)
class LogHistory:
    """What earlier runs left in the log: ``next_event`` continues their numbering; ``dangling`` are the
    ``event_opened`` records of events no record closed (their run was killed)."""

    next_event: int = 0
    dangling: tuple[dict[str, Any], ...] = field(default=())
    next_seq: int = 0  # records carry a log-wide sequence number: the spool position a broker is fed from


class EventLog:
    def __init__(self, path: str | Path, max_bytes: int = 50 * 1024 * 1024, backups: int = 5) -> None:
        self.path = Path(path)
        self.max_bytes, self.backups = max_bytes, backups
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self.path.is_dir():
                raise IsADirectoryError(f"{self.path} is a folder")
            self._lock_fh = self._take_lock()
            self.history = read_history(self.path)
            self._fh = self._open()
        except OSError as exc:
            raise EventLogError(f"cannot open event log {self.path}: {exc.strerror or exc}") from None

    def append(self, record: dict[str, Any]) -> None:
        """Write one record durably; returns only after ``fsync``. On failure the file is cut back to its last
        whole line and ``EventLogError`` is raised: that record is not acknowledged, every earlier one is."""
        line = (json.dumps(record, separators=(",", ":"), default=_jsonable, allow_nan=False) + "\n").encode()
        with self._lock:
            if self._fh.tell() + len(line) > self.max_bytes and self._fh.tell() > 0:
                self._rotate()
            start = self._fh.tell()
            try:
                self._fh.write(line)
                self._fh.flush()
                os.fsync(self._fh.fileno())
            except OSError as exc:
                self._cut_back(start)
                raise EventLogError(f"cannot write event log {self.path}: {exc.strerror or exc}") from None

    def close(self) -> None:
        with self._lock:
            if not self._fh.closed:
                try:
                    self._fh.flush()
                    os.fsync(self._fh.fileno())
                except OSError:
                    pass  # what could not be written was already reported by append
                finally:
                    self._fh.close()
            if not self._lock_fh.closed:
                self._lock_fh.close()  # releases the lock

    def _take_lock(self):
        lock_path = self.path.with_name(self.path.name + ".lock")
        fh = open(lock_path, "a+")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.close()
            raise EventLogError(
                f"event log {self.path} is in use by another run (lock {lock_path.name}); one writer per log"
            ) from None
        return fh

    def _open(self):
        fh = open(self.path, "ab")
        if fh.tell() > 0:
            with open(self.path, "rb") as tail:
                tail.seek(-1, os.SEEK_END)
                if tail.read(1) != b"\n":  # a crash cut the last record short: start clean after it
                    fh.write(b"\n")
                    fh.flush()
                    os.fsync(fh.fileno())
        return fh

    def _cut_back(self, size: int) -> None:
        """Drop the bytes of a failed write (a full disk may have taken part of the line)."""
        try:
            self._fh.close()
        except OSError:
            pass  # the buffered bytes are lost, as intended
        try:
            os.truncate(self.path, size)
        finally:
            self._fh = open(self.path, "ab")

    def _rotate(self) -> None:
        self._fh.close()
        for i in range(self.backups - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{i}")
            if older.exists():
                older.replace(self.path.with_name(f"{self.path.name}.{i + 1}"))
        self.path.replace(self.path.with_name(f"{self.path.name}.1"))
        self._fh = open(self.path, "ab")


def read_events(path: str | Path) -> list[dict[str, Any]]:
    """Every complete, parseable record of one log file; a partial line is skipped."""
    records = []
    with open(path, "rb") as fh:
        for raw in fh:
            if not raw.endswith(b"\n"):
                continue
            try:
                records.append(json.loads(raw))
            except json.JSONDecodeError:
                continue
    return records


def read_history(path: Path) -> LogHistory:
    """Event numbers and unclosed events of the log at ``path`` and its newest rotated file (an event that
    opened before a rotation closes after it)."""
    records: list[dict[str, Any]] = []
    for older in (path.with_name(f"{path.name}.1"), path):
        if older.is_file():
            records += [r for r in read_events(older) if isinstance(r, dict)]
    open_events: dict[int, dict[str, Any]] = {}
    highest, last_seq = -1, -1
    for record in records:
        seq = record.get("seq")
        if isinstance(seq, int) and not isinstance(seq, bool):
            last_seq = max(last_seq, seq)
        event = record.get("event")
        if not isinstance(event, int) or isinstance(event, bool):
            continue
        highest = max(highest, event)
        if record.get("type") == "event_opened":
            open_events[event] = record
        elif record.get("type") == "event_closed":
            open_events.pop(event, None)
    return LogHistory(highest + 1, tuple(open_events[k] for k in sorted(open_events)), last_seq + 1)


def read_spool(path: Path, backups: int, after_seq: int) -> list[dict[str, Any]]:
    """Records of the log at ``path`` and its rotated files, oldest first, whose ``seq`` is above
    ``after_seq``: what a broker has not acknowledged yet."""
    files = [path.with_name(f"{path.name}.{i}") for i in range(backups, 0, -1)] + [path]
    pending = []
    for file in files:
        if file.is_file():
            pending += [
                r
                for r in read_events(file)
                if isinstance(r, dict) and isinstance(r.get("seq"), int) and r["seq"] > after_seq
            ]
    return sorted(pending, key=lambda r: r["seq"])


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "to_dict"):
        return value.to_dict()
    return str(value)
