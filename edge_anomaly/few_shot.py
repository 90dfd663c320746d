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
from .errors import InputError
from .images import Preprocessing, resize_square
from .manifest import BankSection, Manifest, ThresholdSection
from .memory_bank import DEFAULT_MAX_SIZE, build_memory_bank
from .placement import DEFAULT_LAYOUT, EVERYWHERE, PLACE_COLUMNS, REACH, resolve_layout, with_places
from .shot_views import DEFAULT_AUGMENTATION, bank_limit, patch_sources, resolve_augmentation, shot_views

ENCODE_BATCH = 8


@dataclass(frozen=True)
class FewShotFit:
    shots: list[np.ndarray]  # RGB uint8 at the input size
    memory_bank: np.ndarray  # rows: feature, place, reach (``placement``)
    calibration: Calibration
    coreset: bool
    augmentation: str = "none"  # as applied (what was asked is in the manifest's ``fit``, decided again on refit)
    layout: str = "free"  # as applied
    aligned_share: float | None = None  # the evidence ``auto`` decided on (None with one shot)


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
    layout: str = DEFAULT_LAYOUT,
    presumed_features: np.ndarray | None = None,
    score_features: int | None = None,
    chosen_by: int | None = None,
) -> FewShotFit:
    """Normal RGB shots (and their views, see ``shot_views``) -> memory bank and threshold, without any
    anomalous image. An aligned layout (``placement``) takes no views: the shots' poses are the poses.

    ``presumed_features``: patch features ``[F x N x D]`` of frames believed normal that are not shots, more
    evidence for the layout (never in the bank). Zero-shot bootstrapping picks the most typical frames of a
    line as shots, and those tend to share one pose: the 4 most typical screws of the dev set looked
    aligned, the 16 most typical did not.

    ``score_features``: the leading feature columns the decoder's score reads (``DecoderSection``), None for
    all; where it is not all, the calibration gives the map a threshold of its own. ``chosen_by``: the
    leading columns the layout and the coresets are decided on (``EncoderSection.bank_features``), None for
    all. With both the score's, parts that only the map reads change nothing but the map."""
    if not shots:
        raise InputError("at least one normal shot is needed")
    shots = [resize_square(shot, prep.size) for shot in shots]
    plain = encode_images(backend, shots, prep)
    decisive = slice(None, chosen_by)
    presumed = None if presumed_features is None else presumed_features[..., decisive]
    applied_layout, share = resolve_layout(layout, plain[..., decisive], presumed)
    requested, augmentation = augmentation, resolve_augmentation(augmentation, len(shots))
    if applied_layout == "aligned":
        if requested == "dihedral":
            raise InputError("dihedral views contradict an aligned layout: parts that turn are not aligned")
        augmentation = "none"
    views = [v for shot in shots for v in shot_views(shot, augmentation)[1:]]
    n_views = 1 + len(views) // len(shots)
    features = plain[:, None]
    if views:
        turned = encode_images(backend, views, prep).reshape(len(shots), n_views - 1, *plain.shape[1:])
        features = np.concatenate([features, turned], axis=1)
    rows = with_places(features, REACH if applied_layout == "aligned" else EVERYWHERE)  # [K x V x N x (D + 3)]

    def reduce_patches(patches: np.ndarray) -> np.ndarray:
        return build_memory_bank(patches, bank_limit(len(patches), n_views, max_bank), seed, chosen_by)

    def merge(parts: list[np.ndarray]) -> np.ndarray:
        return build_memory_bank(np.concatenate(parts), max_bank, seed, chosen_by)

    # Each shot's views are reduced on their own (to BANK_FACTOR x the shot's patches), so any set of shots,
    # the calibration's held-out banks included, is a union of ready parts: one coreset per shot, not per bank.
    shot_banks = [reduce_patches(rows[i].reshape(-1, rows.shape[-1])) for i in range(len(shots))]

    def decode_maps(query: np.ndarray, bank: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return score_and_anomaly_maps(backend, query[..., :-PLACE_COLUMNS], bank, score_features)

    side = math.isqrt(features.shape[2])
    sources = patch_sources(side, augmentation)
    calibration = calibrate_held_out_quarters(rows, sources, shot_banks, reduce_patches, merge, decode_maps)
    bank = merge(shot_banks)
    coreset = len(bank) < features.shape[0] * features.shape[1] * features.shape[2]
    return FewShotFit(shots, bank, calibration, coreset, augmentation, applied_layout, share)


def score_and_anomaly_maps(
    backend, features: np.ndarray, bank: np.ndarray, score_features: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """The maps the score is the maximum of, and the anomaly maps, of patch features ``[B x N x D]``.

    The decoder outputs only the anomaly map and the score; the score's own map comes from the same graph
    with the columns only the map reads set to zero in both features and bank, where they add nothing to
    any distance. Where the score reads every column, one array is both."""
    anomaly_maps = backend.decode(features, bank)[0]
    if score_features is None:
        return anomaly_maps, anomaly_maps
    muted, muted_bank = features.copy(), bank.copy()
    muted[..., score_features:] = 0.0
    muted_bank[:, score_features : bank.shape[1] - PLACE_COLUMNS] = 0.0
    return backend.decode(muted, muted_bank)[0], anomaly_maps


def fitted_sections(fit: FewShotFit) -> dict[str, BankSection | ThresholdSection]:
    """The manifest sections a fit sets (``Manifest(..., **fitted_sections(fit))``)."""
    bank = BankSection(
        size=int(fit.memory_bank.shape[0]),
        shots=len(fit.shots),
        coreset=fit.coreset,
        augmentation=fit.augmentation,
        layout=fit.layout,
        aligned_share=fit.aligned_share,
        reach=REACH if fit.layout == "aligned" else None,
        columns=f"patch feature ({fit.memory_bank.shape[1] - PLACE_COLUMNS}), grid row, grid column, reach",
    )
    return {"memory_bank": bank, "threshold": fit.calibration.to_section()}


def write_fitted_bundle(root: Path, manifest: Manifest, fit: FewShotFit, kept: dict[str, str] | None = None) -> Bundle:
    """Write bank and shots beside the graphs already in ``root``, then seal ``manifest`` (whose
    ``memory_bank`` and ``threshold`` come from ``fitted_sections(fit)``).
    ``kept``: other files already in ``root`` (relative name -> role) that the bundle keeps listing.

    Shots are stored at the input size so the edge box can refit when more
    shots arrive; they are the user's own normal images, never anything else.
    """
    for old in (root / fmt.SHOTS_DIR).glob("*.png"):
        old.unlink()
    (root / fmt.SHOTS_DIR).mkdir(exist_ok=True)
    np.save(root / fmt.MEMORY_BANK, fit.memory_bank, allow_pickle=False)
    roles = {
        **(kept or {}),
        fmt.ENCODER_ONNX: fmt.ROLE_ENCODER,
        fmt.DECODER_ONNX: fmt.ROLE_DECODER,
        fmt.MEMORY_BANK: fmt.ROLE_MEMORY_BANK,
    }
    for i, shot in enumerate(fit.shots):
        name = f"{fmt.SHOTS_DIR}/{i:04d}.png"
        if not cv2.imwrite(str(root / name), cv2.cvtColor(shot, cv2.COLOR_RGB2BGR)):
            raise OSError(f"cannot write {root / name}")
        roles[name] = fmt.ROLE_SHOT
    return seal_bundle(root, manifest, roles)
