"""Fitting a detector to a handful of normal images: memory bank plus calibrated threshold.

One code path for the build host (``edge-anomaly export``) and the edge box
(``Inspector.add_normal_shots``): both run the exported graphs through a
runtime backend, so the bank and threshold a bundle records are exactly what
the edge box would compute itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from . import bundle_format as fmt
from .bundle import Bundle, seal_bundle
from .calibration import Calibration, calibrate_held_out_quarters
from .images import preprocess, resize_square
from .memory_bank import DEFAULT_MAX_SIZE, build_memory_bank
from .shot_views import DEFAULT_AUGMENTATION, bank_limit, patch_sources, resolve_augmentation, shot_views

ENCODE_BATCH = 8


@dataclass(frozen=True)
class Preprocessing:
    size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def batch(self, images: list[np.ndarray]) -> np.ndarray:
        """RGB uint8 images -> ``[B x 3 x size x size]`` float32."""
        return np.stack([preprocess(im, self.size, self.mean, self.std) for im in images])


@dataclass(frozen=True)
class FewShotFit:
    shots: list[np.ndarray]  # RGB uint8 at the input size
    memory_bank: np.ndarray
    calibration: Calibration
    coreset: bool
    augmentation: str = "none"  # as applied
    augmentation_requested: str = "none"  # as asked ("auto" is resolved again when shots are added)


def encode_images(backend, images: list[np.ndarray], prep: Preprocessing) -> np.ndarray:
    """RGB images -> patch features ``[B x N x D]``, encoded in small batches to bound memory."""
    parts = [backend.encode(prep.batch(images[i : i + ENCODE_BATCH])) for i in range(0, len(images), ENCODE_BATCH)]
    return np.concatenate(parts)


def fit_normal_shots(
    backend,
    shots: list[np.ndarray],
    prep: Preprocessing,
    max_bank: int = DEFAULT_MAX_SIZE,
    seed: int = 0,
    augmentation: str = DEFAULT_AUGMENTATION,
) -> FewShotFit:
    """Normal RGB shots (and their views, see ``shot_views``) -> memory bank and threshold, without any
    anomalous image."""
    if not shots:
        raise ValueError("at least one normal shot is needed")
    shots = [resize_square(shot, prep.size) for shot in shots]
    requested, augmentation = augmentation, resolve_augmentation(augmentation, len(shots))
    views = [v for shot in shots for v in shot_views(shot, augmentation)]
    n_views = len(views) // len(shots)
    features = encode_images(backend, views, prep)
    features = features.reshape(len(shots), n_views, *features.shape[1:])

    dim = features.shape[-1]

    def reduce_patches(patches: np.ndarray) -> np.ndarray:
        return build_memory_bank(patches, bank_limit(len(patches), n_views, max_bank), seed)

    def merge(parts: list[np.ndarray]) -> np.ndarray:
        return build_memory_bank(np.concatenate(parts), max_bank, seed)

    # Each shot's views are reduced on their own (to BANK_FACTOR x the shot's patches), so any set of shots,
    # the calibration's held-out banks included, is a union of ready parts: one coreset per shot, not per bank.
    shot_banks = [reduce_patches(features[i].reshape(-1, dim)) for i in range(len(shots))]

    def decode_maps(query: np.ndarray, bank: np.ndarray) -> np.ndarray:
        return backend.decode(query, bank)[0]

    side = math.isqrt(features.shape[2])
    sources = patch_sources(side, augmentation)
    calibration = calibrate_held_out_quarters(features, sources, shot_banks, reduce_patches, merge, decode_maps)
    bank = merge(shot_banks)
    return FewShotFit(shots, bank, calibration, len(bank) < features.size // dim, augmentation, requested)


def write_fitted_bundle(root: Path, manifest: dict, fit: FewShotFit) -> Bundle:
    """Write bank, shots and threshold beside the graphs already in ``root``, then seal the manifest.

    Shots are stored at the input size so the edge box can refit when more
    shots arrive; they are the user's own normal images, never anything else.
    """
    for old in (root / fmt.SHOTS_DIR).glob("*.png"):
        old.unlink()
    (root / fmt.SHOTS_DIR).mkdir(exist_ok=True)
    np.save(root / fmt.MEMORY_BANK, fit.memory_bank, allow_pickle=False)
    roles = {
        fmt.ENCODER_ONNX: fmt.ROLE_ENCODER,
        fmt.DECODER_ONNX: fmt.ROLE_DECODER,
        fmt.MEMORY_BANK: fmt.ROLE_MEMORY_BANK,
    }
    for i, shot in enumerate(fit.shots):
        name = f"{fmt.SHOTS_DIR}/{i:04d}.png"
        if not cv2.imwrite(str(root / name), cv2.cvtColor(shot, cv2.COLOR_RGB2BGR)):
            raise OSError(f"cannot write {root / name}")
        roles[name] = fmt.ROLE_SHOT
    manifest = dict(manifest)
    manifest["threshold"] = fit.calibration.to_manifest()
    manifest["memory_bank"] = {
        "size": int(fit.memory_bank.shape[0]),
        "shots": len(fit.shots),
        "coreset": fit.coreset,
        "augmentation": fit.augmentation,
        "augmentation_requested": fit.augmentation_requested,
    }
    return seal_bundle(root, manifest, roles)
