"""The encoder is the real ImageNet EfficientNet-Lite, and its ONNX graphs match torch."""

from __future__ import annotations

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from edge_anomaly.export.efficientnet_lite import load_efficientnet_lite
from edge_anomaly.export.encoders import resolve_encoder
from edge_anomaly.export.onnx_export import build_graphs, export_onnx
from edge_anomaly.images import preprocess
from edge_anomaly.placement import EVERYWHERE, REACH, free_rows

ESPRESSO, EGYPTIAN_CAT = 967, 285
ONNX_TOLERANCE = 1e-4  # absolute, on features of unit norm per stage and on distances of order 1


def _imagenet_top1(model, rgb: np.ndarray) -> tuple[int, float]:
    x = torch.from_numpy(preprocess(rgb, 224, (0.5,) * 3, (0.5,) * 3))[None]
    with torch.no_grad():
        probs = model.classify(x).softmax(-1)[0]
    return int(probs.argmax()), float(probs.max())


def test_lite0_weights_are_the_real_imagenet_ones():
    from skimage import data

    model = load_efficientnet_lite(resolve_encoder("lite0").checkpoint)
    label, confidence = _imagenet_top1(model, data.coffee())
    assert label == ESPRESSO and confidence > 0.8
    assert _imagenet_top1(model, data.chelsea())[0] == EGYPTIAN_CAT


@pytest.mark.parametrize("name, stage4_width", [("lite1", 112), ("lite2", 120)])
def test_larger_lites_load_strictly_from_their_packages(name, stage4_width):
    model = load_efficientnet_lite(resolve_encoder(name).checkpoint)
    assert model.stage_channels[4] == stage4_width
    outputs = model.stage_outputs(torch.zeros(1, 3, 128, 128), 4)
    assert outputs[2].shape[-1] == 16 and outputs[4].shape[-1] == 8


def test_unknown_encoder_name_is_refused():
    with pytest.raises(ValueError, match="unknown encoder"):
        resolve_encoder("resnet50")


def test_image_size_must_suit_the_strides():
    with pytest.raises(ValueError, match="multiple of 16"):
        build_graphs("lite0", 250)


def test_onnx_graphs_match_torch(tmp_path):
    graphs = build_graphs("lite0", 128)
    encoder_path, decoder_path = export_onnx(graphs, tmp_path)
    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, (2, 3, 128, 128)).astype(np.float32)
    features = rng.normal(0, 0.1, (300, graphs.sections.encoder.feature_dim))
    places = rng.integers(0, 16, (300, 2))
    reach = rng.choice([1.0, REACH, EVERYWHERE], (300, 1))  # aligned and free rows: the reach mask runs in ONNX too
    bank = np.concatenate([features, places, reach], axis=1).astype(np.float32)

    with torch.no_grad():
        features_torch = graphs.encoder(torch.from_numpy(images))
        map_torch, score_torch = graphs.decoder(features_torch, torch.from_numpy(bank))
    encoder = ort.InferenceSession(str(encoder_path), providers=["CPUExecutionProvider"])
    decoder = ort.InferenceSession(str(decoder_path), providers=["CPUExecutionProvider"])
    features_onnx = encoder.run(None, {"image": images})[0]
    map_onnx, score_onnx = decoder.run(None, {"features": features_onnx, "memory_bank": bank})

    assert features_onnx.shape == (2, 16 * 16, graphs.sections.encoder.feature_dim)
    assert np.abs(features_onnx - features_torch.numpy()).max() < ONNX_TOLERANCE
    assert map_onnx.shape == (2, 128, 128)
    assert np.abs(map_onnx - map_torch.numpy()).max() < ONNX_TOLERANCE
    assert np.abs(score_onnx - score_torch.numpy()).max() < ONNX_TOLERANCE


def test_decoder_takes_a_memory_bank_of_any_length(tmp_path):
    graphs = build_graphs("lite0", 64, head_weight=0.0)
    _, decoder_path = export_onnx(graphs, tmp_path)
    decoder = ort.InferenceSession(str(decoder_path), providers=["CPUExecutionProvider"])
    dim = graphs.sections.encoder.feature_dim
    features = np.zeros((1, 64, dim), np.float32)
    for size in (1, 17, 5000):
        bank = np.concatenate([np.ones((size, dim)), np.tile([0, 0, EVERYWHERE], (size, 1))], axis=1)
        bank = bank.astype(np.float32)
        anomaly_map, score = decoder.run(None, {"features": features, "memory_bank": bank})
        expected = np.sqrt(dim)  # distance from the zero vector to the all-ones vector
        assert score[0] == pytest.approx(expected, rel=1e-4)
        assert anomaly_map.shape == (1, 64, 64)


