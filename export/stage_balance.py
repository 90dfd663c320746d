"""Stage weights from the shots (``feature_norm="balanced"``).

Per-stage L2 normalisation makes each stage's features unit vectors, so each
stage may add up to the same squared distance. It does not make the stages
count alike: Lite0's stride-8 stage spreads more between normal patches than
its stride-16 stage does (its nearest normal neighbour lies 1.05-1.45x as far
on the dev set), so in the summed distance the finer stage's normal variation
drowns the coarser stage's evidence. Which stage varies more depends on the
product, so the weights are measured on its shots: each stage (its parts of
every neighbourhood size together) is divided by its typical
nearest-neighbour distance among the bank's rows, rescaled so that the total
typical squared distance stays what it was. A product whose stages already
spread alike keeps weights near 1. The sizes of one stage keep their
relation: equalising each 1x1 part with its 3x3 part as well shrank the 1x1
parts that sharpen the map (pixel AUROC 0.914 against 0.928 with
``--neighbourhood 1 3``, docs/accuracy.md).

The statistic is taken on the bank the defaults give one shot, whatever the
fit asks for: each shot in its dihedral views, reduced on its own to
``BANK_FACTOR`` times its patches by the greedy coreset, then pooled. A bank
of every patch (an aligned layout) would measure the distance between
neighbouring patches, which the local mean makes near-duplicates, not the
spread of the product.

The divisors are constants of the exported encoder graph, so a bank refitted
on the edge box (``Inspector.add_normal_shots``) keeps the export's weights.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch

from edge_anomaly.errors import InputError
from edge_anomaly.few_shot import encode_images
from edge_anomaly.images import Preprocessing, resize_square
from edge_anomaly.memory_bank import greedy_coreset
from edge_anomaly.shot_views import BANK_FACTOR, shot_views

from .patch_model import PatchEncoder

ROW_BLOCK = 1024  # rows whose distances to the whole pool are held at once (1024 x 8192 floats: 32 MB)


class GraphsLike(Protocol):
    """What is measured here of ``onnx_export.DetectorGraphs`` (which imports this module): its encoder,
    its backend surface for ``few_shot.encode_images``, and how frames reach it."""

    encoder: PatchEncoder

    def encode(self, batch: np.ndarray) -> np.ndarray: ...

    def preprocessing(self) -> Preprocessing: ...


def balanced_scales(graphs: GraphsLike, shots: list[np.ndarray], seed: int = 0) -> list[float]:
    """The divisor of each of ``graphs.encoder``'s parts (in its order) for RGB ``shots``: its stage's
    median nearest-neighbour distance (over all the stage's parts) among the pooled shot coresets, over the
    root mean square of the stages' medians.
    The encoder must L2-normalise its parts and divide by nothing yet. Shots that do not vary (one flat
    colour) give no distance to divide by: ``InputError``."""
    encoder = graphs.encoder
    if encoder.feature_norm != "balanced" or not torch.all(encoder.stage_scales == 1):
        raise ValueError("stage balance is measured on per-stage unit features, before any divisor is set")
    rows = [_shot_coreset(graphs, shot, seed) for shot in shots]
    pool = np.concatenate(rows)
    medians = np.array([np.median(nearest_distances(pool[:, _stage_columns(encoder, s)])) for s in encoder.stages])
    if not np.all(np.isfinite(medians)) or not np.all(medians > 0):
        raise InputError(
            f"--feature-norm balanced: the shots give no spread to weigh the stages by (median nearest-neighbour "
            f"distances {[round(float(m), 6) for m in medians]}); use another feature norm or other shots"
        )
    divisors = dict(zip(encoder.stages, medians / np.sqrt(np.mean(medians**2))))
    return [float(divisors[stage]) for stage, _ in encoder.parts]


def _shot_coreset(graphs: GraphsLike, shot: np.ndarray, seed: int) -> np.ndarray:
    prep = graphs.preprocessing()
    features = encode_images(graphs, shot_views(resize_square(shot, prep.size), "dihedral"), prep)
    patches = features.reshape(-1, features.shape[-1])
    return patches[greedy_coreset(patches, BANK_FACTOR * features.shape[1], seed)]


def _stage_columns(encoder: PatchEncoder, stage: int) -> np.ndarray:
    """The feature columns of every part of ``stage``."""
    spans = [encoder.part_columns(s, k) for s, k in encoder.parts if s == stage]
    return np.concatenate([np.arange(a, b) for a, b in spans])


def squared_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``[len(a) x len(b)]`` squared distances between rows (float error below 0 cut)."""
    return np.maximum(np.einsum("nd,nd->n", a, a)[:, None] + np.einsum("md,md->m", b, b)[None] - 2.0 * a @ b.T, 0.0)


def nearest_distances(rows: np.ndarray) -> np.ndarray:
    """Each row's distance to its nearest other row."""
    nearest = np.empty(len(rows), dtype=np.float32)
    for start in range(0, len(rows), ROW_BLOCK):
        block = rows[start : start + ROW_BLOCK]
        d2 = squared_distances(block, rows)
        d2[np.arange(len(block)), np.arange(start, start + len(block))] = np.inf
        nearest[start : start + len(block)] = d2.min(1)
    return np.sqrt(nearest)
