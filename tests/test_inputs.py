"""Frames as cameras deliver them are accepted; frames that cannot be used are refused clearly."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from edge_anomaly import InputError
from edge_anomaly.images import list_images, preprocess, read_image, to_rgb_uint8


@pytest.fixture(scope="module")
def defect_bgr(synth_root):
    path = next((synth_root / "fabric" / "test" / "stain").iterdir())
    return cv2.imread(str(path), cv2.IMREAD_COLOR)


def test_rgb_and_bgr_orders_give_the_same_result(inspector, defect_bgr):
    bgr = inspector.inspect(defect_bgr, color_order="bgr")
    rgb = inspector.inspect(np.ascontiguousarray(defect_bgr[:, :, ::-1]), color_order="rgb")
    assert bgr.score == pytest.approx(rgb.score, rel=1e-6)


def test_grey_frames_in_every_layout_agree(inspector, defect_bgr):
    grey = cv2.cvtColor(defect_bgr, cv2.COLOR_BGR2GRAY)
    scores = [inspector.inspect(f).score for f in (grey, grey[:, :, None], np.dstack([grey] * 3))]
    assert scores[0] == pytest.approx(scores[1], rel=1e-6) == pytest.approx(scores[2], rel=1e-6)


def test_16_bit_frames_are_scaled_not_clipped(inspector, defect_bgr):
    wide = defect_bgr.astype(np.uint16) * 257  # full 8-bit scale -> full 16-bit scale
    assert inspector.inspect(wide).score == pytest.approx(inspector.inspect(defect_bgr).score, rel=1e-5)


def test_rgba_alpha_is_dropped(inspector, defect_bgr):
    bgra = np.dstack([defect_bgr, np.full(defect_bgr.shape[:2], 7, np.uint8)])
    assert inspector.inspect(bgra).score == pytest.approx(inspector.inspect(defect_bgr).score, rel=1e-6)


def test_any_frame_size_is_resized_and_mapped_back(inspector, defect_bgr):
    big = cv2.resize(defect_bgr, (300, 200))
    result = inspector.inspect(big)
    assert result.anomaly_map.shape == (200, 300)
    for region in result.regions:
        x0, y0, x1, y1 = region.box
        assert 0 <= x0 < x1 <= 300 and 0 <= y0 < y1 <= 200


@pytest.mark.parametrize(
    "frame, message",
    [
        (np.zeros((10, 10, 3), np.uint8), "need at least 32"),
        (np.zeros((64, 64, 2), np.uint8), "HxWx3"),
        (np.zeros((64, 64, 3), np.int32), "dtype must be uint8, uint16"),
        (np.full((64, 64, 3), 2.0, np.float32), r"float frames must hold finite values in \[0, 1\]"),
        (np.zeros((2, 64, 64, 3), np.uint8), "got shape"),
        ("not-an-image.png", "does not exist"),
        ([[1, 2], [3, 4]], "at least one frame|numpy array"),
    ],
)
def test_unusable_frames_are_refused_with_reasons(inspector, frame, message):
    with pytest.raises(InputError, match=message):
        inspector.inspect(frame)


def test_corrupt_and_empty_files_are_refused(tmp_path):
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    (tmp_path / "empty.jpg").write_bytes(b"")
    for name in ("corrupt.png", "empty.jpg"):
        with pytest.raises(InputError, match=f"cannot decode image file .*{name}"):
            read_image(tmp_path / name)


def test_empty_folder_is_refused(tmp_path):
    with pytest.raises(InputError, match="holds no image files"):
        list_images(tmp_path)


def test_float_frames_in_unit_range_are_accepted():
    frame = np.linspace(0, 1, 64 * 64, dtype=np.float32).reshape(64, 64)
    rgb = to_rgb_uint8(frame)
    assert rgb.shape == (64, 64, 3) and rgb.dtype == np.uint8 and rgb.max() == 255


def test_preprocessing_normalises_each_channel_and_lays_out_channels_first():
    """The encoder's input is ``(pixel / 255 - mean) / std`` per channel, ``[3 x size x size]``: checked
    against that formula on a frame that is shrunk (area averaging) on the way."""
    rgb = np.random.default_rng(0).integers(0, 256, (300, 200, 3), dtype=np.uint8)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    shrunk = cv2.resize(rgb, (64, 64), interpolation=cv2.INTER_AREA).astype(np.float64) / 255
    expected = ((shrunk - mean) / std).transpose(2, 0, 1)
    got = preprocess(rgb, 64, mean, std)
    assert got.shape == (3, 64, 64) and got.dtype == np.float32 and got.flags["C_CONTIGUOUS"]
    assert np.abs(got - expected).max() < 1e-5
