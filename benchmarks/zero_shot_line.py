"""Zero-shot on a simulated line: a category's normal images with a few of its defects, in random order,
inspected one by one by ``ZeroShotInspector`` with no normal shot given.

    python -m edge_anomaly.benchmarks.zero_shot_line ../shared/data/real --defect-rate 0.1 --seeds 0 1 2 \\
        --json benchmarks/results/zero-shot-line-cpu.json

The stream holds every normal image of the category (``train/good`` and ``test/good``) and as many of its
anomalous test images as make ``--defect-rate`` of the stream. Reported per run: the frame at which the
inspector took its shots, how many of those were defective, and the decisions before and after that
(false-positive rate on normal frames, recall on defects).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

from edge_anomaly.benchmarks.report import command_line, write_report
from edge_anomaly.evaluation import is_category, load_test_set
from edge_anomaly.images import list_images
from edge_anomaly.inspector import Inspector
from edge_anomaly.zero_shot import MIN_BOOTSTRAP_FRAMES, ZeroShotInspector


def line_of(category: Path, defect_rate: float, seed: int) -> list[tuple[Path, bool]]:
    """(image, is_defective) in the order the line shows them."""
    normals = list_images(category / "train" / "good") + list_images(category / "test" / "good")
    defects = [it.path for it in load_test_set(category) if it.is_anomalous]
    rng = np.random.default_rng(seed)
    count = min(len(defects), round(defect_rate * len(normals) / (1 - defect_rate)))
    chosen = [defects[i] for i in rng.choice(len(defects), count, replace=False)]
    frames = [(p, False) for p in normals] + [(p, True) for p in chosen]
    return [frames[i] for i in rng.permutation(len(frames))]


def rates(decisions: list[bool], labels: list[bool]) -> dict[str, float | int | None]:
    d, y = np.asarray(decisions, bool), np.asarray(labels, bool)
    return {
        "frames": int(len(y)),
        "defects": int(y.sum()),
        "false_positive_rate": float(d[~y].mean()) if (~y).any() else None,
        "recall": float(d[y].mean()) if y.any() else None,
    }


def run_line(bundle, category: Path, defect_rate: float, seed: int, window: int, bootstrap_after: int) -> dict:
    frames = line_of(category, defect_rate, seed)
    inspector = Inspector(bundle, "onnxruntime-cpu", llm="none")
    zero = ZeroShotInspector(inspector, window=window, bootstrap_after=bootstrap_after)
    decisions, labels, at = [], [], None
    for i, (path, defective) in enumerate(frames):
        decisions.append(zero.inspect(path).is_anomalous)
        labels.append(defective)
        if at is None and zero.bootstrapped:
            at = i + 1  # frames up to and including this one were inspected before the shots were taken
    at = len(frames) if at is None else at
    return {
        "category": category.name,
        "seed": seed,
        "bootstrapped_after_frame": at if zero.bootstrapped else None,
        "shots_defective": sum(frames[i][1] for i in zero.shot_frames),
        "shot_images": [str(frames[i][0].relative_to(category)) for i in zero.shot_frames],
        "before": rates(decisions[:at], labels[:at]),
        "after": rates(decisions[at:], labels[at:]),
    }


def _mean(values: list[float | None]) -> float | None:
    """Mean over the runs that had such frames (None when none had)."""
    present = [v for v in values if v is not None]
    return float(np.mean(present)) if present else None


def main(argv: list[str] | None = None) -> int:
    from edge_anomaly.export.build_bundle import build_bundle

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--defect-rate", type=float, default=0.1)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--window", type=int, default=32)
    parser.add_argument("--bootstrap-after", type=int, default=MIN_BOOTSTRAP_FRAMES, help="unflagged frames")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args(argv)
    if not 0 <= args.defect_rate < 0.5:
        parser.error("--defect-rate must lie in [0, 0.5): the inspector assumes most frames are normal")
    categories = sorted(p for p in args.root.iterdir() if is_category(p))
    if not categories:
        parser.error(f"{args.root} holds no MVTec-layout category")
    runs = []
    with tempfile.TemporaryDirectory(prefix="edge-anomaly-line-") as work:
        for category in categories:
            # The bundle gives the graphs only: its one shot is replaced by the frames the stream picks.
            bundle = build_bundle(
                category / "train" / "good", Path(work) / category.name, 1, args.image_size, category.name
            )
            for seed in args.seeds:
                runs.append(run_line(bundle, category, args.defect_rate, seed, args.window, args.bootstrap_after))
                print({k: runs[-1][k] for k in ("category", "seed", "bootstrapped_after_frame", "after")}, flush=True)
    after = [r["after"] for r in runs if r["bootstrapped_after_frame"] is not None]
    report = {
        "command": command_line("edge_anomaly.benchmarks.zero_shot_line", argv),
        "bootstrap_after_unflagged_frames": args.bootstrap_after,
        "runs": runs,
        "shots_defective_total": sum(r["shots_defective"] for r in runs),
        "after_mean": {k: _mean([a[k] for a in after]) for k in ("false_positive_rate", "recall")},
    }
    write_report(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
