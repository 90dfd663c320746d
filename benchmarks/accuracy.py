"""Few-shot accuracy over every category of an MVTec-layout root, with the plain memory bank beside it.

    python -m edge_anomaly.benchmarks.accuracy ../shared/data/real \\
        --json benchmarks/results/accuracy-real-cpu.json

Default: every category, 1/2/4 shots, seeds 0-2. Each run (category, shots,
seed) is done twice in the same process: with the options given (the
defaults unless told) and with the plain memory bank, the baseline every
figure stands beside: Lite0 stages 2+4, 3x3 mean, no per-stage normalisation,
no views, no head, free layout, the maximum of the smoothed map, the same
calibration, at the image size asked for. Written: every run of both, the mean over seeds per category and
shot count, the macro mean over categories per shot count, and the
difference to the baseline, as JSON and a markdown table beside it (same
name, ``.md``). ``--no-baseline`` skips the second run.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

from edge_anomaly.benchmarks.report import command_line, write_report
from edge_anomaly.cli.parsing import add_fit_arguments, fit_options
from edge_anomaly.evaluation import METRIC_KEYS, evaluate_category, is_category, mean_report
from edge_anomaly.fit_options import DEFAULT_STAGES
from edge_anomaly.manifest import as_json
from edge_anomaly.zero_shot import MAX_REFERENCES

PLAIN_BANK = {
    "encoder": "lite0",
    "stages": DEFAULT_STAGES,
    "neighbourhood": (3,),  # PatchCore's 3x3 mean, whatever the defaults become
    "score_neighbourhood": None,
    "bank_neighbourhood": None,
    "augmentation": "none",
    "head_weight": 0.0,
    "layout": "free",
    "feature_norm": "none",
    "encoder_precision": "fp32",
}  # at the image size asked for
TABLE = ("image_auroc", "pixel_auroc", "accuracy", "best_accuracy", "false_positive_rate", "recall")
SHORT = {"image_auroc": "img AUROC", "pixel_auroc": "px AUROC", "accuracy": "acc@auto", "best_accuracy": "best acc",
         "false_positive_rate": "FPR", "recall": "recall"}  # fmt: skip


def summarise(runs: list[dict], baseline: list[dict], shots: list[int]) -> dict:
    """Per category and shot count (mean over seeds) and the macro mean over categories, each with the
    baseline's and the difference."""

    def block(mine: list[dict], theirs: list[dict]) -> dict:
        a = mean_report(mine)
        if not theirs:
            return {"options": a}
        b = mean_report(theirs)
        return {"options": a, "plain_bank": b, "difference": {k: a[k] - b[k] for k in METRIC_KEYS}}

    categories = sorted({r["category"] for r in runs})
    per_category = {
        c: {str(s): block([r for r in runs if r["category"] == c and r["shots"] == s],
                          [r for r in baseline if r["category"] == c and r["shots"] == s]) for s in shots}
        for c in categories
    }  # fmt: skip
    macro = {}
    for s in shots:
        means = [per_category[c][str(s)] for c in categories]
        macro[str(s)] = {
            part: {k: float(np.nanmean([m[part][k] for m in means])) for k in METRIC_KEYS} for part in means[0]
        }
    return {"per_category": per_category, "macro_mean": macro}


def markdown_table(summary: dict, shots: list[int]) -> str:
    """One row per category and shot count: the options' figure, the plain bank's, and the difference."""
    has_baseline = "plain_bank" in summary["macro_mean"][str(shots[0])]
    cells = [f"{SHORT[k]}" + (" (plain, diff)" if has_baseline else "") for k in TABLE]
    lines = ["| category | shots | " + " | ".join(cells) + " |", "|" + "---|" * (len(TABLE) + 2)]

    def row(name: str, s: int, block: dict, bold: bool) -> str:
        out = []
        for k in TABLE:
            text = f"{block['options'][k]:.3f}"
            if has_baseline:
                text += f" ({block['plain_bank'][k]:.3f}, {block['difference'][k]:+.3f})"
            out.append(f"**{text}**" if bold else text)
        return f"| {name} | {s} | " + " | ".join(out) + " |"

    for s in shots:
        for c, by_shots in summary["per_category"].items():
            lines.append(row(c, s, by_shots[str(s)], False))
        lines.append(row("**macro mean**", s, summary["macro_mean"][str(s)], True))
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--shots", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    add_fit_arguments(parser, seed=False)  # the same flags and defaults as export and eval
    parser.add_argument("--backend", default="auto", help="the backend both rows run on (as for eval)")
    parser.add_argument("--no-baseline", action="store_true", help="skip the plain memory bank runs")
    parser.add_argument(
        "--zero-shot-references", type=int, default=MAX_REFERENCES, help="with --shots 0: others each image is "
        "scored against (0: all of them, quadratic)"
    )  # fmt: skip
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--plots", action="store_true", help="also write ROC curves and an overlay grid (PNG)")
    args = parser.parse_args(argv)

    categories = sorted(p for p in args.root.iterdir() if is_category(p))
    if not categories:
        parser.error(f"{args.root} holds no MVTec-layout category")
    chosen = fit_options(args, seed=0)
    overlay_dir = Path(tempfile.mkdtemp(prefix="edge-anomaly-overlays-"))
    runs, baseline = [], []
    for shots in args.shots:
        for seed in args.seeds:
            for category in categories:
                overlays = overlay_dir if (args.plots and shots == args.shots[0] and seed == args.seeds[0]) else None
                options = replace(chosen, seed=seed)
                zero = {"zero_shot_references": args.zero_shot_references or None}
                runs.append(
                    evaluate_category(category, shots, options, args.backend, progress=False, overlays=overlays, **zero)
                )
                line = {k: runs[-1][k] for k in ("category", "shots", "seed", *TABLE)}
                if not args.no_baseline:
                    plain = replace(options, **PLAIN_BANK)
                    baseline.append(evaluate_category(category, shots, plain, args.backend, progress=False, **zero))
                    line["plain"] = {k: round(baseline[-1][k], 4) for k in TABLE}
                print(json.dumps(line), flush=True)
    summary = summarise(runs, baseline, args.shots)
    report = {
        "command": command_line("edge_anomaly.benchmarks.accuracy", argv),
        "root": str(args.root),
        "options": {k: v for k, v in as_json(chosen).items() if k != "seed"},
        "plain_bank_options": None if args.no_baseline else PLAIN_BANK,
        "seeds": args.seeds,
        **summary,
        "runs": runs,
        "plain_bank_runs": baseline,
    }
    write_report(args.json, report)
    args.json.with_suffix(".md").write_text(markdown_table(summary, args.shots))
    if args.plots:
        from edge_anomaly.benchmarks.plots import overlay_grid, roc_figure

        roc_figure(runs, args.json.with_name(args.json.stem + "-roc.png"))
        overlay_grid(overlay_dir, args.json.with_name(args.json.stem + "-overlays.png"))
    shutil.rmtree(overlay_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
