"""Accuracy modes beyond plain shots: dihedral shot views and zero-shot mutual scoring."""

from __future__ import annotations

import numpy as np
import pytest

from edge_anomaly import InputError
from edge_anomaly.evaluation import load_test_set
from edge_anomaly.few_shot import fit_normal_shots
from edge_anomaly.fit_options import FitOptions
from edge_anomaly.images import list_images, read_image
from edge_anomaly.metrics import image_auroc
from edge_anomaly.shot_views import AUTO_MAX_SHOTS, bank_limit, patch_sources, resolve_augmentation, shot_views
from edge_anomaly.zero_shot import (
    BOOTSTRAP_METHOD,
    MIN_BOOTSTRAP_FRAMES,
    MIN_FRAMES,
    OUTLIER_METHOD,
    PSEUDO_SHOTS,
    ZeroShotInspector,
    mutual_maps,
    mutual_results,
)


def test_views_and_patch_sources_agree():
    """Each 8x8 block of a view shows the shot patch that ``patch_sources`` names, for all 8 views."""
    side, cell = 4, 8
    image = np.kron(np.arange(side * side).reshape(side, side), np.ones((cell, cell))).astype(np.uint8)
    views = shot_views(np.dstack([image] * 3), "dihedral")
    sources = patch_sources(side, "dihedral")
    assert len(views) == 8 and np.array_equal(views[0][..., 0], image)
    for view, source in zip(views, sources):
        assert np.array_equal(view[::cell, ::cell, 0].ravel(), source)
    assert len({tuple(s) for s in sources}) == 8  # eight different views
    assert shot_views(image, "none")[0] is image and patch_sources(side, "none").shape == (1, side * side)
    with pytest.raises(ValueError, match="unknown augmentation"):
        shot_views(image, "rotate")


def test_auto_turns_views_on_for_few_shots_only():
    assert resolve_augmentation("auto", 1) == resolve_augmentation("auto", AUTO_MAX_SHOTS) == "dihedral"
    assert resolve_augmentation("auto", AUTO_MAX_SHOTS + 1) == "none"
    assert resolve_augmentation("none", 1) == "none" and resolve_augmentation("dihedral", 9) == "dihedral"
    with pytest.raises(ValueError, match="unknown augmentation"):
        resolve_augmentation("flip", 1)


def test_dihedral_bank_stays_small_and_covers_turned_parts(inspector, synth_root):
    shot = read_image(list_images(synth_root / "gravel" / "train" / "good")[0])
    prep, backend = inspector.preprocessing, inspector.backend
    plain = fit_normal_shots(backend, [shot], prep, augmentation="none")
    turned = fit_normal_shots(backend, [shot], prep, augmentation="dihedral")
    patches = len(plain.memory_bank)
    assert len(turned.memory_bank) == bank_limit(8 * patches, 8, 8192) == 2 * patches
    assert turned.augmentation == "dihedral" and turned.coreset
    other = read_image(list_images(synth_root / "gravel" / "train" / "good")[1])
    quarter_turn = np.ascontiguousarray(np.rot90(other))
    features = backend.encode(prep.batch([quarter_turn]))
    score_plain = backend.decode(features, plain.memory_bank)[1][0]
    score_turned = backend.decode(features, turned.memory_bank)[1][0]
    assert score_turned < score_plain  # the turned views cover a turned part
    assert np.isfinite(turned.calibration.threshold) and turned.calibration.threshold > 0


def _fresh(bundle_dir):
    """An inspector of its own: zero-shot bootstrapping replaces its shots."""
    from edge_anomaly import Inspector

    return Inspector.load(bundle_dir, backend="onnxruntime-cpu")


def test_zero_shot_small_batch_ranks_defects_by_mutual_scores_and_an_outlier_test(inspector, synth_root):
    items = load_test_set(synth_root / "fabric")
    assert len(items) < MIN_BOOTSTRAP_FRAMES
    batch = mutual_results(inspector, [it.path for it in items])
    labels = np.array([it.is_anomalous for it in items])
    scores = np.array([r.score for r in batch.results])
    assert image_auroc(labels, scores) > 0.8
    assert batch.method == OUTLIER_METHOD and batch.shot_indices == []
    assert len({r.threshold for r in batch.results}) == 1  # one outlier threshold for the batch
    assert all(r.regions for r in batch.results if r.is_anomalous)


