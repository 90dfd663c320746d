"""A simulated line: a category's normal images with a few of its defects, in random order, inspected one
frame at a time, with K normal shots given or, with ``--shots 0``, none (``ZeroShotInspector``).

    python -m edge_anomaly.benchmarks.line ../shared/data/real --shots 0 --defect-rate 0.1 --seeds 0 1 2 3 4 \\
        --json benchmarks/results/line-zero-shot-cpu.json

The test sets of anomaly benchmarks are mostly defective, which rewards a lenient threshold; a line is
mostly normal, where every false alarm stops it. So the stream holds every normal image of the category
(``train/good`` and ``test/good``, less the K shots) and as many of its anomalous test images as make
``--defect-rate`` of the stream. With ``--settle N`` (K shots given), the first N frames of the line are
then presumed normal and raise the threshold (``SettlingInspector``). Reported per run: the shots,
and the decisions (false-positive rate on normal frames, recall on defects) during the warm-up (zero-shot:
before the shots were learnt; settling: the first N frames) and after it, with the final threshold; in
zero-shot mode also the frame at which the shots were learnt and how many of them were defective.
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
from edge_anomaly.settling import MIN_SETTLE_FRAMES, SettlingInspector
from edge_anomaly.zero_shot import MIN_BOOTSTRAP_FRAMES, ZeroShotInspector


def line_of(normals: list[Path], defects: list[Path], defect_rate: float, rng) -> list[tuple[Path, bool]]:
    """(image, is_defective) in the order the line shows them."""
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


def run_line(category: Path, work: Path, args: argparse.Namespace, seed: int) -> dict:
    from edge_anomaly.export.build_bundle import build_bundle
    from edge_anomaly.fit_options import FitOptions

    rng = np.random.default_rng(seed)
    train = list_images(category / "train" / "good")
    shots = [train[i] for i in rng.choice(len(train), max(args.shots, 1), replace=False)]
    shot_dir = work / f"{category.name}-{seed}-shots"
    shot_dir.mkdir()
    for i, shot in enumerate(shots):
        (shot_dir / f"{i:02d}{shot.suffix}").symlink_to(shot.resolve())
    bundle = build_bundle(
        shot_dir, work / f"{category.name}-{seed}", len(shots), category.name, FitOptions(image_size=args.image_size)
    )
    inspector = Inspector(bundle, "onnxruntime-cpu", llm="none")
    # Zero-shot: the bundle gives the graphs only, its shot is replaced by the frames the line gives.
    given = shots if args.shots else []
    normals = [p for p in train if p not in given] + list_images(category / "test" / "good")
    defects = [it.path for it in load_test_set(category) if it.is_anomalous]
    frames = line_of(normals, defects, args.defect_rate, rng)
    zero = ZeroShotInspector(inspector, args.window, bootstrap_after=args.bootstrap_after) if not args.shots else None
    detector = zero or (SettlingInspector(inspector, args.settle) if args.settle else inspector)
    decisions, labels, warmup = [], [], args.settle if zero is None else None
    for i, (path, defective) in enumerate(frames):
        decisions.append(detector.inspect(path).is_anomalous)
        labels.append(defective)
        if warmup is None and zero.bootstrapped:
            warmup = i + 1  # frames up to and including this one were inspected before the shots were taken
    split = len(frames) if warmup is None else warmup
    report = {
        "category": category.name,
        "seed": seed,
        "shots": args.shots,
        "settle": args.settle,
        "shot_images": [str(p.relative_to(category)) for p in given],
        "warmup": rates(decisions[:split], labels[:split]),
        "calibrated": rates(decisions[split:], labels[split:]),
        "layout": inspector.layout,  # where patches found their match at the end (placement)
    }
    if zero is not None:
        report |= {
            "shots_learnt_after_frame": warmup,
            "shot_images": [str(frames[i][0].relative_to(category)) for i in zero.shot_frames],
            "shots_defective": sum(frames[i][1] for i in zero.shot_frames),
        }
    return report


def _mean(values: list[float | None]) -> float | None:
    """Mean over the runs that had such frames (None when none had)."""
    present = [v for v in values if v is not None]
    return float(np.mean(present)) if present else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--shots", type=int, default=0, help="normal shots given (0: zero-shot, learnt from the line)")
    parser.add_argument("--defect-rate", type=float, default=0.1)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--settle", type=int, default=0, help="K shots: presume the first N frames normal")
    parser.add_argument("--window", type=int, default=32, help="zero-shot: frames kept as the reference")
    parser.add_argument("--bootstrap-after", type=int, default=MIN_BOOTSTRAP_FRAMES, help="zero-shot: unflagged frames")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.settle and (args.shots == 0 or args.settle < MIN_SETTLE_FRAMES):
        parser.error(f"--settle needs shots (zero-shot learns its threshold itself) and N >= {MIN_SETTLE_FRAMES}")
    if not 0 <= args.defect_rate < 0.5:
        parser.error("--defect-rate must lie in [0, 0.5): a line is mostly normal")
    categories = sorted(p for p in args.root.iterdir() if is_category(p))
    if not categories:
        parser.error(f"{args.root} holds no MVTec-layout category")
    runs = []
    with tempfile.TemporaryDirectory(prefix="edge-anomaly-line-") as work:
        for category in categories:
            for seed in args.seeds:
                runs.append(run_line(category, Path(work), args, seed))
                print({k: runs[-1][k] for k in ("category", "seed", "shots", "calibrated")}, flush=True)
    calibrated = [r["calibrated"] for r in runs]
    report = {
        "command": command_line("edge_anomaly.benchmarks.line", argv),
        "runs": runs,
        "calibrated_mean": {k: _mean([c[k] for c in calibrated]) for k in ("false_positive_rate", "recall")},
    }
    if not args.shots:
        report["bootstrap_after_unflagged_frames"] = args.bootstrap_after
        report["shots_defective_total"] = sum(r["shots_defective"] for r in runs)
    write_report(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
