"""How aligned do a category's normal images look? The evidence ``--layout auto`` decides on, over many draws.

    python -m edge_anomaly.benchmarks.layout_gate ../shared/data/real --shots 2 4 --draws 10 \\
        --json benchmarks/results/layout-gate-cpu.json

For each category and shot count, ``--draws`` sets of K normal images are drawn from ``train/good`` (the
first draws are the shots ``edge-anomaly eval --seed 0, 1, ...`` takes) and ``placement.aligned_share`` is
computed on their patch features; ``placement.ALIGNED_SHARE`` is the line ``auto`` draws. A threshold is
only as good as the gap between the categories that should pass it and those that should not.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from edge_anomaly.benchmarks.report import command_line, write_report
from edge_anomaly.evaluation import is_category
from edge_anomaly.few_shot import encode_images
from edge_anomaly.images import read_image, resize_square
from edge_anomaly.placement import ALIGNED_SHARE, aligned_share


def main(argv: list[str] | None = None) -> int:
    from edge_anomaly.export.build_bundle import choose_shots
    from edge_anomaly.export.onnx_export import build_graphs

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--shots", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--draws", type=int, default=10)
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args(argv)

    graphs = build_graphs("lite0", args.image_size)
    prep = graphs.preprocessing()
    rows = []
    for category in sorted(p for p in args.root.iterdir() if is_category(p)):
        for shots in args.shots:
            shares = []
            for seed in range(args.draws):
                paths = choose_shots(category / "train" / "good", shots, seed)
                images = [resize_square(read_image(p), args.image_size) for p in paths]
                shares.append(aligned_share(encode_images(graphs, images, prep)))
            rows.append(
                {
                    "category": category.name,
                    "shots": shots,
                    "shares": [round(s, 4) for s in shares],
                    "min": round(min(shares), 4),
                    "max": round(max(shares), 4),
                    "aligned_draws": int(sum(s >= ALIGNED_SHARE for s in shares)),
                }
            )
            print(rows[-1], flush=True)
    report = {
        "command": command_line("edge_anomaly.benchmarks.layout_gate", argv),
        "aligned_share_threshold": ALIGNED_SHARE,
        "draws": args.draws,
        "runs": rows,
    }
    write_report(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