class _CountingBackend:
    """The inspector's backend, counting decodes: the work zero-shot scoring does."""

    def __init__(self, backend) -> None:
        self.backend, self.decodes = backend, 0

    def decode(self, features, bank):
        self.decodes += 1
        return self.backend.decode(features, bank)


def test_zero_shot_references_bound_the_work(inspector, synth_root):
    """Each frame against a bounded sample of the others: linear work, defects still ranked first; a batch
    no larger than the sample is scored against everyone, exactly as with no bound."""
    from types import SimpleNamespace

    from edge_anomaly.few_shot import encode_images

    items = load_test_set(synth_root / "fabric")
    features = encode_images(inspector.backend, [read_image(it.path) for it in items], inspector.preprocessing)
    labels = np.array([it.is_anomalous for it in items])
    counting = _CountingBackend(inspector.backend)
    probe = SimpleNamespace(backend=counting)
    full = mutual_maps(probe, features, references=None)
    assert counting.decodes == 2 * len(items)  # two blocks of frames, each against every frame
    np.testing.assert_allclose(mutual_maps(probe, features, references=len(items) - 1), full, rtol=1e-6)
    counting.decodes = 0
    sampled = mutual_maps(probe, features, references=5, seed=1)
    assert counting.decodes == 2 * 5
    assert image_auroc(labels, sampled.reshape(len(items), -1).max(axis=1)) > 0.8
    assert not np.allclose(sampled, full)
    with pytest.raises(InputError, match="at least 4 references"):
        mutual_maps(probe, features, references=2)


@pytest.fixture(scope="module")
def line_root(tmp_path_factory):
    """A line-like fabric category: mostly normal test images (14 normal, 4 defective)."""
    from edge_anomaly.synthetic import generate_dataset

    root = tmp_path_factory.mktemp("line")
    generate_dataset(root, ("fabric",), size=256, seed=5, n_train=4, n_good=14, n_defect=4)
    return root / "fabric"


def test_zero_shot_batch_turns_its_most_typical_frames_into_shots(bundle_dir, line_root, tmp_path):
    from edge_anomaly import bundle_format as fmt
    from edge_anomaly.bundle import open_bundle

    items = load_test_set(line_root)
    labels = np.array([it.is_anomalous for it in items])
    assert len(items) >= MIN_BOOTSTRAP_FRAMES
    insp = _fresh(bundle_dir)
    before = insp.threshold
    batch = mutual_results(insp, [it.path for it in items])
    assert len(batch.shot_indices) == PSEUDO_SHOTS and not labels[batch.shot_indices].any()  # all picked are normal
    assert batch.method.startswith(BOOTSTRAP_METHOD) and "presumed normal" in batch.method
    assert {r.threshold for r in batch.results} == {insp.threshold} and insp.threshold != before
    decisions = np.array([r.is_anomalous for r in batch.results])
    assert decisions[labels].mean() > decisions[~labels].mean()
    assert image_auroc(labels, np.array([r.score for r in batch.results])) > 0.8
    saved = open_bundle(insp.save(tmp_path / "bootstrapped").root)  # the picked frames are the new bundle's shots
    assert len(saved.files_of(fmt.ROLE_SHOT)) == PSEUDO_SHOTS and saved.threshold == insp.threshold
    held_out = saved.manifest.threshold.normal_scores.count
    assert held_out == 4 * PSEUDO_SHOTS + MIN_BOOTSTRAP_FRAMES - PSEUDO_SHOTS  # quarters, then presumed normal


