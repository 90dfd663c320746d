"""The SDK surface: results, batches, few-shot refits on the edge box, overrides, saving."""

from __future__ import annotations

import pytest

from edge_anomaly import InputError, Inspector, open_bundle
from edge_anomaly.images import list_images


def test_result_fields_agree_with_each_other(inspector, synth_root):
    path = next((synth_root / "fabric" / "test" / "cut").iterdir())
    r = inspector.inspect(path)
    assert r.source == str(path)
    assert r.threshold == inspector.threshold
    assert r.is_anomalous and r.regions and r.location == r.regions[0].location
    assert r.regions == tuple(sorted(r.regions, key=lambda g: g.peak_score, reverse=True))
    assert r.regions[0].peak_score == pytest.approx(r.score, rel=1e-5)
    assert set(r.latency_ms) == {"preprocess", "encoder", "decoder", "findings"}
    d = r.to_dict()
    assert {"image", "score", "threshold", "is_anomalous", "location", "regions"} <= set(d)
    assert "anomalous" in inspector.verdict(r) and r.location in inspector.verdict(r)


def test_normal_result_has_no_regions_and_says_so(inspector, synth_root):
    results = inspector.inspect(list_images(synth_root / "fabric" / "test" / "good"))
    passed = [r for r in results if not r.is_anomalous]
    assert len(passed) >= 4
    for r in passed:
        assert r.regions == () and r.location == "none" and "normal" in inspector.verdict(r)


def test_batch_equals_one_by_one(inspector, synth_root):
    paths = list_images(synth_root / "fabric" / "test" / "stain") + list_images(synth_root / "fabric" / "test" / "good")
    batch = inspector.inspect(paths)
    single = [inspector.inspect(p) for p in paths]
    assert [b.score for b in batch] == pytest.approx([s.score for s in single], rel=1e-5)


def test_threshold_override_is_used_but_never_required(bundle_dir, synth_root):
    path = next((synth_root / "fabric" / "test" / "good").iterdir())
    strict = Inspector.load(bundle_dir, backend="onnxruntime-cpu", threshold=0.0)
    r = strict.inspect(path)
    assert r.threshold == 0.0 and r.is_anomalous


def test_add_normal_shots_refits_without_reexport(bundle_dir, synth_root, tmp_path):
    insp = Inspector.load(bundle_dir, backend="onnxruntime-cpu")
    before_bank = len(insp.memory_bank)
    extra = list_images(synth_root / "fabric" / "train" / "good")[3:]
    calibration = insp.add_normal_shots(extra)
    patches = 16 * 16  # a 128 px shot on the stride-8 grid; aligned shots (test_bundle) take no views
    assert before_bank == 3 * patches
    assert len(insp.memory_bank) == (3 + len(extra)) * patches
    assert insp.threshold == calibration.threshold and len(calibration.normal_scores) == 4 * 4
    saved = insp.save(tmp_path / "refit")
    reopened = open_bundle(saved.root)
    bank = reopened.manifest.memory_bank
    assert bank.shots == 4 and bank.augmentation == "none"
    assert (bank.layout, reopened.manifest.fit.layout) == ("aligned", "auto")  # applied, and as asked
    assert reopened.manifest.shot_sources[-1] == "given on the edge box" and reopened.manifest.engines == ()
    assert reopened.threshold == pytest.approx(calibration.threshold)
    original = open_bundle(bundle_dir)
    assert reopened.manifest.files["encoder.onnx"].sha256 == original.manifest.files["encoder.onnx"].sha256


def test_add_normal_shots_needs_images(inspector):
    with pytest.raises(InputError, match="at least one image"):
        inspector.add_normal_shots([])


def test_unknown_backend_is_refused(bundle_dir):
    from edge_anomaly import BackendError

    with pytest.raises(BackendError, match="unknown backend"):
        Inspector.load(bundle_dir, backend="tpu")


def test_a_bundle_without_engines_says_nothing_of_tensorrt_unless_asked(bundle_dir):
    from edge_anomaly import BackendError

    assert "TensorRT" not in Inspector.load(bundle_dir).backend_reason
    with pytest.raises(BackendError, match="has no TensorRT engines"):
        Inspector.load(bundle_dir, backend="tensorrt")


def test_cuda_backend_is_refused_clearly_without_a_gpu(bundle_dir):
    from edge_anomaly import BackendError
    from edge_anomaly.runtime.onnxruntime_backend import cuda_available

    if cuda_available():
        pytest.skip("this machine has the CUDA provider; the refusal applies only without it")
    with pytest.raises(BackendError, match="no CUDA provider"):
        Inspector.load(bundle_dir, backend="onnxruntime-cuda")
