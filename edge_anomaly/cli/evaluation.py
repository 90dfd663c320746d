"""``edge-anomaly eval``: few-shot accuracy on MVTec-layout categories, as a new user would measure it."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .output import metric_row
from .parsing import add_fit_arguments, at_least, fit_options


def add_commands(sub) -> None:
    p = sub.add_parser("eval", help="few-shot accuracy on an MVTec-layout category (or a root of categories)")
    p.add_argument("path", type=Path, help="a category folder (train/good, test/*, ground_truth/*) or a root of them")
    p.add_argument("--shots", type=at_least(0), default=1, help="normal shots (0: zero-shot)")
    add_fit_arguments(p)
    p.add_argument("--backend", default="auto")
    p.add_argument("--json", type=Path, metavar="OUT", help="write the report here")
    p.set_defaults(run=evaluate)


def evaluate(args: argparse.Namespace) -> int:
    from edge_anomaly.evaluation import evaluate_category, is_category, mean_report

    options = fit_options(args)
    categories = [args.path] if is_category(args.path) else sorted(p for p in args.path.iterdir() if is_category(p))
    if not categories:
        raise FileNotFoundError(f"{args.path} is neither an MVTec-layout category nor a folder of them")
    reports = [evaluate_category(c, args.shots, options, args.backend) for c in categories]
    print(f"{'category':16s} {'img AUROC':>9s} {'px AUROC':>9s} {'PRO':>6s} {'acc':>6s} {'F1':>6s}  threshold  layout")
    for r in reports:
        print(f"{metric_row(r['category'], r)}  {r['threshold']:9.3f}  {r['layout']}")
    report: dict = reports[0] if len(reports) == 1 else {"categories": reports, "mean": mean_report(reports)}
    if len(reports) > 1:
        print(metric_row("mean", report["mean"]))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0
