"""Findings, metrics, coreset and synthetic data: the pieces the product is built from."""

from __future__ import annotations

import numpy as np
import pytest

from edge_anomaly.calibration import (
    HELD_OUT_Z,
    MAX_HELD_OUT_SHOTS,
    MIN_SPREAD_SCORES,
    calibrate_held_out_quarters,
    held_out_threshold,
    outlier_threshold,
)
from edge_anomaly.findings import GRID_WORDS, find_regions, grid_location
from edge_anomaly.memory_bank import build_memory_bank, greedy_coreset
from edge_anomaly.metrics import au_pro, best_accuracy, pixel_auroc
from edge_anomaly.placement import free_rows
from edge_anomaly.shot_views import patch_sources
from edge_anomaly.synthetic import DEFECTS, add_defect, normal_image, texture_source


@pytest.mark.parametrize(
    "x, y, words",
    [
        (0.1, 0.1, "top left"),
        (0.5, 0.1, "top"),
        (0.9, 0.2, "top right"),
        (0.2, 0.5, "left"),
        (0.5, 0.5, "center"),
        (0.99, 0.5, "right"),
        (0.0, 0.9, "bottom left"),
        (0.5, 1.0, "bottom"),
        (1.0, 1.0, "bottom right"),
    ],
)
def test_grid_location_words(x, y, words):
    assert grid_location(x, y) == words


def test_regions_are_found_scaled_and_placed():
    anomaly_map = np.zeros((100, 100), np.float32)
    anomaly_map[10:20, 70:90] = 2.0  # top right, 2% of the map
    anomaly_map[80:85, 5:10] = 1.5  # bottom left, 0.25%
    regions = find_regions(anomaly_map, 1.0, frame_size=(200, 300))
    assert [r.location for r in regions] == ["top right", "bottom left"]
    assert regions[0].box == (140, 30, 180, 60)
    assert regions[0].area_fraction == pytest.approx(0.02)
    assert regions[0].peak_score == 2.0
    assert sum(len(row) for row in GRID_WORDS) == 9


def test_au_pro_extremes_and_a_hand_computed_case():
    mask = np.zeros((10, 10), bool)
    mask[2:4, 2:4] = True
    perfect = mask.astype(np.float32)
    assert au_pro([mask], [perfect]) == pytest.approx(1.0, abs=1e-3)
    spread = np.linspace(0.5, 1.0, 100, dtype=np.float32).reshape(10, 10)  # distinct normal scores
    inverted = np.where(mask, 0.0, spread)
    assert au_pro([mask], [inverted]) < 0.01
    # Half of the region scores above every normal pixel, half below all of them:
    half = spread.copy()
    half[2:4, 2:3] = 2.0
    half[2:4, 3:4] = -1.0
    assert au_pro([mask], [half]) == pytest.approx(0.5, abs=0.01)
    assert pixel_auroc([mask], [perfect]) == 1.0


def test_best_accuracy_is_the_ceiling():
    labels = np.array([0, 0, 0, 1, 1, 1])
    scores = np.array([0.1, 0.2, 0.9, 0.8, 0.85, 0.95])
    assert best_accuracy(labels, scores) == pytest.approx(5 / 6)


def test_coreset_keeps_the_outlier_and_the_size():
    rng = np.random.default_rng(0)
    features = rng.normal(0, 0.01, (2, 1024, 16)).astype(np.float32)  # two frames' 32 x 32 patches
    features[1, 234] = 5.0  # a rare but real normal patch
    rows = free_rows(features).reshape(-1, 19)
    bank = build_memory_bank(rows, max_size=50)
    assert bank.shape == (50, 19)
    assert np.isclose(bank[:, :16], 5.0).all(axis=1).any()
    assert len(set(greedy_coreset(rows[:, :16], 50).tolist())) == 50
    assert build_memory_bank(rows[:10], max_size=50).shape == (10, 19)
    with pytest.raises(ValueError, match="bank rows"):
        build_memory_bank(features[0, :, :2], max_size=50)


@pytest.mark.parametrize("kind", DEFECTS)
def test_synthetic_defects_have_exact_nonempty_masks(kind):
    rng = np.random.default_rng(1)
    clean = normal_image(texture_source("fabric"), 128, rng)
    defective, mask = add_defect(clean, kind, rng)
    changed = np.abs(defective.astype(int) - clean.astype(int)).max(axis=2) > 12
    assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 255}
    assert 0.001 < (mask > 0).mean() < 0.2
    assert (mask[changed] > 0).all()  # every clearly changed pixel is in the mask


def test_grey_textures_stay_grey():
    rng = np.random.default_rng(2)
    clean = normal_image(texture_source("brick"), 96, rng)
    defective, _ = add_defect(clean, "stain", rng)
    assert (defective[:, :, 0] == defective[:, :, 2]).all()


def _nearest_map(query: np.ndarray, bank: np.ndarray) -> np.ndarray:
    """A stand-in decoder: each patch's nearest distance, each patch 2 x 2 pixels."""
    d = np.sqrt(((query[:, :, None, :] - bank[None, None]) ** 2).sum(-1)).min(-1)
    side = int(np.sqrt(d.shape[1]))
    return np.stack([np.kron(m.reshape(side, side), np.ones((2, 2))) for m in d])


