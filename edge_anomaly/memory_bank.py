"""Building the bank of normal patch features the decoder compares against.

Few shots go in whole. Past ``max_size`` patches the bank is reduced with
PatchCore's greedy k-center coreset: it keeps the patches that cover the
feature space best, so rare-but-normal patches survive the cut (a random
subsample would drop them and raise false alarms).
"""

from __future__ import annotations

import numpy as np

DEFAULT_MAX_SIZE = 8192


def build_memory_bank(features: np.ndarray, max_size: int = DEFAULT_MAX_SIZE, seed: int = 0) -> np.ndarray:
    """Patch features ``[N x D]`` -> memory bank ``[min(N, max_size) x D]`` float32."""
    features = np.ascontiguousarray(features, dtype=np.float32)
    if features.ndim != 2:
        raise ValueError(f"features must be [N x D], got shape {features.shape}")
    if len(features) <= max_size:
        return features
    return features[greedy_coreset(features, max_size, seed)]


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