def test_presumed_normal_frames_raise_the_threshold_robustly():
    from edge_anomaly.calibration import Calibration, outlier_threshold, raise_to_presumed_normal

    quiet = Calibration(1.0, [0.8, 1.0], "quarters")
    spread = [1.0, 1.1, 1.2, 1.3, 1.4, 9.0]  # one unnoticed defect among the presumed-normal frames
    raised = raise_to_presumed_normal(quiet, spread)
    assert raised.threshold == outlier_threshold(spread) and 1.4 < raised.threshold < 9.0
    assert raised.normal_scores == [0.8, 1.0, *spread] and raised.method.startswith("quarters; raised")
    assert raise_to_presumed_normal(Calibration(20.0, [20.0], "q"), spread).threshold == 20.0  # never lowered
    with pytest.raises(ValueError, match="at least 2"):
        raise_to_presumed_normal(quiet, [1.0])


def test_zero_shot_stream_learns_normal_from_the_line(inspector, synth_root):
    goods = list_images(synth_root / "fabric" / "test" / "good") + list_images(synth_root / "fabric" / "train" / "good")
    defects = [it.path for it in load_test_set(synth_root / "fabric") if it.is_anomalous]
    zero = ZeroShotInspector(inspector, window=16, bootstrap_after=None)
    warmup = zero.inspect(goods[:MIN_FRAMES])  # a list is taken frame by frame
    assert len(warmup) == MIN_FRAMES and not any(r.is_anomalous for r in warmup) and zero.ready
    normal = [zero.inspect(p) for p in goods[MIN_FRAMES:]]
    defect_results = [zero.inspect(p) for p in defects]
    normal_median = np.median([r.score for r in normal])
    assert np.median([r.score for r in defect_results]) > normal_median
    assert sum(r.is_anomalous for r in defect_results) > sum(r.is_anomalous for r in normal)
    unflagged = sum(not r.is_anomalous for r in warmup + normal + defect_results)
    assert zero.reference_frames == min(16, unflagged)  # flagged frames never become the reference
    assert not zero.bootstrapped


def test_zero_shot_stream_bootstraps_shots_from_unflagged_frames(bundle_dir, line_root):
    goods = list_images(line_root / "test" / "good") + list_images(line_root / "train" / "good")
    defects = [it.path for it in load_test_set(line_root) if it.is_anomalous]
    insp = _fresh(bundle_dir)
    zero = ZeroShotInspector(insp, window=16)
    unflagged = 0
    for path in goods:
        unflagged += not zero.inspect(path).is_anomalous
        assert zero.bootstrapped == (unflagged >= MIN_BOOTSTRAP_FRAMES)
    assert zero.bootstrapped and zero.reference_frames == 0
    assert len(zero.shot_frames) == PSEUDO_SHOTS and max(zero.shot_frames) < len(goods)
    after = [zero.inspect(p) for p in defects]
    assert all(r.threshold == insp.threshold and np.isfinite(r.threshold) for r in after)
    assert sum(r.is_anomalous for r in after) >= len(defects) // 2
    with pytest.raises(ValueError, match="bootstrap_after"):
        ZeroShotInspector(insp, window=16, bootstrap_after=17)


def test_eval_with_zero_shots_picks_shots_from_the_test_set(line_root):
    from edge_anomaly.evaluation import evaluate_category

    report = evaluate_category(line_root, 0, FitOptions(image_size=128), progress=False)
    assert report["shots"] == 0 and report["threshold_method"].startswith(BOOTSTRAP_METHOD)
    assert len(report["zero_shot_picked"]) == PSEUDO_SHOTS
    assert all(p.startswith("test/good/") for p in report["zero_shot_picked"])
    assert report["image_auroc"] > 0.8 and report["pixel_auroc"] > 0.8


def test_eval_seed_draws_the_zero_shot_references(line_root):
    """Seeds 0-2 of a zero-shot eval are three draws of the references, as they are three draws of shots."""
    from edge_anomaly.evaluation import evaluate_category

    def scores(seed: int) -> list[float]:
        options = FitOptions(image_size=64, seed=seed)
        report = evaluate_category(line_root, 0, options, progress=False, zero_shot_references=4)
        return [p["score"] for p in report["per_image"]]

    first = scores(0)
    assert scores(0) == first and scores(1) != first
    with pytest.raises(InputError, match="zero-shot has none"):  # its constants would come from a normal image
        evaluate_category(line_root, 0, FitOptions(image_size=64, feature_norm="balanced"), progress=False)


