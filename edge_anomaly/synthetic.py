"""Synthetic defect images in MVTec layout, with exact masks, for tests and the demo.

Normal images are different crops of a real texture (scikit-image ships brick,
grass and gravel photographs offline) or of a procedural woven fabric in
colour, so no two normals are the same picture. Defects are drawn on a normal
image and the mask records exactly the pixels that changed:

- ``scratch``: a thin bright or dark polyline;
- ``cut``: a short thick dark gash with a lighter rim;
- ``stain``: a soft coloured blob;
- ``cut_paste``: a rotated patch of another texture, Poisson-blended
  (``cv2.seamlessClone``), as in NSA / AnomalyGPT's simulated anomalies.

>>> generate_dataset("data/synth", categories=("brick",), size=128)

``python -m edge_anomaly.synthetic OUT`` writes the default set.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

DRAWN_DEFECTS = ("scratch", "cut", "stain")  # drawn on the image alone (cut_paste takes another image)
DEFECTS = (*DRAWN_DEFECTS, "cut_paste")
TEXTURES = ("brick", "grass", "gravel", "fabric")
CHANGED = 12  # a pixel counts as defective when some channel moved by more than this


def texture_source(name: str, seed: int = 0) -> np.ndarray:
    """A large RGB uint8 texture to crop normal images from."""
    if name == "fabric":
        return _fabric(768, seed)
    if name not in TEXTURES:
        raise ValueError(f"unknown texture {name!r}: expected one of {TEXTURES}")
    from skimage import data  # noqa: PLC0415  (only the generator needs scikit-image)

    grey = getattr(data, name)()
    big = cv2.resize(grey, (768, 768), interpolation=cv2.INTER_CUBIC)
    return np.repeat(big[:, :, None], 3, axis=2)


def _fabric(side: int, seed: int) -> np.ndarray:
    """A woven twill in blue-grey with thread noise: a colour texture needing no download."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:side, 0:side].astype(np.float32)
    weave = 0.5 + 0.25 * np.sin((x + y) * 0.45) + 0.15 * np.sin(x * 0.9) * np.sin(y * 0.9)
    weave += rng.normal(0, 0.04, (side, side)).astype(np.float32)
    weave = cv2.GaussianBlur(weave, (0, 0), 0.8)
    base = np.array([150, 120, 90], np.float32)  # BGR-agnostic: stored as RGB
    rgb = np.clip(weave[:, :, None] * base[None, None, :] * 1.4, 0, 255)
    return rgb.astype(np.uint8)


