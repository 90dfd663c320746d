"""``edge-anomaly eval``: few-shot accuracy on a folder in MVTec layout.

Layout: ``train/good/*``, ``test/<type>/*`` (``good`` = normal), and
``ground_truth/<type>/<stem>_mask.png`` for anomalous images. K shots are drawn
from ``train/good`` with the seed, a bundle is built from them (auto threshold,
nothing else), and every test image is inspected. Maps are compared with masks
at a side of at most 256 pixels, which keeps pixel metrics cheap on large images.

``shots=0`` is the zero-shot mode: no normal image is used at all. The test
images are scored against each other and the most typical of them become the
shots (``edge_anomaly.zero_shot``); their labels are never looked at.
"""

from __future__ import annotations

import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from . import metrics
from .errors import InputError
from .fit_options import DEFAULT_FIT, FitOptions
from .foreground import foreground_mask
from .images import IMAGE_SUFFIXES, list_images, read_image
from .inspector import Inspector
from .manifest import as_json
from .overlay import save_overlay
from .zero_shot import MAX_REFERENCES, mutual_results

METRIC_SIDE = 256
OVERLAYS_PER_CLASS = 3
BATCH = 8
SHOT_MEASURED_NORMS = ("shots", "balanced")  # feature norms whose encoder constants come from the shots


@dataclass(frozen=True)
class LabelledImage:
    path: Path
    defect_type: str
    mask_path: Path | None

    @property
    def is_anomalous(self) -> bool:
        return self.defect_type != "good"


