"""Building the bank of normal patch features the decoder compares against.

Few shots go in whole. Past ``max_size`` patches the bank is reduced with
PatchCore's greedy k-center coreset: it keeps the patches that cover the
feature space best, so rare-but-normal patches survive the cut (a random
subsample would drop them and raise false alarms). An aligned bank (rows that
reach only near their place, see ``placement``) is reduced place by place, so
that every place keeps patches to match: one coreset over all places would
keep a few patches of a plain region and leave the rest of it unmatched.
"""

from __future__ import annotations

import numpy as np

from .placement import PLACE_COLUMNS, is_aligned

# Past this the bank is a coreset. 4096 rows (4 shots at 256 px without views, or 2 with them) halve the
# 4-shot decoder against 8192 and kept the dev set's 4-shot macro means within 0.001 (docs/benchmarks.md).
DEFAULT_MAX_SIZE = 4096


def build_memory_bank(
    rows: np.ndarray, max_size: int = DEFAULT_MAX_SIZE, seed: int = 0, chosen_by: int | None = None
) -> np.ndarray:
    """Bank rows ``[N x (D + 3)]`` (feature, place, reach; ``placement.with_places``) -> memory bank
    ``[min(N, max_size) x (D + 3)]`` float32. Rows are chosen by their features alone: by the leading
    ``chosen_by`` columns where given (``EncoderSection.bank_features``: the smoother 3x3 parts, whose
    coreset also covers the 1x1 ones; docs/accuracy.md)."""
    rows = np.ascontiguousarray(rows, dtype=np.float32)
    if rows.ndim != 2 or rows.shape[1] <= PLACE_COLUMNS:
        raise ValueError(f"bank rows must be [N x (D + {PLACE_COLUMNS})], got shape {rows.shape}")
    if len(rows) <= max_size:
        return rows
    features = rows[:, : rows.shape[1] - PLACE_COLUMNS if chosen_by is None else chosen_by]
    if is_aligned(rows):
        return rows[coreset_per_place(rows, features, max_size, seed)]
    return rows[greedy_coreset(features, max_size, seed)]


def coreset_per_place(rows: np.ndarray, features: np.ndarray, size: int, seed: int = 0) -> np.ndarray:
    """Indices of about ``size`` rows (at least one per place), the same share of each place's rows chosen by
    greedy k-center over that place's ``features``."""
    places, group = np.unique(rows[:, -PLACE_COLUMNS:-1], axis=0, return_inverse=True)
    per_place = max(1, size // len(places))
    chosen = []
    for g in range(len(places)):
        members = np.flatnonzero(group.ravel() == g)
        if len(members) > per_place:
            members = members[greedy_coreset(features[members], per_place, seed)]
        chosen.append(members)
    return np.sort(np.concatenate(chosen))


def greedy_coreset(features: np.ndarray, size: int, seed: int = 0, projection_dim: int = 128) -> np.ndarray:
    """Indices of ``size`` rows chosen by greedy k-center on a random projection.

    The projection (Johnson-Lindenstrauss, as PatchCore does) keeps distances
    roughly intact while making each of the ``size`` passes cheaper.
    """
    rng = np.random.default_rng(seed)
    if features.shape[1] > projection_dim:
        projection = rng.standard_normal((features.shape[1], projection_dim)).astype(np.float32)
        reduced = features @ (projection / np.sqrt(projection_dim))
    else:
        reduced = features
    sq_norms = np.einsum("nd,nd->n", reduced, reduced)
    chosen = np.empty(size, dtype=np.int64)
    chosen[0] = rng.integers(len(reduced))
    min_dist = np.full(len(reduced), np.inf, dtype=np.float32)
    for i in range(1, size):
        c = reduced[chosen[i - 1]]
        dist = sq_norms - 2.0 * (reduced @ c) + sq_norms[chosen[i - 1]]
        np.minimum(min_dist, dist, out=min_dist)
        chosen[i] = int(np.argmax(min_dist))
    return chosen
