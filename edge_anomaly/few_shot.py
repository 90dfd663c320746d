"""Fitting a detector to a handful of normal images: memory bank plus calibrated threshold.

One code path for the build host (``edge-anomaly export``) and the edge box
(``Inspector.add_normal_shots``): both run the exported graphs through a
runtime backend, so the bank and threshold a bundle records are exactly what
the edge box would compute itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from . import bundle_format as fmt
from .bundle import Bundle, seal_bundle
from .calibration import Calibration, calibrate_leave_one_out, calibrate_single_shot
from .images import preprocess, resize_square
from .memory_bank import DEFAULT_MAX_SIZE, build_memory_bank

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


def encode_images(backend, images: list[np.ndarray], prep: Preprocessing) -> np.ndarray:
    """RGB images -> patch features ``[B x N x D]``, encoded in small batches to bound memory."""
    parts = [backend.encode(prep.batch(images[i : i + ENCODE_BATCH])) for i in range(0, len(images), ENCODE_BATCH)]
    return np.concatenate(parts)


def fit_normal_shots(
    backend, shots: list[np.ndarray], prep: Preprocessing, max_bank: int = DEFAULT_MAX_SIZE, seed: int = 0
) -> FewShotFit:
    """Normal RGB shots -> memory bank and threshold, without any anomalous image."""
    if not shots:
        raise ValueError("at least one normal shot is needed")
    shots = [resize_square(shot, prep.size) for shot in shots]
    shot_features = encode_images(backend, shots, prep)

    def build_bank(features: np.ndarray) -> np.ndarray:
        return build_memory_bank(features, max_bank, seed)

    def decode_scores(features: np.ndarray, bank: np.ndarray) -> np.ndarray:
        return backend.decode(features, bank)[1]

    if len(shots) == 1:
        calibration = calibrate_single_shot(shot_features[0])
    else:
        calibration = calibrate_leave_one_out(shot_features, build_bank, decode_scores)
    all_patches = shot_features.reshape(-1, shot_features.shape[-1])
    return FewShotFit(shots, build_bank(all_patches), calibration, len(all_patches) > max_bank)


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
    }
    return seal_bundle(root, manifest, roles)