def load_test_set(category: Path) -> list[LabelledImage]:
    """Every test image with its label and mask; an anomalous image without a mask is an error."""
    test_dir = category / "test"
    if not test_dir.is_dir():
        raise InputError(f"{category} has no test/ folder (MVTec layout expected)")
    items = []
    for type_dir in sorted(p for p in test_dir.iterdir() if p.is_dir()):
        for image in sorted(p for p in type_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
            mask = None
            if type_dir.name != "good":
                mask = category / "ground_truth" / type_dir.name / f"{image.stem}_mask.png"
                if not mask.is_file():
                    raise InputError(f"{image}: no ground-truth mask at {mask}")
            items.append(LabelledImage(image, type_dir.name, mask))
    if not items:
        raise InputError(f"{test_dir} holds no test images")
    return items


def evaluate_category(
    category: Path,
    shots: int,
    options: FitOptions = DEFAULT_FIT,
    backend: str = "auto",
    progress: bool = True,
    overlays: Path | None = None,
    zero_shot_references: int | None = MAX_REFERENCES,
) -> dict:
    """Build a K-shot bundle for ``category`` with ``options`` (its seed draws the shots) and score its test
    set; returns the metrics report.

    ``overlays``: write heatmap overlays of the first 3 normal and 3 anomalous test images there."""
    from edge_anomaly.export.build_bundle import build_bundle

    if shots < 0:
        raise InputError(f"shots must be 0 (zero-shot) or more, got {shots}")
    if shots == 0 and options.feature_norm in SHOT_MEASURED_NORMS:
        # the graphs would hold constants measured on a normal training image, which zero-shot must not see
        raise InputError(f"--feature-norm {options.feature_norm} is measured on normal shots; zero-shot has none")
    category = Path(category)
    list_images(category / "train" / "good")
    items = load_test_set(category)
    kinds = {item.is_anomalous for item in items}
    if kinds != {True, False}:
        missing = "anomalous" if True not in kinds else "good (normal)"
        raise InputError(f"{category / 'test'} holds no {missing} test images: AUROC and accuracy need both kinds")
    with tempfile.TemporaryDirectory(prefix="edge-anomaly-eval-") as work:
        start = time.perf_counter()
        bundle = build_bundle(
            category / "train" / "good",
            Path(work) / "bundle",
            max(shots, 1),  # zero-shot uses only the bundle's graphs
            category.name,
            options,
        )
        build_s = time.perf_counter() - start
        inspector = Inspector(bundle, backend)
        method, picked = bundle.manifest.threshold.method, []
        if shots == 0:
            rgbs = [read_image(it.path) for it in items]
            # the seed draws the references, as it draws the shots of a few-shot run
            batch = mutual_results(inspector, rgbs, "rgb", references=zero_shot_references, seed=options.seed)
            method, batches = batch.method, [(items, rgbs, batch.results)]
            picked = [str(items[i].path.relative_to(category)) for i in batch.shot_indices]
        else:
            batches = _inspected(inspector, items)
        scored = _Scored()
        shown = {False: 0, True: 0}
        desc = f"eval {category.name} {shots}-shot"
        with tqdm(total=len(items), desc=desc, disable=not progress, leave=False) as bar:
            for chunk, rgbs, results in batches:
                for item, rgb, result in zip(chunk, rgbs, results):
                    scored.add(item, rgb, result)
                    if overlays is not None and shown[item.is_anomalous] < OVERLAYS_PER_CLASS:
                        shown[item.is_anomalous] += 1
                        name = f"{category.name}_{item.defect_type}_{item.path.stem}"
                        save_overlay(rgb, result, overlays, name, color_order="rgb")
                bar.update(len(chunk))
    if scored.resized_masks:
        print(
            f"eval {category.name}: warning: {scored.resized_masks} ground-truth masks are not the size of their "
            "images; they were resized to them (nearest neighbour) before scoring",
            file=sys.stderr,
        )
    return {
        "category": category.name,
        "shots": shots,
        "seed": options.seed,
        "image_size": options.image_size,
        "encoder": options.encoder,
        "augmentation": options.augmentation,
        "layout": inspector.layout,  # as applied to the shots, picked or (zero-shot) learnt
        "aligned_share": inspector.aligned_share,
        "text_free_head": as_json(bundle.manifest.decoder.text_free_head),
        "backend": inspector.backend_name,
        "threshold": float(np.median(scored.thresholds)),
        "threshold_method": method,
        # what the threshold rests on (count, max, mean, std of the held-out normal scores): other rules can be
        # studied from a report without a rerun
        "threshold_evidence": as_json(bundle.manifest.threshold.normal_scores),
        "zero_shot_picked": picked,  # the test images that became shots (zero-shot), for anyone to check
        "zero_shot_references": zero_shot_references if shots == 0 else None,
        "feature_norm": options.feature_norm,
        "encoder_precision": bundle.manifest.encoder.precision,  # as kept: export refuses an int8 that disagrees
        **scored.metrics(),
        "build_seconds": round(build_s, 2),
        "per_image": [
            {"image": str(it.path.relative_to(category)), "label": lab, "score": round(sc, 6)}
            for it, lab, sc in zip(items, scored.labels, scored.scores)
        ],
    }


@dataclass
class _Scored:
    """What the test set gave, image by image, in the order inspected."""

    labels: list[int] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    decisions: list[int] = field(default_factory=list)
    thresholds: list[float] = field(default_factory=list)
    masks: list[np.ndarray] = field(default_factory=list)
    maps: list[np.ndarray] = field(default_factory=list)
    rule_scores: list[dict[str, float]] = field(default_factory=list)
    resized_masks: int = 0

    def add(self, item: LabelledImage, rgb: np.ndarray, result) -> None:
        self.labels.append(int(item.is_anomalous))
        self.scores.append(result.score)
        self.decisions.append(int(result.is_anomalous))
        self.thresholds.append(result.threshold)
        mask, score_map, resized = _metric_pair(item, result.anomaly_map)
        self.masks.append(mask)
        self.maps.append(score_map)
        self.resized_masks += resized
        self.rule_scores.append(score_rules(result.anomaly_map, result.map_level, foreground_mask(rgb)))

    def metrics(self) -> dict:
        labels, scores = np.asarray(self.labels), np.asarray(self.scores)
        return {
            "image_auroc": metrics.image_auroc(labels, scores),
            "image_auroc_by_rule": {  # the study of image scores (docs/accuracy.md), from the same maps
                rule: metrics.image_auroc(labels, np.array([r[rule] for r in self.rule_scores]))
                for rule in SCORE_RULES
            },
            "pixel_auroc": metrics.pixel_auroc(self.masks, self.maps),
            "pro": metrics.au_pro(self.masks, self.maps),
            **metrics.decision_metrics(labels, np.asarray(self.decisions)),
            "best_accuracy": metrics.best_accuracy(labels, scores),
            "count_normal": int((labels == 0).sum()),
            "count_anomalous": int((labels == 1).sum()),
        }


METRIC_KEYS = (
    "image_auroc", "pixel_auroc", "pro", "accuracy", "f1", "best_accuracy", "false_positive_rate", "recall"
)  # fmt: skip
SCORE_RULES = ("max", "top1pct_mean", "top5pct_mean", "mean", "area_beyond_threshold", "foreground_max")


def score_rules(anomaly_map: np.ndarray, threshold: float, foreground: np.ndarray | None = None) -> dict[str, float]:
    """Image scores a map can give: its maximum (the decoder's), the mean of its top 1% or 5% of pixels, its
    mean, a patch-count rule (the share of pixels beyond the calibrated threshold, or for a map with none how
    far its maximum stays below it: images the threshold passes rank by their maximum, flagged ones by how
    much of them is flagged), and the maximum inside the object's ``foreground`` mask (the whole map without
    one). The tire's defects are found by the map and missed by its maximum: which one ranks them?"""
    flat = np.sort(anomaly_map.ravel())[::-1]
    beyond = float((flat > threshold).mean())
    return {
        "max": float(flat[0]),
        "top1pct_mean": float(flat[: max(1, flat.size // 100)].mean()),
        "top5pct_mean": float(flat[: max(1, flat.size // 20)].mean()),
        "mean": float(flat.mean()),
        "area_beyond_threshold": beyond if beyond > 0 else float(flat[0] - threshold),
        "foreground_max": float(anomaly_map[foreground].max()) if foreground is not None else float(flat[0]),
    }


def _inspected(inspector: Inspector, items: list[LabelledImage]):
    """(items, their RGB images, results) in batches: each image is read once, for the inspector, the score
    rules and the overlay."""
    for i in range(0, len(items), BATCH):
        chunk = items[i : i + BATCH]
        rgbs = [read_image(it.path) for it in chunk]
        yield chunk, rgbs, inspector.inspect_batch(rgbs, color_order="rgb")


def _metric_pair(item: LabelledImage, anomaly_map: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    """Mask and map at a common size, at most ``METRIC_SIDE`` on the longer side, and whether the mask had
    another size than its image (the map is at the image's size)."""
    h, w = anomaly_map.shape
    scale = min(1.0, METRIC_SIDE / max(h, w))
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    score_map = cv2.resize(anomaly_map, size, interpolation=cv2.INTER_AREA) if scale < 1 else anomaly_map
    if item.mask_path is None:
        return np.zeros(score_map.shape, dtype=bool), score_map, False
    mask = cv2.imread(str(item.mask_path), cv2.IMREAD_GRAYSCALE)
    if mask is None:
        raise InputError(f"cannot read mask {item.mask_path}")
    return cv2.resize(mask, size, interpolation=cv2.INTER_NEAREST) > 127, score_map, mask.shape != (h, w)


def is_category(path: Path) -> bool:
    return (path / "train" / "good").is_dir() and (path / "test").is_dir()


def mean_report(reports: list[dict]) -> dict:
    """Mean of every numeric metric over categories (NaN-aware)."""
    mean = {k: float(np.nanmean([r[k] for r in reports])) for k in METRIC_KEYS}  # per_image is left out
    if all("image_auroc_by_rule" in r for r in reports):  # rules added later are absent from older reports
        rules = [rule for rule in SCORE_RULES if all(rule in r["image_auroc_by_rule"] for r in reports)]
        mean["image_auroc_by_rule"] = {
            rule: float(np.nanmean([r["image_auroc_by_rule"][rule] for r in reports])) for rule in rules
        }
    return mean
