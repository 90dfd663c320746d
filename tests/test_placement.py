"""Placement: matching a patch near its own place for aligned parts, anywhere for parts in any pose."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edge_anomaly.few_shot import encode_images, fit_normal_shots
from edge_anomaly.memory_bank import build_memory_bank
from edge_anomaly.placement import (
    ALIGNED_SHARE,
    EVERYWHERE,
    PLACE_COLUMNS,
    REACH,
    aligned_share,
    free_rows,
    grid_places,
    resolve_layout,
    with_places,
)
from edge_anomaly.synthetic import texture_source

SIDE = 8  # an 8 x 8 patch grid


def _unique_patches(rng: np.random.Generator, shots: int = 2) -> np.ndarray:
    """``[shots x 64 x 16]``: the same distinct patch at each place in every shot, with a little noise."""
    base = rng.normal(size=(SIDE * SIDE, 16))
    return np.stack([base + rng.normal(scale=0.01, size=base.shape) for _ in range(shots)]).astype(np.float32)


def test_rows_carry_place_and_reach():
    features = np.zeros((2, SIDE * SIDE, 5), np.float32)
    rows = with_places(features, REACH)
    assert rows.shape == (2, SIDE * SIDE, 5 + PLACE_COLUMNS) and rows.dtype == np.float32
    assert rows[0, SIDE + 3, 5:].tolist() == [1, 3, REACH]  # row 1, column 3
    assert (free_rows(features[0])[:, -1] == EVERYWHERE).all()
    with pytest.raises(ValueError, match="square patch grid"):
        grid_places(10)


def test_auto_layout_tells_aligned_shots_from_shifted_ones():
    rng = np.random.default_rng(0)
    aligned = _unique_patches(rng)
    assert aligned_share(aligned) == 1.0
    assert resolve_layout("auto", aligned) == ("aligned", 1.0)
    shifted = aligned.copy()
    shifted[1] = np.roll(aligned[1].reshape(SIDE, SIDE, -1), SIDE // 2 + 1, axis=(0, 1)).reshape(SIDE * SIDE, -1)
    layout, share = resolve_layout("auto", shifted)
    assert layout == "free" and share < ALIGNED_SHARE
    assert resolve_layout("auto", aligned[:1]) == ("free", None)  # one shot cannot show alignment
    # frames presumed normal may show it, but one shot still cannot calibrate an aligned bank
    assert resolve_layout("auto", aligned[:1], aligned[1:]) == ("free", 1.0)
    assert resolve_layout("free", aligned)[0] == "free"
    with pytest.raises(ValueError, match="at least 2 shots"):
        resolve_layout("aligned", aligned[:1], aligned[1:])
    with pytest.raises(ValueError, match="unknown layout"):
        resolve_layout("fixtured", aligned)


def test_aligned_bank_is_reduced_place_by_place():
    rng = np.random.default_rng(1)
    patches = _unique_patches(rng, shots=6)
    bank = build_memory_bank(with_places(patches, REACH).reshape(-1, 16 + PLACE_COLUMNS), max_size=2 * SIDE * SIDE)
    places, counts = np.unique(bank[:, -PLACE_COLUMNS:-1], axis=0, return_counts=True)
    assert len(places) == SIDE * SIDE and (counts == 2).all()  # every place keeps its share
    free_bank = build_memory_bank(free_rows(patches).reshape(-1, 16 + PLACE_COLUMNS), max_size=2 * SIDE * SIDE)
    assert free_bank.shape == (2 * SIDE * SIDE, 16 + PLACE_COLUMNS)


def test_decoder_matches_aligned_rows_only_within_reach():
    from edge_anomaly.export.patch_model import NearestNeighbourDecoder

    rng = np.random.default_rng(2)
    shot = _unique_patches(rng, shots=1)[0]
    decoder = NearestNeighbourDecoder((SIDE, SIDE), (32, 32)).eval()
    swapped = shot.copy()
    swapped[[0, SIDE * SIDE - 1]] = shot[[SIDE * SIDE - 1, 0]]  # two normal patches, each at the other's place
    query = torch.from_numpy(swapped[None])
    with torch.no_grad():
        free = decoder.patch_distances(query, torch.from_numpy(with_places(shot, EVERYWHERE)))[0][0]
        aligned = decoder.patch_distances(query, torch.from_numpy(with_places(shot, REACH)))[0][0]
    assert free.max() < 0.01  # anywhere, every patch has its twin (float error of the expanded distance aside)
    assert aligned[0] > 1.0 and aligned[-1] > 1.0  # near their place, the swapped patches have none
    assert aligned[1:-1].max() < 0.01


def _printed_part(rng: np.random.Generator, size: int = 256) -> np.ndarray:
    """A fixtured part: the same print at the same place in every shot, with sensor noise."""
    part = texture_source("gravel")[:size, :size].astype(np.float32)
    return np.clip(part + rng.normal(scale=3.0, size=part.shape), 0, 255).astype(np.uint8)


def test_aligned_fit_flags_a_normal_look_at_the_wrong_place(inspector):
    rng = np.random.default_rng(3)
    shots = [_printed_part(rng) for _ in range(2)]
    prep, backend = inspector.preprocessing, inspector.backend
    auto = fit_normal_shots(backend, shots, prep)
    free = fit_normal_shots(backend, shots, prep, layout="free")
    assert auto.layout == "aligned" and auto.aligned_share >= ALIGNED_SHARE and auto.augmentation == "none"
    assert (auto.memory_bank[:, -1] == REACH).all() and (free.memory_bank[:, -1] == EVERYWHERE).all()
    normal, swapped = _printed_part(rng), _printed_part(rng)
    half = swapped.shape[0] // 2
    swapped[:half], swapped[half:] = swapped[half:].copy(), swapped[:half].copy()  # halves change places
    features = backend.encode(prep.batch([normal, swapped]))
    aligned_maps, aligned_scores = backend.decode(features, auto.memory_bank)
    assert aligned_scores[0] <= auto.calibration.threshold  # the normal part passes
    inner = slice(prep.size // 8, 3 * prep.size // 8)  # inside the moved top half, away from its seams
    assert aligned_maps[1, inner, inner].max() > auto.calibration.threshold  # a normal look at the wrong place
    with pytest.raises(ValueError, match="dihedral views contradict"):
        fit_normal_shots(backend, shots, prep, augmentation="dihedral", layout="aligned")


def test_frames_presumed_normal_are_evidence_for_the_layout(inspector):
    """Zero-shot shots are a line's most typical frames and may share one pose; the rest of the line decides."""
    rng = np.random.default_rng(4)
    shots = [_printed_part(rng) for _ in range(2)]
    moved = [np.ascontiguousarray(np.roll(_printed_part(rng), 64 * k, axis=(0, 1))) for k in (1, 2)]
    prep, backend = inspector.preprocessing, inspector.backend
    alone = fit_normal_shots(backend, shots, prep)
    with_line = fit_normal_shots(backend, shots, prep, presumed_features=encode_images(backend, moved, prep))
    assert alone.layout == "aligned"
    assert with_line.layout == "free" and with_line.aligned_share < ALIGNED_SHARE
    assert len(with_line.memory_bank) == len(fit_normal_shots(backend, shots, prep, layout="free").memory_bank)


