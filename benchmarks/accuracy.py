"""Few-shot accuracy over every category of an MVTec-layout root, for several shots and seeds.

    python -m edge_anomaly.benchmarks.accuracy ../shared/data/real --shots 1 4 --seeds 0 \\
        --json benchmarks/results/accuracy-real-cpu.json

Writes the per-run reports, the mean over categories for each shot count,
and a markdown table beside the JSON (same name, ``.md``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

from edge_anomaly.benchmarks.report import command_line, write_report
from edge_anomaly.evaluation import evaluate_category, is_category, mean_report
from edge_anomaly.placement import DEFAULT_LAYOUT, LAYOUTS
from edge_anomaly.shot_views import AUGMENTATIONS, DEFAULT_AUGMENTATION

COLUMNS = ("image_auroc", "pixel_auroc", "pro", "accuracy", "f1", "best_accuracy")


def markdown_table(runs: list[dict], means: dict[str, dict]) -> str:
    head = "| category | shots | seed | " + " | ".join(COLUMNS) + " |"
    lines = [head, "|" + "---|" * (len(COLUMNS) + 3)]
    for r in runs:
        lines.append(
            f"| {r['category']} | {r['shots']} | {r['seed']} | " + " | ".join(f"{r[c]:.3f}" for c in COLUMNS) + " |"
        )
    for shots, m in means.items():
        lines.append(f"| **mean** | {shots} | all | " + " | ".join(f"**{m[c]:.3f}**" for c in COLUMNS) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--shots", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--encoder", default="lite0")
    parser.add_argument("--augment", choices=AUGMENTATIONS, default=DEFAULT_AUGMENTATION)
    parser.add_argument("--layout", choices=LAYOUTS, default=DEFAULT_LAYOUT)
    parser.add_argument("--head-weight", type=float, default=None, help="text-free head's share (0: off)")
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--plots", action="store_true", help="also write ROC curves and an overlay grid (PNG)")
    args = parser.parse_args(argv)

    categories = sorted(p for p in args.root.iterdir() if is_category(p))
    if not categories:
        parser.error(f"{args.root} holds no MVTec-layout category")
    overlay_dir = Path(tempfile.mkdtemp(prefix="edge-anomaly-overlays-"))
    runs = []
    for shots in args.shots:
        for seed in args.seeds:
            for category in categories:
                overlays = overlay_dir if (args.plots and shots == args.shots[0] and seed == args.seeds[0]) else None
                runs.append(
                    evaluate_category(
                        category,
                        shots,
                        seed,
                        args.image_size,
                        args.encoder,
                        progress=False,
                        overlays=overlays,
                        augmentation=args.augment,
                        layout=args.layout,
                        head_weight=args.head_weight,
                    )
                )
                print(json.dumps({k: runs[-1][k] for k in ("category", "shots", "seed", *COLUMNS)}), flush=True)
    means = {str(s): mean_report([r for r in runs if r["shots"] == s]) for s in args.shots}
    report = {
        "command": command_line("edge_anomaly.benchmarks.accuracy", argv),
        "root": str(args.root),
        "runs": runs,
        "mean_by_shots": means,
        "seeds": args.seeds,
    }
    write_report(args.json, report)
    args.json.with_suffix(".md").write_text(markdown_table(runs, means))
    if args.plots:
        from edge_anomaly.benchmarks.plots import overlay_grid, roc_figure

        roc_figure(runs, args.json.with_name(args.json.stem + "-roc.png"))
        overlay_grid(overlay_dir, args.json.with_name(args.json.stem + "-overlays.png"))
    shutil.rmtree(overlay_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