def _nearest_maps(query: np.ndarray, bank: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The stand-in decoder whose score is its map's maximum: one array for both."""
    maps = _nearest_map(query, bank)
    return maps, maps


def _calibrate(features: np.ndarray, augmentation: str = "dihedral"):
    """``features [K x V x 16 x D]`` on a 4 x 4 grid; each shot's part of the bank is all its view patches."""
    sources = patch_sources(4, augmentation)
    parts = [f.reshape(-1, f.shape[-1]) for f in features]
    return calibrate_held_out_quarters(features, sources, parts, lambda p: p, np.concatenate, _nearest_maps)


def test_held_out_quarter_is_left_out_of_every_view():
    rng = np.random.default_rng(0)
    shot = rng.normal(size=(16, 3))
    views = np.stack([shot[src] for src in patch_sources(4, "dihedral")])  # each view shows the shot's patches
    alone = _calibrate(views[None])
    assert len(alone.normal_scores) == 4 and min(alone.normal_scores) > 0  # no view leaks the held-out quarter
    assert alone.threshold == max(alone.normal_scores)
    twice = _calibrate(np.stack([views, views]))  # a second shot identical to the first covers every quarter
    assert len(twice.normal_scores) == 8 and twice.threshold == 0.0


def test_an_odd_held_out_quarter_is_set_aside_once_a_spread_can_be_told():
    rng = np.random.default_rng(2)
    usual = list(1.0 + 0.05 * rng.standard_normal(MIN_SPREAD_SCORES - 1))
    odd = 3.0  # a quarter unlike any other part of the shots
    assert outlier_threshold([*usual, odd], HELD_OUT_Z) < odd
    assert held_out_threshold([*usual, odd]) == max(usual)
    assert held_out_threshold([*usual[:3], odd]) == odd  # one shot's 4 scores: the maximum stays
    spread = [*usual, 1.12]  # a high score within the spread is a sample of it, and kept
    assert held_out_threshold(spread) == 1.12
    assert held_out_threshold([0.5] * MIN_SPREAD_SCORES + [0.9]) == 0.9  # no spread to measure against


def test_held_out_shots_are_capped():
    rng = np.random.default_rng(1)
    shots = MAX_HELD_OUT_SHOTS + 2
    cal = _calibrate(rng.normal(size=(shots, 1, 16, 3)), "none")
    assert len(cal.normal_scores) == 4 * MAX_HELD_OUT_SHOTS


def test_the_patch_count_score_ranks_flagged_maps_by_area_and_the_rest_by_their_maximum():
    from edge_anomaly.evaluation import SCORE_RULES, score_rules

    def spot(side: int, peak: float) -> np.ndarray:
        m = np.full((40, 40), 0.2, dtype=np.float32)
        m[5 : 5 + side, 5 : 5 + side] = peak
        return m

    maps = [spot(2, 0.6), spot(2, 0.9), spot(3, 1.5), spot(12, 1.1)]  # threshold 1.0 flags the last two
    scores = [score_rules(m, 1.0) for m in maps]
    assert all(set(s) == set(SCORE_RULES) for s in scores)
    assert [s["max"] for s in scores] == pytest.approx([0.6, 0.9, 1.5, 1.1])
    count = [s["area_beyond_threshold"] for s in scores]
    assert count[0] < count[1] < 0 < count[2] < count[3]  # the wide spot outranks the high one
    assert count[3] == pytest.approx(144 / 1600) and count[1] == pytest.approx(-0.1)


def test_the_foreground_is_the_object_on_a_plain_background_and_none_on_a_full_frame_texture():
    from edge_anomaly.evaluation import score_rules
    from edge_anomaly.foreground import foreground_mask

    rng = np.random.default_rng(0)
    frame = rng.normal(20, 3, (300, 400, 3)).clip(0, 255).astype(np.uint8)  # dark cloth
    frame[100:200, 150:300] = rng.integers(60, 200, (100, 150, 3), dtype=np.uint8)  # a grainy part on it
    mask = foreground_mask(frame)
    assert mask is not None and mask.shape == (300, 400)
    truth = np.zeros((300, 400), dtype=bool)
    truth[100:200, 150:300] = True
    near = np.zeros_like(truth)
    near[85:215, 135:315] = True  # the part and a margin of its neighbourhood window
    assert (mask & truth).sum() > 0.98 * truth.sum() and not (mask & ~near).any()
    texture = texture_source("fabric", seed=0)[:300, :400]
    assert foreground_mask(np.ascontiguousarray(texture)) is None  # the surface fills the frame

    score_map = np.full((300, 400), 0.1, dtype=np.float32)
    score_map[5, 5], score_map[150, 200] = 2.0, 0.7  # a bright corner of the background, a spot on the part
    rules = score_rules(score_map, 1.0, mask)
    assert rules["max"] == pytest.approx(2.0) and rules["foreground_max"] == pytest.approx(0.7)
    assert score_rules(score_map, 1.0)["foreground_max"] == pytest.approx(2.0)  # no mask: the whole map
