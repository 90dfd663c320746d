"""A JSONL event log that survives crashes and power cuts.

Each record is one line, written with a single ``write``, flushed and
``fsync``-ed before ``append`` returns: once it returns, the record is on disk
(that is what "acknowledged" means). A crash mid-write can leave only the last
line partial; on reopening, the log starts a fresh line after it, so earlier
records are never touched, and ``read_events`` skips the broken line. When the
file passes ``max_bytes`` it is rotated to ``.1`` ... ``.backups``.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any


class EventLog:
    def __init__(self, path: str | Path, max_bytes: int = 50 * 1024 * 1024, backups: int = 5) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.max_bytes, self.backups = max_bytes, backups
        self._lock = threading.Lock()
        self._fh = self._open()
        self.written = 0

    def append(self, record: dict[str, Any]) -> None:
        """Write one record durably; returns only after ``fsync``."""
        line = (json.dumps(record, separators=(",", ":"), default=_jsonable) + "\n").encode()
        with self._lock:
            if self._fh.tell() + len(line) > self.max_bytes and self._fh.tell() > 0:
                self._rotate()
            self._fh.write(line)
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self.written += 1

    def close(self) -> None:
        with self._lock:
            if not self._fh.closed:
                self._fh.flush()
                os.fsync(self._fh.fileno())
                self._fh.close()

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


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "to_dict"):
        return value.to_dict()
    return str(value)
