"""Reading and normalizing the frames a factory actually produces.

Cameras hand us grey, 16-bit, BGR, RGBA and odd-sized frames. Everything is
brought to one form here, RGB uint8 ``[H x W x 3]``, and anything that cannot be
is refused with a message that says what was expected and what was found.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .errors import InputError

ImageLike = str | Path | np.ndarray

MIN_SIDE = 32
# The largest frame accepted, in pixels (OpenCV's decoder limit, set in ``edge_anomaly/__init__``): far above
# any line camera (a 151 MP sensor is the largest sold), far below what would exhaust an edge box's memory.
MAX_PIXELS = int(os.environ.get("OPENCV_IO_MAX_IMAGE_PIXELS", 100_000_000))
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as RGB uint8; corrupt, missing or empty files raise ``InputError``."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"image file {path} does not exist")
    data = np.fromfile(path, dtype=np.uint8)
    image = decode_image(data, path)
    if image is None:
        raise InputError(f"cannot decode image file {path}: not an image or corrupt")
    try:
        return to_rgb_uint8(image, color_order="bgr")
    except InputError as exc:
        raise InputError(f"{path}: {exc}") from None


def decode_image(data: np.ndarray, path: str | Path) -> np.ndarray | None:
    """Encoded bytes -> the image as stored (OpenCV order), or None when they are no image; an image of
    more than ``MAX_PIXELS`` pixels raises ``InputError`` before it is decoded."""
    if not data.size:
        return None
    try:
        return cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:
        if "CV_IO_MAX_IMAGE_PIXELS" in str(exc):
            raise InputError(f"image file {path} has more than {MAX_PIXELS:,} pixels; refused unread") from None
        return None


def to_rgb_uint8(frame: np.ndarray, color_order: str = "bgr") -> np.ndarray:
    """Any supported frame -> contiguous RGB uint8 ``[H x W x 3]``.

    Supported: ``HxW``, ``HxWx1``, ``HxWx3`` and ``HxWx4`` (alpha dropped), in
    uint8 or uint16 (scaled by 1/257 so full scale maps to full scale), or float
    in ``[0, 1]``. ``color_order`` says how 3- and 4-channel frames are ordered:
    ``"bgr"`` as OpenCV delivers them, or ``"rgb"``.
    """
    if not isinstance(frame, np.ndarray):
        raise InputError(f"frame must be a numpy array or an image path, got {type(frame).__name__}")
    if color_order not in ("bgr", "rgb"):
        raise InputError(f"color_order must be 'bgr' or 'rgb', got {color_order!r}")
    shape_ok = frame.ndim == 2 or (frame.ndim == 3 and frame.shape[2] in (1, 3, 4))
    if not shape_ok:
        raise InputError(f"frame must be HxW, HxWx1, HxWx3 or HxWx4, got shape {frame.shape} {frame.dtype}")
    if min(frame.shape[:2]) < MIN_SIDE:
        raise InputError(f"frame is {frame.shape[1]}x{frame.shape[0]} pixels, need at least {MIN_SIDE} on each side")
    if frame.shape[0] * frame.shape[1] > MAX_PIXELS:
        raise InputError(f"frame is {frame.shape[1]}x{frame.shape[0]} pixels, more than the {MAX_PIXELS:,} accepted")
    frame = _to_uint8(frame)
    if frame.ndim == 2 or frame.shape[2] == 1:
        return np.ascontiguousarray(np.repeat(frame.reshape(frame.shape[0], frame.shape[1], 1), 3, axis=2))
    frame = frame[:, :, :3]
    return np.ascontiguousarray(frame[:, :, ::-1] if color_order == "bgr" else frame)


def _to_uint8(frame: np.ndarray) -> np.ndarray:
    if frame.dtype == np.uint8:
        return frame
    if frame.dtype == np.uint16:
        return (frame.astype(np.uint32) * 255 // 65535).astype(np.uint8)
    if frame.dtype in (np.float32, np.float64):
        if not np.isfinite(frame).all() or frame.min() < 0 or frame.max() > 1:
            raise InputError("float frames must hold finite values in [0, 1]")
        return np.round(frame * 255).astype(np.uint8)
    raise InputError(f"frame dtype must be uint8, uint16 or float in [0, 1], got {frame.dtype}")


def as_rgb(image: ImageLike, color_order: str = "bgr") -> np.ndarray:
    """A path or an array -> RGB uint8."""
    if isinstance(image, (str, Path)):
        return read_image(image)
    return to_rgb_uint8(image, color_order)


def resize_square(rgb: np.ndarray, size: int) -> np.ndarray:
    """Squash to ``size x size`` (area-averaging when shrinking, so thin defects are not skipped)."""
    if rgb.shape[:2] == (size, size):
        return rgb
    interpolation = cv2.INTER_AREA if min(rgb.shape[:2]) > size else cv2.INTER_LINEAR
    return cv2.resize(rgb, (size, size), interpolation=interpolation)


def preprocess(rgb: np.ndarray, size: int, mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """RGB uint8 ``[H x W x 3]`` -> normalized float32 ``[3 x size x size]`` for the encoder.

    OpenCV's blob maker scales, centres and transposes in one pass over the pixels: on a 2-core box it is
    about half the time of doing the three in numpy, on the path every frame takes."""
    params = cv2.dnn.Image2BlobParams()
    params.scalefactor = tuple(1.0 / (255.0 * s) for s in std)
    params.mean = tuple(255.0 * m for m in mean)
    return cv2.dnn.blobFromImageWithParams(resize_square(rgb, size), params)[0]


@dataclass(frozen=True)
class Preprocessing:
    """How frames are brought to the encoder's input: the bundle's size, mean and std."""

    size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def batch(self, images: list[np.ndarray]) -> np.ndarray:
        """RGB uint8 images -> ``[B x 3 x size x size]`` float32."""
        return np.stack([preprocess(im, self.size, self.mean, self.std) for im in images])


def list_images(folder: str | Path) -> list[Path]:
    """Image files directly inside ``folder``, sorted; an empty or missing folder is an error."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder} is not a folder")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise InputError(f"{folder} holds no image files ({', '.join(IMAGE_SUFFIXES)})")
    return files