def test_cli_run_learns_shots_from_the_line_and_saves_them(bundle_dir, line_root, tmp_path, capsys):
    from edge_anomaly import bundle_format as fmt
    from edge_anomaly.bundle import open_bundle
    from edge_anomaly.cli import main

    out = tmp_path / "learnt"
    source = f"{line_root}/*/good/*.png"  # 18 normal frames of the line
    run = ["run", str(bundle_dir), "--source", source, "--quiet", "--backend", "onnxruntime-cpu"]
    assert main([*run, "--save-bundle", str(out)]) == 2  # only with --zero-shot or --settle
    assert "goes with --zero-shot" in capsys.readouterr().err
    assert main([*run, "--zero-shot", "--settle", "8"]) == 2
    assert main([*run, "--zero-shot", "--save-bundle", str(out), "--events", str(tmp_path / "e.jsonl")]) == 0
    assert "saved as" in capsys.readouterr().err
    learnt = open_bundle(out)
    assert (
        len(learnt.files_of(fmt.ROLE_SHOT)) == PSEUDO_SHOTS
        and "presumed normal" in learnt.manifest.threshold.method
    )
    assert main([*run, "--zero-shot", "--save-bundle", str(out)]) == 2  # never over an existing bundle


def test_presume_normal_raises_a_loaded_bundles_threshold_from_line_frames(bundle_dir, line_root, tmp_path):
    from edge_anomaly.errors import InputError

    insp = _fresh(bundle_dir)
    bank, threshold = insp.memory_bank.copy(), insp.threshold
    frames = list_images(line_root / "test" / "good")[:8]
    calibration = insp.presume_normal(frames)
    assert np.array_equal(insp.memory_bank, bank)  # the bundle's fit, redone, is the bundle's bank
    assert insp.threshold == calibration.threshold >= threshold and "8 frames presumed normal" in calibration.method
    saved = insp.save(tmp_path / "settled")
    assert saved.threshold == insp.threshold and saved.manifest.threshold.normal_scores.count == 3 * 4 + 8
    with pytest.raises(InputError, match="at least 2 frames"):
        insp.presume_normal(frames[:1])


def test_cli_run_settles_given_shots_on_the_first_frames(bundle_dir, line_root, tmp_path, capsys):
    from edge_anomaly.bundle import open_bundle
    from edge_anomaly.cli import main
    from edge_anomaly.settling import SettlingInspector

    out = tmp_path / "settled"
    source = f"{line_root}/test/good/*.png"
    run = ["run", str(bundle_dir), "--source", source, "--quiet", "--backend", "onnxruntime-cpu"]
    assert main([*run, "--settle", "8", "--save-bundle", str(out)]) == 0
    assert "saved as" in capsys.readouterr().err
    settled = open_bundle(out)
    assert "8 frames presumed normal" in settled.manifest.threshold.method
    assert settled.threshold >= open_bundle(bundle_dir).threshold
    with pytest.raises(ValueError, match="at least 8 frames"):
        SettlingInspector(_fresh(bundle_dir), frames=4)


def test_settling_inspector_raises_the_threshold_after_its_frames(bundle_dir, line_root):
    from edge_anomaly.settling import SettlingInspector

    insp = _fresh(bundle_dir)
    before = insp.threshold
    calls = []
    settling = SettlingInspector(insp, frames=8, on_settled=calls.append)
    goods = list_images(line_root / "test" / "good")
    first = settling.inspect(goods[:8])  # a list, frame by frame, as the stream would give them
    assert isinstance(first, list) and len(first) == 8
    assert settling.settled and calls == [insp] and all(r.threshold == before for r in first)
    assert all(r.source == str(p) for r, p in zip(first, goods))
    later = settling.inspect(goods[8])
    assert later.threshold == insp.threshold >= before