def normal_image(source: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """A random crop (with mild lighting change) of ``source`` resized to ``size``."""
    crop = int(min(source.shape[:2]) * 0.6)
    y = rng.integers(0, source.shape[0] - crop + 1)
    x = rng.integers(0, source.shape[1] - crop + 1)
    patch = cv2.resize(source[y : y + crop, x : x + crop], (size, size), interpolation=cv2.INTER_AREA)
    return np.clip(patch.astype(np.float32) * rng.uniform(0.95, 1.05), 0, 255).astype(np.uint8)


def defect_line(count: int, defective: Callable[[int], bool], seed: int, size: int = 256) -> list[np.ndarray]:
    """``count`` BGR frames of the fabric as a line camera gives them, a cut on each frame ``defective(i)``
    picks: the stream tests' line."""
    rng = np.random.default_rng(seed)
    source = texture_source("fabric")
    frames = []
    for i in range(count):
        rgb = normal_image(source, size, rng)
        if defective(i):
            rgb, _ = add_defect(rgb, "cut", rng)
        frames.append(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return frames


def add_defect(
    image: np.ndarray, kind: str, rng: np.random.Generator, other: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Draw one defect of ``kind`` on RGB ``image``; returns ``(defective image, mask uint8 0/255)``."""
    size = image.shape[0]
    if kind == "scratch":
        out = _scratch(image, rng)
    elif kind == "cut":
        out = _cut(image, rng)
    elif kind == "stain":
        out = _stain(image, rng)
    elif kind == "cut_paste":
        out = _cut_paste(image, other if other is not None else _fabric(size * 2, int(rng.integers(1 << 16))), rng)
    else:
        raise ValueError(f"unknown defect {kind!r}: expected one of {DEFECTS}")
    if _is_grey(image):  # a grey part stays grey: the defect must show in shape and tone, not colour
        out = np.repeat(cv2.cvtColor(out, cv2.COLOR_RGB2GRAY)[:, :, None], 3, axis=2)
    changed = np.abs(out.astype(np.int16) - image.astype(np.int16)).max(axis=2) > CHANGED
    mask = cv2.morphologyEx(changed.astype(np.uint8) * 255, cv2.MORPH_CLOSE, np.ones((3, 3), np.uint8))
    return out, mask


def _is_grey(image: np.ndarray) -> bool:
    return bool((image[:, :, 0] == image[:, :, 1]).all() and (image[:, :, 1] == image[:, :, 2]).all())


def _point(size: int, rng: np.random.Generator, margin: float = 0.15) -> np.ndarray:
    return rng.uniform(size * margin, size * (1 - margin), 2)


def _scratch(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    size = image.shape[0]
    start = _point(size, rng)
    angle = rng.uniform(0, np.pi)
    length = rng.uniform(0.25, 0.45) * size
    points = [
        start + t * length * np.array([np.cos(angle), np.sin(angle)]) + rng.normal(0, size * 0.01, 2)
        for t in np.linspace(0, 1, 6)
    ]
    color = (250, 250, 245) if image.mean() < 128 else (15, 15, 20)
    out = image.copy()
    cv2.polylines(out, [np.int32(points)], False, color, max(1, size // 100), cv2.LINE_AA)
    return out


def _cut(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    size = image.shape[0]
    center = _point(size, rng)
    axes = (int(size * rng.uniform(0.06, 0.1)), int(size * rng.uniform(0.015, 0.03)))
    angle = float(rng.uniform(0, 180))
    out = image.copy()
    cv2.ellipse(
        out, tuple(int(c) for c in center), (axes[0] + 2, axes[1] + 2), angle, 0, 360, (230, 225, 215), -1, cv2.LINE_AA
    )
    cv2.ellipse(out, tuple(int(c) for c in center), axes, angle, 0, 360, (10, 8, 6), -1, cv2.LINE_AA)
    return out


def _stain(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    size = image.shape[0]
    blob = np.zeros(image.shape[:2], np.float32)
    center = _point(size, rng)
    axes = (int(size * rng.uniform(0.07, 0.13)), int(size * rng.uniform(0.05, 0.1)))
    cv2.ellipse(blob, tuple(int(c) for c in center), axes, float(rng.uniform(0, 180)), 0, 360, 1.0, -1)
    alpha = cv2.GaussianBlur(blob, (0, 0), size * 0.015)[:, :, None] * 0.8
    tint = np.array([rng.uniform(90, 160), rng.uniform(40, 80), rng.uniform(10, 40)], np.float32)
    return np.clip(image * (1 - alpha) + tint * alpha, 0, 255).astype(np.uint8)


def _cut_paste(image: np.ndarray, other: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    size = image.shape[0]
    side = int(size * rng.uniform(0.15, 0.25))
    y, x = rng.integers(0, other.shape[0] - side), rng.integers(0, other.shape[1] - side)
    patch = other[y : y + side, x : x + side]
    rot = cv2.getRotationMatrix2D((side / 2, side / 2), float(rng.uniform(0, 360)), 1.0)
    patch = cv2.warpAffine(patch, rot, (side, side), borderMode=cv2.BORDER_REFLECT_101)
    patch = np.clip(patch.astype(np.float32) * rng.uniform(0.6, 0.8), 0, 255).astype(np.uint8)
    patch_mask = np.zeros((side, side), np.uint8)
    cv2.ellipse(
        patch_mask, (side // 2, side // 2), (side // 2 - 2, side // 3), float(rng.uniform(0, 180)), 0, 360, 255, -1
    )
    center = tuple(int(c) for c in _point(size, rng, margin=0.2))
    return cv2.seamlessClone(patch, image, patch_mask, center, cv2.NORMAL_CLONE)


def generate_category(
    out_root: Path, texture: str, size: int = 256, n_train: int = 8, n_good: int = 4, n_defect: int = 8, seed: int = 0
) -> Path:
    """Write one MVTec-layout category named after ``texture``; defects cycle through ``DEFECTS``."""
    rng = np.random.default_rng(seed)
    source = texture_source(texture, seed)
    other = texture_source("gravel" if texture != "gravel" else "brick", seed + 1) if texture != "fabric" else None
    root = Path(out_root) / texture
    for i in range(n_train):
        _write(root / "train" / "good" / f"{i:03d}.png", normal_image(source, size, rng))
    for i in range(n_good):
        _write(root / "test" / "good" / f"{i:03d}.png", normal_image(source, size, rng))
    for i in range(n_defect):
        kind = DEFECTS[i % len(DEFECTS)]
        defective, mask = add_defect(normal_image(source, size, rng), kind, rng, other)
        _write(root / "test" / kind / f"{i:03d}.png", defective)
        _write(root / "ground_truth" / kind / f"{i:03d}_mask.png", mask, is_mask=True)
    return root


def generate_dataset(
    out_root: str | Path, categories: tuple[str, ...] = TEXTURES, size: int = 256, seed: int = 0, **counts: int
) -> list[Path]:
    return [generate_category(Path(out_root), c, size, seed=seed + i, **counts) for i, c in enumerate(categories)]


def write_demo_samples(out: Path, texture: str = "fabric", size: int = 256, seed: int = 7) -> None:
    """The demo's bundled images: ``train/`` normals, ``test/good_*`` and ``test/defect_<kind>_*``."""
    rng = np.random.default_rng(seed)
    source = texture_source(texture, seed)
    for i in range(4):
        _write(out / "train" / f"normal_{i}.png", normal_image(source, size, rng))
    for i in range(3):
        _write(out / "test" / f"good_{i}.png", normal_image(source, size, rng))
    for kind in DEFECTS:
        defective, _ = add_defect(normal_image(source, size, rng), kind, rng)
        _write(out / "test" / f"defect_{kind}.png", defective)


def _write(path: Path, image: np.ndarray, is_mask: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if is_mask or _is_grey(image):  # grey parts are written as 8-bit grey PNGs, as grey cameras deliver them
        data = image if is_mask else image[:, :, 0]
    else:
        data = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    if not cv2.imwrite(str(path), data):
        raise OSError(f"cannot write {path}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="write synthetic MVTec-layout categories with exact defect masks")
    parser.add_argument("out", type=Path)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--categories", nargs="+", default=list(TEXTURES), choices=TEXTURES)
    a = parser.parse_args()
    for path in generate_dataset(a.out, tuple(a.categories), a.size, a.seed):
        print(path)
