"""What every benchmark does at the end: name the exact command, write the JSON."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from edge_anomaly.runtime.bench import percentiles

__all__ = ["command_line", "percentiles", "write_report"]


def command_line(module: str, argv: list[str] | None) -> str:
    """The command that reproduces this run."""
    return f"python -m {module} " + " ".join(argv if argv is not None else sys.argv[1:])


def write_report(path: Path, report: dict, echo: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(report, indent=2, default=float) + "\n"
    path.write_text(text)
    if echo:
        print(text, end="")
