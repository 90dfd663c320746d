"""What every benchmark does at the end: name the exact command, write the JSON."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np


def command_line(module: str, argv: list[str] | None) -> str:
    """The command that reproduces this run."""
    return f"python -m {module} " + " ".join(argv if argv is not None else sys.argv[1:])


def percentiles(values) -> dict[str, float]:
    """p50, p95, p99 and mean of a series of timings, rounded for reading."""
    a = np.asarray(values, dtype=float)
    return {f"p{q}": round(float(np.percentile(a, q)), 3) for q in (50, 95, 99)} | {"mean": round(float(a.mean()), 3)}


def write_report(path: Path, report: dict, echo: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(report, indent=2, default=float) + "\n"
    path.write_text(text)
    if echo:
        print(text, end="")