@pytest.mark.parametrize("reach, far", [(14.0, True), (15.0, False)])
def test_exported_decoder_drops_the_place_columns_only_where_every_row_reaches_everywhere(tmp_path, reach, far):
    graphs = build_graphs("lite0", 128, head_weight=0.0)  # a 16 x 16 grid: reach 15 spans it, 14 does not
    _, decoder_path = export_onnx(graphs, tmp_path)
    assert [n.op_type for n in onnx.load(str(decoder_path)).graph.node][-1] == "If"
    dim = graphs.sections.encoder.feature_dim
    a, b = np.zeros(dim, np.float32), np.zeros(dim, np.float32)
    a[0], b[1] = 1.0, 1.0
    # Row a sits at the grid's first corner with ``reach``; row b reaches everywhere. The query is b
    # everywhere but at the far corner, where it is a: 15 cells from row a in both directions.
    bank = np.stack([np.concatenate([a, [0, 0, reach]]), np.concatenate([b, [0, 0, EVERYWHERE]])]).astype(np.float32)
    query = np.tile(b, (1, 256, 1))
    query[0, -1] = a
    decoder = ort.InferenceSession(str(decoder_path), providers=["CPUExecutionProvider"])
    _, score = decoder.run(None, {"features": query, "memory_bank": bank})
    with torch.no_grad():
        _, expected = graphs.decoder(torch.from_numpy(query), torch.from_numpy(bank))  # the full search
    assert score[0] == pytest.approx(float(expected[0]), abs=1e-5)
    assert (score[0] > 0.1) == far  # out of reach, a finds only b (sqrt 2 away, smoothed); within it, itself
    assert graphs.decode(query, bank)[1][0] == pytest.approx(float(expected[0]), abs=1e-5)  # torch takes it too


def test_text_free_head_is_added_to_the_bank_distance_inside_the_decoder():
    from edge_anomaly.export.head_model import HEAD_WEIGHT, load_head
    from edge_anomaly.export.onnx_export import MEAN, STD
    from edge_anomaly.images import preprocess
    from edge_anomaly.synthetic import add_defect, normal_image, texture_source

    rng = np.random.default_rng(1)
    source = texture_source("fabric")
    normal = normal_image(source, 256, rng)
    defective, mask = add_defect(normal_image(source, 256, rng), "cut", rng)
    with_head, plain = build_graphs("lite0", 256), build_graphs("lite0", 256, head_weight=0.0)
    assert with_head.sections.decoder.text_free_head.weight == HEAD_WEIGHT
    assert plain.sections.decoder.text_free_head is None
    batch = np.stack([preprocess(im, 256, MEAN, STD) for im in (normal, defective)])
    with torch.no_grad():
        features = with_head.encoder(torch.from_numpy(batch))
        bank = torch.from_numpy(free_rows(features[0].numpy()))
        head = load_head()(features)
        expected, _ = plain.decoder.image_map(plain.decoder.patch_distances(features, bank)[0] + HEAD_WEIGHT * head)
        anomaly_map, score = with_head.decoder(features, bank)
    assert torch.allclose(anomaly_map, expected, atol=1e-5)
    assert torch.allclose(score, anomaly_map.flatten(1).amax(1))
    defect_patches = torch.from_numpy(cv2.resize(mask, (32, 32), interpolation=cv2.INTER_AREA) > 64).flatten()
    # trained at 256 px on simulated defects: a cut stands out of the fabric around it
    assert float(head[1][defect_patches].max()) > 0.4 > 0.01 > float(head[1][~defect_patches].median())


def test_more_stages_and_sizes_keep_the_default_parts_and_the_head_reads_them():
    """``--stages 2 4 6 --neighbourhood 1 3 5``: the default encoder's parts are among the wider feature's
    columns, unchanged, so the head (trained on them) scores each patch exactly as it does by default."""
    narrow, wide = build_graphs("lite0", 128), build_graphs("lite0", 128, (2, 4, 6), None, "stage", (1, 3, 5))
    assert wide.sections.encoder.aggregation.startswith("1x1 and 3x3 and 5x5 local mean")
    assert wide.encoder.feature_dim == 3 * (40 + 112 + 320) and wide.decoder.head is not None
    images = torch.from_numpy(np.random.default_rng(0).uniform(-1, 1, (2, 3, 128, 128)).astype(np.float32))
    with torch.no_grad():
        f_narrow, f_wide = narrow.encoder(images), wide.encoder(images)
        for stage, (a, b) in zip((2, 4), narrow.decoder.head.slices):
            first, end = wide.encoder.part_columns(stage, 3)
            assert torch.allclose(f_wide[..., first:end], f_narrow[..., a:b], atol=1e-6)
        assert torch.allclose(wide.decoder.head(f_wide), narrow.decoder.head(f_narrow), atol=1e-6)
        (a1, b1), (a3, b3) = wide.encoder.part_columns(2, 1), wide.encoder.part_columns(2, 3)
        assert (f_wide[..., a1:b1] - f_wide[..., a3:b3]).abs().max() > 0.05  # each size is its own part
    with pytest.raises(ValueError, match="head weight"):
        build_graphs("lite0", 64, (2, 4), 0.5, "stage", (1, 5))  # the head's 3x3 parts are not there


