"""The detector separates synthetic defects from normals and points at them."""

from __future__ import annotations

import numpy as np
import pytest

from edge_anomaly.calibration import held_out_threshold
from edge_anomaly.evaluation import evaluate_category, load_test_set
from edge_anomaly.fit_options import FitOptions
from edge_anomaly.images import read_image
from edge_anomaly.manifest import as_json
from edge_anomaly.metrics import image_auroc


def test_fabric_defects_are_separated_and_localized(synth_root):
    report = evaluate_category(synth_root / "fabric", 3, FitOptions(image_size=128), progress=False)
    assert report["image_auroc"] > 0.9
    assert report["pixel_auroc"] > 0.9
    assert report["pro"] > 0.7
    assert report["accuracy"] >= 0.75  # at the threshold calibrated from the 3 normal shots alone
    assert report["count_normal"] == 6 and report["count_anomalous"] == 8


def test_grey_texture_defects_score_above_normals(synth_root):
    report = evaluate_category(synth_root / "gravel", 4, FitOptions(image_size=128), progress=False)
    assert report["image_auroc"] > 0.7
    assert report["pixel_auroc"] > 0.85


def test_anomaly_map_peaks_inside_the_defect_mask(synth_root, inspector):
    import cv2

    hits = 0
    anomalous = [item for item in load_test_set(synth_root / "fabric") if item.is_anomalous]
    for item in anomalous:
        result = inspector.inspect(item.path)
        mask = cv2.imread(str(item.mask_path), cv2.IMREAD_GRAYSCALE) > 0
        y, x = np.unravel_index(np.argmax(result.anomaly_map), result.anomaly_map.shape)
        near = cv2.dilate(mask.astype(np.uint8), np.ones((9, 9), np.uint8)) > 0  # within 4 px of the mask
        hits += bool(near[y, x])
    assert hits >= len(anomalous) - 1


def test_flagged_defects_are_located_in_their_mask_cell(synth_root, inspector):
    from edge_anomaly.findings import grid_location

    checked = agreed = 0
    for item in load_test_set(synth_root / "fabric"):
        if not item.is_anomalous:
            continue
        result = inspector.inspect(item.path)
        if not result.is_anomalous:
            continue
        mask = read_image(item.mask_path)[:, :, 0] > 0
        ys, xs = np.nonzero(mask)
        truth = grid_location((xs.mean() + 0.5) / mask.shape[1], (ys.mean() + 0.5) / mask.shape[0])
        checked += 1
        agreed += result.location == truth
    assert checked >= 6
    assert agreed >= checked - 1


def test_normal_scores_sit_below_defect_scores(synth_root, inspector):
    items = load_test_set(synth_root / "fabric")
    results = inspector.inspect([item.path for item in items])
    labels = np.array([item.is_anomalous for item in items])
    scores = np.array([r.score for r in results])
    assert image_auroc(labels, scores) > 0.9
    assert all(r.is_anomalous == (r.score >= r.threshold) for r in results)
    assert all(bool(r.regions) == r.is_anomalous for r in results)


@pytest.mark.parametrize("shots", [1, 2])
def test_threshold_is_calibrated_from_normals_alone(synth_root, tmp_path, shots):
    from edge_anomaly.export.build_bundle import build_bundle

    normal = synth_root / "fabric" / "train" / "good"
    bundle = build_bundle(normal, tmp_path / "b", shots, options=FitOptions(image_size=128))
    t = as_json(bundle.manifest.threshold)
    assert "each quarter of each shot" in t["method"]
    assert t["value"] == pytest.approx(held_out_threshold(t["normal_scores"]["values"])) and "margin" not in t
    assert t["normal_scores"]["count"] == len(t["normal_scores"]["values"]) == 4 * shots
    assert max(t["normal_scores"]["values"]) == pytest.approx(t["normal_scores"]["max"])
