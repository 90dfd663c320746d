"""The design study's table from ``benchmarks.accuracy`` reports: one row per report and shot count.

    python -m edge_anomaly.benchmarks.study benchmarks/results/accuracy-real-5cat-*-cpu.json

Each row is a report's macro mean over categories (seeds averaged per
category first) beside the plain memory bank of the same run, with the
difference, the worst category's loss against the defaults' report when
``--defaults`` names one, and the command that made the report.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

COLUMNS = ("image_auroc", "pixel_auroc", "accuracy", "false_positive_rate", "recall")


def rows(report: dict, name: str, defaults: dict | None) -> list[str]:
    out = []
    for shots, block in report["macro_mean"].items():
        mine, plain = block["options"], block.get("plain_bank")
        cells = [f"{mine[k]:.3f}" + (f" ({mine[k] - plain[k]:+.3f})" if plain else "") for k in COLUMNS]
        worst = ""
        if defaults is not None and defaults["command"] == report["command"]:
            worst = "(the defaults)"
        elif defaults is not None and shots in defaults["macro_mean"]:
            losses = []
            for category, by_shots in report["per_category"].items():
                theirs = defaults["per_category"][category][shots]["options"]
                for k in ("image_auroc", "pixel_auroc", "accuracy"):
                    losses.append((by_shots[shots]["options"][k] - theirs[k], category, k))
            loss, category, k = min(losses)
            worst = f"{loss:+.3f} {category} {k.split('_')[0]}"
        out.append(f"| {name} | {shots} | " + " | ".join(cells) + f" | {worst} | `{report['command']}` |")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reports", type=Path, nargs="+")
    parser.add_argument("--defaults", type=Path, help="the defaults' report, for each row's worst category loss")
    args = parser.parse_args(argv)
    defaults = json.loads(args.defaults.read_text()) if args.defaults else None
    head = ["img AUROC", "px AUROC", "acc@auto", "FPR", "recall"]
    cells = " | ".join(f"{h} (vs plain)" for h in head)
    print(f"| run | shots | {cells} | worst category vs defaults | command |")
    print("|" + "---|" * (len(head) + 4))
    for path in args.reports:
        for line in rows(json.loads(path.read_text()), path.stem, defaults):
            print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