def test_text_free_head_only_joins_the_encoder_it_was_trained_on():
    with pytest.raises(ValueError, match="head weight"):
        build_graphs("lite1", 64, head_weight=0.5)
    assert build_graphs("lite1", 64).sections.decoder.text_free_head is None


def test_text_free_head_round_trips_as_plain_arrays(tmp_path):
    from edge_anomaly.export.head_model import ASSET, load_head, save_head

    with np.load(ASSET, allow_pickle=False) as arrays:  # the shipped asset holds no pickled object
        assert arrays["prototypes"].shape[:2] == (2, 2)
    head = load_head(ASSET)
    save_head(head, tmp_path / "head.npz")
    again = load_head(tmp_path / "head.npz")
    features = torch.randn(1, 5, sum(p.in_features for p in head.projections))
    with torch.no_grad():
        assert torch.equal(head(features), again(features))


def test_shots_feature_norm_divides_each_stage_by_its_mean_norm_on_the_shots(synth_root, tmp_path):
    """``--feature-norm shots``: stages weigh alike on the shots while each patch keeps its magnitude."""
    from edge_anomaly import Inspector
    from edge_anomaly.export.build_bundle import build_bundle
    from edge_anomaly.fit_options import FitOptions
    from edge_anomaly.images import read_image

    normal = synth_root / "fabric" / "train" / "good"
    bundle = build_bundle(normal, tmp_path / "b", 2, "fabric", FitOptions(image_size=64, feature_norm="shots"))
    assert bundle.manifest.encoder.feature_norm == "shots" and "mean norm on the shots" in (
        bundle.manifest.encoder.aggregation
    )
    assert bundle.manifest.decoder.text_free_head is None  # the head was trained on per-patch L2 features
    insp = Inspector(bundle, backend="onnxruntime-cpu", llm="none")
    shots = [read_image(p) for p in bundle.files_of("normal_shot")]
    features = insp.backend.encode(insp.preprocessing.batch(shots))
    assert bundle.manifest.encoder.feature_dim == 40 + 112  # Lite0 stages 2 and 4
    for stage in (features[..., :40], features[..., 40:]):
        norms = np.linalg.norm(stage, axis=-1)
        assert abs(norms.mean() - 1.0) < 0.05 and norms.std() > 0.01  # unit on average, not per patch


