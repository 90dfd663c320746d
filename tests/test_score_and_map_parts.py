"""The image score from some feature parts, the map from all of them (``--score-neighbourhood``).

The score must be exactly what the decoder reading the score's parts alone gives, and the map exactly what the
decoder reading every part gives; the map then has its own threshold, and every layer that cuts the map into
regions must use it.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from edge_anomaly.export.onnx_export import build_graphs, export_onnx
from edge_anomaly.placement import EVERYWHERE, PLACE_COLUMNS, REACH, with_places

SIZE = 64


@pytest.fixture(scope="module")
def graphs():
    return {
        "score": build_graphs("lite0", SIZE, neighbourhood=(3,)),
        "map": build_graphs("lite0", SIZE, neighbourhood=(1, 3)),
        "split": build_graphs("lite0", SIZE, neighbourhood=(1, 3), score_neighbourhood=(3,)),
    }


def _features(graphs, images):
    return {name: g.encode(images) for name, g in graphs.items()}


@pytest.mark.parametrize("reach", [EVERYWHERE, REACH])
def test_score_reads_its_parts_and_the_map_reads_all(graphs, reach):
    """A free bank (the free branch) and an aligned one (the full graph): score as the 3x3 decoder's, map as the
    1x1-and-3x3 decoder's, the head included in both."""
    split = graphs["split"]
    assert split.sections.decoder.score_features == 40 + 112 and split.encoder.feature_dim == 2 * (40 + 112)
    assert split.encoder.parts[:2] == [(2, 3), (4, 3)] and split.decoder.head is not None
    images = np.random.default_rng(0).uniform(-1, 1, (3, 3, SIZE, SIZE)).astype(np.float32)
    features = _features(graphs, images)
    assert np.array_equal(features["split"][..., :152], features["score"])  # the score's columns lead
    decoded = {}
    for name, g in graphs.items():
        bank = with_places(features[name][:1], reach).reshape(-1, features[name].shape[-1] + PLACE_COLUMNS)
        decoded[name] = g.decode(features[name][1:], bank)
    (split_map, split_score), (_, score), (full_map, full_score) = (decoded[k] for k in ("split", "score", "map"))
    np.testing.assert_allclose(split_score, score, atol=1e-5)
    np.testing.assert_allclose(split_map, full_map, atol=1e-4)
    assert np.abs(split_score - full_score).min() > 0.05  # the score is not the map's maximum any more
    np.testing.assert_allclose(split_map.reshape(2, -1).max(1), full_score, atol=1e-4)


def test_exported_split_decoder_and_the_score_map_of_muted_columns(graphs, tmp_path):
    """Through ONNX Runtime: the exported graph decodes as the torch one, and the score's own map (the
    calibration's evidence, ``few_shot.score_and_anomaly_maps``) peaks at the decoder's score."""
    from edge_anomaly.few_shot import score_and_anomaly_maps
    from edge_anomaly.runtime.onnxruntime_backend import OnnxRuntimeBackend

    split = graphs["split"]
    backend = OnnxRuntimeBackend(*export_onnx(split, tmp_path), "cpu")
    images = np.random.default_rng(1).uniform(-1, 1, (3, 3, SIZE, SIZE)).astype(np.float32)
    features = backend.encode(images)
    bank = with_places(features[:1], EVERYWHERE).reshape(-1, features.shape[-1] + PLACE_COLUMNS)
    anomaly_map, score = backend.decode(features[1:], bank)
    torch_map, torch_score = split.decode(features[1:], bank)
    np.testing.assert_allclose(anomaly_map, torch_map, atol=1e-4)
    np.testing.assert_allclose(score, torch_score, atol=1e-5)
    score_maps, anomaly_maps = score_and_anomaly_maps(backend, features[1:], bank, 152)
    np.testing.assert_allclose(score_maps.reshape(2, -1).max(1), score, atol=1e-5)
    assert np.array_equal(anomaly_maps, anomaly_map)
    assert (anomaly_maps >= score_maps - 1e-5).all()  # more parts, never a shorter distance
    same, again = score_and_anomaly_maps(backend, features[1:], bank, None)
    assert same is again


@pytest.fixture(scope="module")
def split_bundle(synth_root, tmp_path_factory):
    from edge_anomaly.export.build_bundle import build_bundle
    from edge_anomaly.fit_options import FitOptions

    options = FitOptions(image_size=SIZE, neighbourhood=(1, 3), score_neighbourhood=(3,))
    out = tmp_path_factory.mktemp("split") / "fabric"
    return build_bundle(synth_root / "fabric" / "train" / "good", out, 2, "fabric", options)


