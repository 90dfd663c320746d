"""The text-free head's model and its shipped asset, apart from its training (``text_free_head``).

The decoder graph (``onnx_export``) loads the asset and bakes the head in; only
training needs the simulated anomalies, and training builds graphs, so the two
halves live apart and import in one direction.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

ASSET = Path(__file__).parent / "assets" / "text-free-head.npz"
HEAD_NEIGHBOURHOOD = 3  # the local mean of the features it was trained on
HEAD_WEIGHT = 0.25  # head probability (0-1) added to the patch distance (about 0.3-1.5), times this
TEMPERATURE = 0.07


class TextFreeHead(nn.Module):
    """Patch features ``[B x N x D]`` -> abnormal probability per patch ``[B x N]``.

    Each encoder stage's slice of the feature is projected by its own linear
    layer and compared (cosine, temperature 0.07) with a learned normal and a
    learned abnormal prototype, in place of AnomalyGPT's two text features;
    the stages' abnormal probabilities are averaged.
    """

    def __init__(self, stage_dims: list[int], dim: int = 128, seed: int = 0) -> None:
        super().__init__()
        bounds = np.cumsum([0, *stage_dims])
        self.slices = [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]
        with torch.random.fork_rng():  # the same seed gives the same head: the asset is reproducible
            torch.manual_seed(seed)
            self.projections = nn.ModuleList(nn.Linear(b - a, dim) for a, b in self.slices)
            self.prototypes = nn.Parameter(torch.randn(len(self.slices), 2, dim))
        # What each slice is multiplied by before the head reads it: 1, unless the encoder divides its parts
        # by constants (feature_norm "balanced"), which the head, trained on per-stage unit features, undoes.
        self.register_buffer("input_gains", torch.ones(len(self.slices)), persistent=False)

    def reading(self, slices: list[tuple[int, int]]) -> TextFreeHead:
        """The head reading its stages at ``slices`` (first, end columns) of a wider feature: an encoder with
        more stages or neighbourhood sizes keeps the head's own parts somewhere among its columns."""
        widths = [b - a for a, b in slices]
        if widths != [b - a for a, b in self.slices]:
            raise ValueError(f"the head reads parts of widths {[b - a for a, b in self.slices]}, got {widths}")
        self.slices = list(slices)
        return self

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        probabilities = []
        for k, (a, b) in enumerate(self.slices):
            z = F.normalize(self.projections[k](features[..., a:b] * self.input_gains[k]), dim=-1)
            logits = z @ F.normalize(self.prototypes[k], dim=-1).t() / TEMPERATURE
            probabilities.append(logits.softmax(-1)[..., 1])
        return torch.stack(probabilities).mean(0)


def save_head(head: TextFreeHead, path: Path) -> None:
    """Plain arrays in an ``.npz``: no pickle on the way back in."""
    arrays = {f"projection{k}.weight": p.weight.detach().numpy() for k, p in enumerate(head.projections)}
    arrays |= {f"projection{k}.bias": p.bias.detach().numpy() for k, p in enumerate(head.projections)}
    arrays["prototypes"] = head.prototypes.detach().numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        np.savez(f, **arrays)


def load_head(path: Path = ASSET) -> TextFreeHead:
    """The head stored by ``save_head``; its stage widths are read off the arrays."""
    with np.load(path, allow_pickle=False) as arrays:
        count = len(arrays["prototypes"])
        weights = [arrays[f"projection{k}.weight"] for k in range(count)]
        head = TextFreeHead([w.shape[1] for w in weights], dim=weights[0].shape[0])
        state = {"prototypes": torch.from_numpy(arrays["prototypes"])}
        for k in range(count):
            state[f"projections.{k}.weight"] = torch.from_numpy(weights[k])
            state[f"projections.{k}.bias"] = torch.from_numpy(arrays[f"projection{k}.bias"])
    head.load_state_dict(state)
    return head.eval()


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
