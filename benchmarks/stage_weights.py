"""Image-score rules of the memory bank alone, rescored from one fit per draw: stage weights and density.

    python -m edge_anomaly.benchmarks.stage_weights ../shared/data/real --shots 1 \\
        --json benchmarks/results/stage-weights-5cat-1shot-cpu.json

Each draw (category, seed) fits the defaults without the head (``--head-weight 0``: the head's share would
blur what the distance alone does) and scores every test image by several rules computed here from the same
test features and the same bank, the map smoothed as the decoder smooths it and its maximum taken:

- ``stage weight w``: the squared distance of Lite0's stride-8 part counted ``w`` times beside the stride-16
  part's (1: the defaults);
- ``balanced``: that weight measured on the bank, each part's median nearest-neighbour distance among the
  bank's rows made equal (what ``--feature-norm balanced`` measures on the shots, ``export.stage_balance``);
- ``density k``: each patch's distance divided by its nearest row's own mean distance to its ``k`` nearest
  rows (a local outlier factor), and ``density k + median``: divided by that plus the median of it.

It answers which image score the bank could give before any of them is built into the decoder; pixel
AUROC and the threshold need the full pipeline (``benchmarks.accuracy``). Free layouts only: a bank with
places (an aligned layout, 2+ shots) would need the decoder's reach, so such draws are skipped and named.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from edge_anomaly.benchmarks.report import command_line, write_report
from edge_anomaly.evaluation import is_category, load_test_set
from edge_anomaly.export.build_bundle import build_bundle
from edge_anomaly.export.onnx_export import SIGMA, build_graphs
from edge_anomaly.export.patch_model import upsample_and_smooth
from edge_anomaly.export.stage_balance import nearest_distances, squared_distances
from edge_anomaly.fit_options import FitOptions
from edge_anomaly.images import read_image
from edge_anomaly.inspector import Inspector
from edge_anomaly.metrics import image_auroc
from edge_anomaly.placement import PLACE_COLUMNS

WEIGHTS = (0.25, 0.5, 0.75, 1.0, 1.5, 2.0)
DENSITY_K = (1, 3)
BATCH = 16


def draw_scores(features: np.ndarray, bank: np.ndarray, split: int, side: int, pixels: int) -> dict[str, list]:
    """Rule -> image scores of ``features [B x N x D]`` against ``bank [M x D]``; columns before ``split`` are
    the stride-8 part."""
    smooth = upsample_and_smooth(side, pixels, SIGMA).numpy()
    fine, coarse = slice(0, split), slice(split, None)
    spread = [np.median(nearest_distances(bank[:, part])) for part in (fine, coarse)]
    balanced = (spread[1] / spread[0]) ** 2
    self_d2 = np.sort(squared_distances(bank, bank) + np.diag(np.full(len(bank), np.inf)), 1)
    radius = {k: np.sqrt(self_d2[:, :k]).mean(1) for k in DENSITY_K}
    scores: dict[str, list] = {}
    for f in features:
        d_fine = squared_distances(f[:, fine], bank[:, fine])
        d_coarse = squared_distances(f[:, coarse], bank[:, coarse])
        maps = {f"stage weight {w:g}": np.sqrt((w * d_fine + d_coarse).min(1)) for w in WEIGHTS}
        maps["balanced"] = np.sqrt((balanced * d_fine + d_coarse).min(1))
        total = d_fine + d_coarse
        nearest = total.argmin(1)
        distance = np.sqrt(total[np.arange(len(f)), nearest])
        for k, r in radius.items():
            maps[f"density {k}"] = distance / r[nearest]
            maps[f"density {k} + median"] = distance / (r[nearest] + np.median(r))
        for rule, patch_map in maps.items():
            scores.setdefault(rule, []).append(float((smooth @ patch_map.reshape(side, side) @ smooth.T).max()))
    return scores


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--shots", type=int, default=1)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--image-size", type=int, default=FitOptions().image_size)
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args(argv)
    runs, skipped = [], []
    split = build_graphs("lite0", args.image_size).encoder.part_columns(2, 3)[1]  # stage 2, then stage 4
    for category in sorted(p for p in args.root.iterdir() if is_category(p)):
        items = load_test_set(category)
        labels = np.array([it.is_anomalous for it in items], dtype=int)
        rgbs = [read_image(it.path) for it in items]
        for seed in args.seeds:
            options = FitOptions(image_size=args.image_size, seed=seed, head_weight=0.0)
            with tempfile.TemporaryDirectory(prefix="edge-anomaly-weights-") as work:
                bundle = build_bundle(category / "train" / "good", Path(work) / "b", args.shots, category.name, options)
                with Inspector(bundle, "onnxruntime-cpu", llm="none") as inspector:
                    if inspector.layout != "free":
                        skipped.append(f"{category.name} seed {seed}: layout {inspector.layout}")
                        continue
                    batches = [inspector.encode_frames(rgbs[i : i + BATCH], "rgb") for i in range(0, len(rgbs), BATCH)]
                    features = np.concatenate([b.features for b in batches])
                    bank = inspector.memory_bank[:, :-PLACE_COLUMNS]
                    side, pixels = bundle.manifest.encoder.grid[0], bundle.manifest.input.size
            scores = draw_scores(features, bank, split, side, pixels)
            aurocs = {rule: image_auroc(labels, np.array(s)) for rule, s in scores.items()}
            runs.append({"category": category.name, "seed": seed, "image_auroc": aurocs})
            print(category.name, seed, " ".join(f"{r}={a:.3f}" for r, a in aurocs.items()), flush=True)
    categories = sorted({r["category"] for r in runs})
    rules = list(runs[0]["image_auroc"]) if runs else []
    per_category = {
        c: {rule: float(np.mean([r["image_auroc"][rule] for r in runs if r["category"] == c])) for rule in rules}
        for c in categories
    }
    macro = {rule: float(np.mean([per_category[c][rule] for c in categories])) for rule in rules}
    report = {
        "command": command_line("edge_anomaly.benchmarks.stage_weights", argv),
        "shots": args.shots,
        "seeds": args.seeds,
        "skipped": skipped,
        "macro_mean": macro,
        "per_category": per_category,
        "runs": runs,
    }
    write_report(args.json, report)
    for rule in rules:
        print(f"{rule}: {macro[rule]:.4f}  " + " ".join(f"{c}={per_category[c][rule]:.3f}" for c in categories))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