def test_the_map_gets_a_threshold_of_its_own_and_regions_are_cut_at_it(split_bundle, synth_root):
    from edge_anomaly import Inspector
    from edge_anomaly.evaluation import load_test_set

    manifest = split_bundle.manifest
    assert manifest.decoder.score_features == 152 and manifest.fit.score_neighbourhood == (3,)
    assert "3x3 parts only" in manifest.decoder.score
    assert manifest.threshold.map_value is not None and manifest.threshold.map_value > manifest.threshold.value
    insp = Inspector(split_bundle, backend="onnxruntime-cpu", llm="none")
    assert insp.map_threshold == manifest.threshold.map_value
    flagged = 0
    for item in load_test_set(synth_root / "fabric"):
        r = insp.inspect(str(item.path))
        assert r.to_dict()["map_threshold"] == round(insp.map_threshold, 6)
        if not r.is_anomalous:
            assert r.regions == ()
            continue
        flagged += 1
        assert r.regions, "a flagged frame names where"
        peak = float(r.anomaly_map.max())
        assert all(reg.peak_score >= min(insp.map_threshold, peak) - 1e-4 for reg in r.regions)
    assert flagged >= 4
    doubled = Inspector(split_bundle, backend="onnxruntime-cpu", threshold=2 * insp.threshold, llm="none")
    assert doubled.map_threshold == pytest.approx(2 * insp.map_threshold)  # an override moves both


def test_a_refit_on_the_edge_box_keeps_the_split(split_bundle, synth_root, tmp_path):
    from edge_anomaly import Inspector, open_bundle
    from edge_anomaly.images import list_images

    insp = Inspector(split_bundle, backend="onnxruntime-cpu", llm="none")
    calibration = insp.add_normal_shots([str(p) for p in list_images(synth_root / "fabric" / "train" / "good")])
    assert len(calibration.map_scores) == len(calibration.normal_scores) == 16
    assert all(m >= s - 2e-3 for m, s in zip(calibration.map_scores, calibration.normal_scores))  # sqrt of float noise
    assert insp.map_threshold == calibration.map_threshold != manifest_value(split_bundle)
    again = open_bundle(insp.save(tmp_path / "refit").root)
    assert again.manifest.threshold.map_value == pytest.approx(calibration.map_threshold)
    raised = insp.presume_normal([str(p) for p in list_images(synth_root / "fabric" / "test" / "good")])
    assert raised.map_threshold >= calibration.map_threshold and len(raised.map_scores) == 16 + 6


def manifest_value(bundle) -> float:
    return bundle.manifest.threshold.map_value


@pytest.mark.parametrize(
    "section, key, value, words",
    [
        ("decoder", "score_features", None, "threshold.map_value must be given exactly where"),
        ("encoder", "bank_features", 153, "encoder.bank_features must be null or 1-152"),
    ],
)
def test_a_manifest_whose_columns_disagree_is_refused(split_bundle, tmp_path, section, key, value, words):
    import hashlib
    import shutil

    from edge_anomaly import BundleError, open_bundle

    root = tmp_path / "b"
    shutil.copytree(split_bundle.root, root)
    manifest = json.loads((root / "manifest.json").read_text())
    manifest[section][key] = value
    text = json.dumps(manifest).encode()
    (root / "manifest.json").write_bytes(text)
    (root / "manifest.sha256").write_text(hashlib.sha256(text).hexdigest() + "\n")
    with pytest.raises(BundleError, match=words):
        open_bundle(root)


def test_presumed_normal_frames_raise_the_map_threshold_too():
    from edge_anomaly.calibration import Calibration, outlier_threshold, raise_to_presumed_normal

    quiet = Calibration(1.0, [0.8, 1.0], "quarters", 2.0, [1.9, 2.0])
    scores, maps = [1.0, 1.1, 1.2, 1.3], [2.5, 2.6, 2.7, 2.8]
    raised = raise_to_presumed_normal(quiet, scores, maps)
    assert raised.map_threshold == outlier_threshold(maps) and raised.map_scores == [1.9, 2.0, *maps]
    with pytest.raises(ValueError, match="a map maximum is needed"):
        raise_to_presumed_normal(quiet, scores)


def test_score_sizes_must_be_among_the_neighbourhood():
    from edge_anomaly import InputError
    from edge_anomaly.fit_options import FitOptions

    for wrong in [(5,), (), (3, 3)]:
        with pytest.raises(InputError, match="score_neighbourhood must be some of"):
            FitOptions(neighbourhood=(1, 3), score_neighbourhood=wrong)
    assert FitOptions(neighbourhood=(1, 3), score_neighbourhood=(1, 3)).score_neighbourhood == (1, 3)


