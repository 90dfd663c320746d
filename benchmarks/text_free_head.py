"""Does AnomalyGPT's trained decoder, without text, add to the memory bank? Train it and measure.

    python -m edge_anomaly.benchmarks.text_free_head --real ../shared/data/real \\
        --json benchmarks/results/text-free-head-cpu.json

AnomalyGPT projects patch features with small linear layers and compares them
with "normal" / "abnormal" text features; the projections are trained on
simulated anomalies (NSA cut-paste with Poisson blending) with focal + dice
loss, and the map is added to the few-shot memory-bank map. We have no text
encoder, so the two prototypes per stage are learned. The head
(``edge_anomaly.export.text_free_head``) is trained here afresh, as the shipped
asset was, and measured three ways: on held-out simulated anomalies, alone on
the real categories, and added to the memory-bank map with several weights
(1 shot, the product's own fit). The weight the decoder uses was chosen from
these rows.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from edge_anomaly import metrics
from edge_anomaly.benchmarks.report import command_line, write_report
from edge_anomaly.evaluation import is_category, load_test_set
from edge_anomaly.export.build_bundle import choose_shots
from edge_anomaly.export.onnx_export import build_graphs
from edge_anomaly.export.text_free_head import (
    SOURCE_NAMES,
    normal_sources,
    simulated_anomalies,
    train_on_simulated_anomalies,
)
from edge_anomaly.few_shot import encode_images, fit_normal_shots
from edge_anomaly.images import read_image, resize_square

WEIGHTS = (0.0, 0.25, 0.5, 1.0)  # head probability added to the patch distance, times this


def map_metrics(decoder, patch_scores: torch.Tensor, labels: np.ndarray, masks: list[np.ndarray]) -> dict:
    """Image and pixel AUROC of patch scores brought to image maps the way the decoder does it."""
    with torch.no_grad():
        maps, scores = decoder.image_map(patch_scores)
    return {
        "image_auroc": metrics.image_auroc(labels, scores.numpy()),
        "pixel_auroc": metrics.pixel_auroc(masks, list(maps.numpy())),
    }


def real_rows(root: Path, head, graphs, image_size: int, shots: int, seeds: list[int]) -> list[dict]:
    """Per category and seed: the memory bank alone, the head alone, and their sums, on real images."""
    prep = graphs.preprocessing()
    rows = []
    for category in sorted(p for p in root.iterdir() if is_category(p)):
        items = load_test_set(category)
        images = [resize_square(read_image(it.path), image_size) for it in items]
        features = torch.from_numpy(encode_images(graphs, images, prep))
        masks = [_mask(it.mask_path, image_size) for it in items]
        labels = np.array([it.is_anomalous for it in items], dtype=int)
        with torch.no_grad():
            head_scores = head(features)
        for seed in seeds:
            shot_images = [read_image(p) for p in choose_shots(category / "train" / "good", shots, seed)]
            bank = torch.from_numpy(fit_normal_shots(graphs, shot_images, prep, seed=seed).memory_bank)
            with torch.no_grad():
                distances = graphs.decoder.patch_distances(features, bank)[0]
            row = {
                "category": category.name,
                "seed": seed,
                "head_alone": map_metrics(graphs.decoder, head_scores, labels, masks),
            }
            for weight in WEIGHTS:
                row[f"bank_plus_{weight:g}_head"] = map_metrics(
                    graphs.decoder, distances + weight * head_scores, labels, masks
                )
            rows.append(row)
            print(row, flush=True)
    return rows


def _mask(path: Path | None, size: int) -> np.ndarray:
    if path is None:
        return np.zeros((size, size), dtype=bool)
    return cv2.resize(cv2.imread(str(path), cv2.IMREAD_GRAYSCALE), (size, size), interpolation=cv2.INTER_NEAREST) > 127


def mean_rows(rows: list[dict]) -> dict:
    keys = [k for k in rows[0] if k not in ("category", "seed")]
    return {k: {m: float(np.mean([r[k][m] for r in rows])) for m in rows[0][k]} for k in keys}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=1600, help="simulated training images")
    parser.add_argument("--validation", type=int, default=300, help="simulated held-out images")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--real", type=Path, help="MVTec-layout root to measure on (never trained on)")
    parser.add_argument("--shots", type=int, default=1)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args(argv)

    start = time.perf_counter()
    graphs = build_graphs("lite0", args.image_size, head_weight=0.0)
    head, losses = train_on_simulated_anomalies(graphs, args.train, args.epochs)
    val_images, val_masks = simulated_anomalies(args.validation, args.image_size, 1_000_003, normal_sources(seed=0))
    with torch.no_grad():
        val_scores = head(torch.from_numpy(encode_images(graphs, list(val_images), graphs.preprocessing())))
    val_labels = val_masks.reshape(len(val_masks), -1).any(1).astype(int)
    report = {
        "command": command_line("edge_anomaly.benchmarks.text_free_head", argv),
        "train_images": args.train,
        "sources": SOURCE_NAMES,
        "epoch_loss": losses,
        "simulated_validation": map_metrics(graphs.decoder, val_scores, val_labels, list(val_masks)),
    }
    if args.real is not None:
        rows = real_rows(args.real, head, graphs, args.image_size, args.shots, args.seeds)
        report |= {"real_shots": args.shots, "real_runs": rows, "real_mean": mean_rows(rows)}
    report["seconds"] = round(time.perf_counter() - start, 1)
    write_report(args.json, report, echo=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
