"""Threshold rules rescored on a ``benchmarks.accuracy`` report, without a rerun.

    python -m edge_anomaly.benchmarks.threshold_rules \\
        benchmarks/results/accuracy-real-5cat-defaults-2026-12-02-cpu.json \\
        --json benchmarks/results/threshold-rules-5cat-cpu.json

Each run of the report has its per-image scores and labels and the summary of the held-out normal scores
its threshold rests on (``threshold_evidence``: count, max, mean, std). A rule is a function of that
summary; each is applied to every run and scored as the report scores the calibrated threshold: accuracy,
its ratio to the best accuracy in hindsight, FPR and recall, averaged over seeds per category, then over
categories. Only rules of the summary can be studied this way; rules of the scores themselves need them in
the report.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from edge_anomaly.benchmarks.report import command_line, write_report

Rule = Callable[[dict], float]
RULES: dict[str, Rule] = {
    "max (the calibration's)": lambda e: e["max"],
    "0.97 x max": lambda e: 0.97 * e["max"],
    "0.95 x max": lambda e: 0.95 * e["max"],
    "0.92 x max": lambda e: 0.92 * e["max"],
    "0.90 x max": lambda e: 0.90 * e["max"],
    "1.05 x max": lambda e: 1.05 * e["max"],
    "mean + 2 std": lambda e: e["mean"] + 2 * e["std"],
    "mean + 3 std": lambda e: e["mean"] + 3 * e["std"],
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
    out: dict = {}
    for name, rule in RULES.items():
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
        print(f"{name:24s} acc@rule " + ", ".join(cells))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
