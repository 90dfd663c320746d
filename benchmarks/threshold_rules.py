"""Threshold rules rescored on a ``benchmarks.accuracy`` report, without a rerun.

    python -m edge_anomaly.benchmarks.threshold_rules \\
        benchmarks/results/accuracy-real-5cat-defaults-2026-12-02-cpu.json \\
        --json benchmarks/results/threshold-rules-5cat-cpu.json

Each run of the report has its per-image scores and labels and the held-out normal scores its threshold
rests on (``threshold_evidence``: count, max, mean, std, and since 2026-12-03 the scores themselves,
``values``). A rule is a function of that evidence; each is applied to every run and scored as the report
scores the calibrated threshold: accuracy, its ratio to the best accuracy in hindsight, FPR and recall,
averaged over seeds per category, then over categories. Rules of the scores themselves (setting an odd
quarter aside, ``calibration.held_out_threshold``, at several ``z``) are studied only on reports that hold
them.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from edge_anomaly.benchmarks.report import command_line, write_report
from edge_anomaly.calibration import held_out_threshold

Rule = Callable[[dict], float]
RULES: dict[str, Rule] = {
    "max of the held-out scores": lambda e: e["max"],
    "0.97 x max": lambda e: 0.97 * e["max"],
    "0.95 x max": lambda e: 0.95 * e["max"],
    "0.92 x max": lambda e: 0.92 * e["max"],
    "0.90 x max": lambda e: 0.90 * e["max"],
    "1.05 x max": lambda e: 1.05 * e["max"],
    "mean + 2 std": lambda e: e["mean"] + 2 * e["std"],
    "mean + 3 std": lambda e: e["mean"] + 3 * e["std"],
}
SET_ASIDE_Z = (2.5, 3.0, 3.5, 4.0, 4.5, 5.0, 6.0)
VALUE_RULES: dict[str, Rule] = {
    f"odd quarters set aside, z {z:g}": (lambda e, z=z: held_out_threshold(e["values"], z)) for z in SET_ASIDE_Z
}


def rescore(run: dict, threshold: float) -> dict[str, float]:
    scores = np.array([p["score"] for p in run["per_image"]])
    anomalous = np.array([p["label"] for p in run["per_image"]]).astype(bool)
    flagged = scores > threshold
    accuracy = float((flagged == anomalous).mean())
    return {
        "accuracy": accuracy,
        "ratio_to_best": accuracy / run["best_accuracy"] if run["best_accuracy"] else float("nan"),
        "false_positive_rate": float(flagged[~anomalous].mean()) if (~anomalous).any() else float("nan"),
        "recall": float(flagged[anomalous].mean()) if anomalous.any() else float("nan"),
    }


def study(report: dict) -> dict:
    """Rule -> shot count -> {"per_category": {category: means}, "macro_mean": means}."""
    runs = [r for r in report["runs"] if r.get("threshold_evidence")]
    if not runs:
        raise SystemExit("the report's runs carry no threshold_evidence (made before it was recorded)")
    rules = dict(RULES)
    if all(r["threshold_evidence"].get("values") for r in runs):
        rules |= VALUE_RULES
    out: dict = {}
    for name, rule in rules.items():
        out[name] = {}
        for shots in sorted({r["shots"] for r in runs}):
            per: dict[str, list[dict]] = {}
            for r in (r for r in runs if r["shots"] == shots):
                per.setdefault(r["category"], []).append(rescore(r, rule(r["threshold_evidence"])))
            means = {c: {k: float(np.mean([m[k] for m in ms])) for k in ms[0]} for c, ms in per.items()}
            macro = {k: float(np.mean([m[k] for m in means.values()])) for k in next(iter(means.values()))}
            out[name][str(shots)] = {"per_category": means, "macro_mean": macro}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("report", type=Path)
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args(argv)
    results = study(json.loads(args.report.read_text()))
    write_report(args.json, {"command": command_line("edge_anomaly.benchmarks.threshold_rules", argv),
                             "report": str(args.report), "rules": results})  # fmt: skip
    for name, by_shots in results.items():
        cells = [f"{s} shots {b['macro_mean']['accuracy']:.3f}" for s, b in by_shots.items()]
        print(f"{name:34s} acc@rule " + ", ".join(cells))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