def test_settling_frames_can_overrule_shots_that_looked_aligned(bundle_dir):
    """Two shots of one capture look aligned; the line's first frames, presumed normal, show they are not."""
    from edge_anomaly import Inspector

    rng = np.random.default_rng(5)
    insp = Inspector.load(bundle_dir, backend="onnxruntime-cpu")
    insp.use_normal_shots([_printed_part(rng) for _ in range(2)], color_order="rgb")
    assert insp.layout == "aligned"
    line = [np.ascontiguousarray(np.roll(_printed_part(rng), 48 * k, axis=(0, 1))) for k in range(1, 5)]
    calibration = insp.presume_normal(line, color_order="rgb")
    assert insp.layout == "free" and insp.aligned_share < ALIGNED_SHARE
    assert (insp.memory_bank[:, -1] == EVERYWHERE).all() and insp.threshold == calibration.threshold


def test_one_shot_stays_free_however_aligned_the_line_looks(bundle_dir):
    """One shot cannot calibrate an aligned bank (a held-out quarter has nothing at its place to match)."""
    from edge_anomaly import Inspector

    rng = np.random.default_rng(6)
    insp = Inspector.load(bundle_dir, backend="onnxruntime-cpu")
    insp.use_normal_shots([_printed_part(rng)], color_order="rgb")
    insp.presume_normal([_printed_part(rng) for _ in range(3)], color_order="rgb")
    assert insp.layout == "free" and insp.aligned_share >= ALIGNED_SHARE  # aligned evidence, one shot
    assert insp.threshold < 10.0  # a real threshold, not one set by patches out of reach