def test_score_sizes_outside_the_neighbourhood_stop_the_export_in_one_line(synth_root, tmp_path, capsys):
    from edge_anomaly.cli import main

    normal = synth_root / "fabric" / "train" / "good"
    args = ["export", "--normal", str(normal), "--neighbourhood", "3", "--score-neighbourhood", "1"]
    assert main([*args, "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "score_neighbourhood must be some of the neighbourhood's sizes" in err[0]
    assert not (tmp_path / "b").exists()


def test_the_triton_model_of_a_split_bundle_answers_as_the_bundle(split_bundle, tmp_path):
    """The served decoder (the bank baked in) keeps both outputs apart: the map and the 3x3 score."""
    import onnxruntime as ort

    from edge_anomaly import Inspector
    from edge_anomaly.export.triton_repo import write_triton_repo
    from edge_anomaly.runtime.triton_protocol import MAP, SCORE

    insp = Inspector(split_bundle, backend="onnxruntime-cpu", llm="none")
    _, decoder, _ = write_triton_repo(split_bundle, tmp_path / "repo", max_batch=4)
    images = np.random.default_rng(2).normal(size=(2, 3, SIZE, SIZE)).astype(np.float32)
    features = insp.backend.encode(images)
    want_map, want_score = insp.backend.decode(features, insp.memory_bank)
    session = ort.InferenceSession(str(decoder / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    got_map, got_score = session.run([MAP, SCORE], {"features": features})
    np.testing.assert_allclose(got_map, want_map, atol=1e-5)
    np.testing.assert_allclose(got_score, want_score, atol=1e-5)
    assert (got_map.reshape(2, -1).max(1) > got_score + 0.01).all()


def test_the_split_decoder_builds_as_a_tensorrt_rtx_engine(split_bundle, tmp_path):
    """TensorRT-RTX parses and builds its graph on this CPU (running it needs a GPU: ``test_tensorrt``)."""
    import shutil

    pytest.importorskip("tensorrt_rtx_bindings", reason="TensorRT-RTX is not installed")
    from edge_anomaly import open_bundle
    from edge_anomaly.runtime.tensorrt_engines import EngineOptions, build_engines

    root = tmp_path / "b"
    shutil.copytree(split_bundle.root, root)
    build_engines(root, "rtx", EngineOptions(precision="fp16", max_batch=2))
    engines = {e.graph: e for e in open_bundle(root).manifest.engines}
    assert set(engines) == {"encoder", "decoder"} and (root / engines["decoder"].file).stat().st_size > 10_000


def test_the_bank_is_chosen_by_its_own_parts(synth_root):
    """``--bank-neighbourhood 3`` with ``--neighbourhood 1 3``: the coreset and the layout are decided on the
    3x3 parts, so the bank holds the very rows the 3x3 detector's bank holds, with their 1x1 parts beside."""
    from edge_anomaly.few_shot import fit_normal_shots
    from edge_anomaly.images import list_images, read_image

    narrow = build_graphs("lite0", SIZE, neighbourhood=(3,))
    wide = build_graphs("lite0", SIZE, neighbourhood=(1, 3), bank_neighbourhood=(3,))
    assert wide.sections.encoder.bank_features == 152 and wide.sections.decoder.score_features is None
    assert wide.encoder.parts == [(2, 3), (4, 3), (2, 1), (4, 1)]
    shots = [read_image(p) for p in list_images(synth_root / "fabric" / "train" / "good")[:1]]
    plain = fit_normal_shots(narrow, shots, narrow.preprocessing())
    chosen = fit_normal_shots(wide, shots, wide.preprocessing(), chosen_by=152)
    unchosen = fit_normal_shots(wide, shots, wide.preprocessing())
    assert plain.coreset and plain.augmentation == "dihedral"  # a coreset was made, so the choice shows
    np.testing.assert_allclose(chosen.memory_bank[:, :152], plain.memory_bank[:, :152], atol=1e-6)
    assert not np.array_equal(np.sort(unchosen.memory_bank[:, 0]), np.sort(chosen.memory_bank[:, 0]))
    assert chosen.calibration.map_threshold is None  # the score is the map's maximum: one threshold


def test_bank_sizes_must_be_among_the_score_sizes():
    from edge_anomaly import InputError
    from edge_anomaly.fit_options import FitOptions

    for options in [{"score_neighbourhood": (3,), "bank_neighbourhood": (1,)}, {"bank_neighbourhood": (5,)}]:
        with pytest.raises(InputError, match="bank_neighbourhood must be some of the score's sizes"):
            FitOptions(neighbourhood=(1, 3), **options)