def test_balanced_feature_norm_weights_the_stages_by_their_spread_on_the_shots(synth_root, tmp_path):
    """``--feature-norm balanced``: per-stage unit features, each part divided by a constant from the shots that
    equalises its typical nearest-neighbour distance; the head reads what it was trained on."""
    from edge_anomaly.errors import InputError
    from edge_anomaly.export.build_bundle import build_bundle
    from edge_anomaly.export.stage_balance import balanced_scales, nearest_distances
    from edge_anomaly.fit_options import FitOptions
    from edge_anomaly.images import read_image

    normal = synth_root / "fabric" / "train" / "good"
    bundle = build_bundle(normal, tmp_path / "b", 2, "fabric", FitOptions(image_size=64, feature_norm="balanced"))
    assert bundle.manifest.encoder.feature_norm == "balanced" and "balanced on shots" in (
        bundle.manifest.encoder.aggregation
    )
    assert bundle.manifest.decoder.text_free_head is not None
    shots = [read_image(p) for p in bundle.files_of("normal_shot")]

    plain = build_graphs("lite0", 64, feature_norm="stage")
    balanced = build_graphs("lite0", 64, feature_norm="balanced").with_balanced_scales(shots)
    scales = balanced.encoder.stage_scales.numpy()
    assert np.isclose(np.sqrt(np.mean(scales**2)), 1.0) and abs(scales[0] - scales[1]) > 0.01
    assert f"{[round(float(s), 6) for s in scales]}" in balanced.sections.encoder.aggregation
    with pytest.raises(ValueError, match="before any divisor"):
        balanced_scales(balanced, shots)  # measured once, on unit features
    sizes = build_graphs("lite0", 64, feature_norm="balanced", neighbourhood=(1, 3)).with_balanced_scales(shots)
    by_part = dict(zip(sizes.encoder.parts, sizes.encoder.stage_scales.tolist()))
    assert by_part[(2, 1)] == by_part[(2, 3)] and by_part[(4, 1)] == by_part[(4, 3)]  # one weight per stage
    assert by_part[(2, 3)] != by_part[(4, 3)]
    flat = build_graphs("lite0", 64, feature_norm="balanced")
    with pytest.raises(InputError, match="no spread"):
        balanced_scales(flat, [np.full((64, 64, 3), 128, np.uint8)])
    x = torch.from_numpy(balanced.preprocessing().batch(shots))
    with torch.no_grad():
        f_plain, f_balanced = plain.encoder(x), balanced.encoder(x)
        for k, (a, b) in enumerate([(0, 40), (40, 152)]):  # Lite0 stages 2 and 4, 3x3 parts
            assert torch.allclose(f_balanced[..., a:b] * float(scales[k]), f_plain[..., a:b], atol=1e-5)
        assert torch.allclose(balanced.decoder.head(f_balanced), plain.decoder.head(f_plain), atol=1e-5)

    rows = np.random.default_rng(0).standard_normal((1100, 7)).astype(np.float32)  # more than one block of rows
    full = np.linalg.norm(rows[:, None] - rows[None], axis=-1) + np.diag(np.full(1100, np.inf))
    assert np.allclose(nearest_distances(rows), full.min(1), atol=1e-4)


@pytest.mark.parametrize("grid, size", [((32, 32), (256, 256)), ((4, 4), (64, 64)), ((5, 8), (80, 128))])
def test_map_operators_equal_bilinear_upsampling_then_reflected_gaussian_smoothing(grid, size):
    """The decoder's two matmuls are PatchCore's upsample-and-smooth, computed the long way here."""
    from torch.nn import functional as F

    from edge_anomaly.export.patch_model import NearestNeighbourDecoder, gaussian_kernel

    scores = torch.rand(3, grid[0] * grid[1], generator=torch.Generator().manual_seed(0))
    anomaly_map, score = NearestNeighbourDecoder(grid, size, sigma=4.0).image_map(scores)
    k = gaussian_kernel(4.0)
    r = (k.numel() - 1) // 2
    pixel = F.interpolate(scores.view(3, 1, *grid), size=size, mode="bilinear", align_corners=False)
    pixel = F.conv2d(F.pad(pixel, (r, r, 0, 0), mode="reflect"), k.view(1, 1, 1, -1))
    pixel = F.conv2d(F.pad(pixel, (0, 0, r, r), mode="reflect"), k.view(1, 1, -1, 1))[:, 0]
    assert anomaly_map.shape == (3, *size)
    assert torch.allclose(anomaly_map, pixel, atol=1e-5)
    assert torch.equal(score, anomaly_map.flatten(1).amax(1))


def test_a_stride_4_stage_puts_the_bank_on_its_finer_grid(synth_root, tmp_path):
    """``--stages 1 2 4``: the grid is the finest stage's (stride 4), and the bundle opens and inspects."""
    from edge_anomaly import Inspector
    from edge_anomaly.export.build_bundle import build_bundle
    from edge_anomaly.fit_options import FitOptions
    from edge_anomaly.images import read_image

    normal = synth_root / "fabric" / "train" / "good"
    bundle = build_bundle(normal, tmp_path / "b", 1, "fabric", FitOptions(image_size=64, stages=(1, 2, 4)))
    assert bundle.manifest.encoder.strides == (4, 8, 16) and bundle.manifest.encoder.grid == (16, 16)
    insp = Inspector(bundle, backend="onnxruntime-cpu", llm="none")
    frame = read_image(next(iter(sorted((synth_root / "fabric" / "test").rglob("*.png")))))
    result = insp.inspect(frame)
    assert result.anomaly_map.shape == frame.shape[:2] and np.isfinite(result.score)


def test_the_stage_strides_known_before_torch_loads_are_the_backbones():
    from edge_anomaly.export.efficientnet_lite import EfficientNetLite
    from edge_anomaly.fit_options import STAGE_OUTPUT_STRIDES, size_step

    assert tuple(EfficientNetLite.strides()) == STAGE_OUTPUT_STRIDES
    assert size_step((2, 4)) == 16 and size_step((1, 2, 4)) == 16 and size_step((6,)) == 64
