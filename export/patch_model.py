"""The two graphs the edge box runs: patch encoder and nearest-neighbour decoder.

Split in two so that the memory bank stays a runtime input: the edge box can
encode new normal shots with the encoder graph and feed a larger bank to the
decoder graph without any re-export.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from edge_anomaly.bundle_format import DEFAULT_FEATURE_NORM, FEATURE_NORMS
from edge_anomaly.fit_options import DEFAULT_NEIGHBOURHOOD
from edge_anomaly.placement import PLACE_COLUMNS

from .efficientnet_lite import EfficientNetLite

# Added to the squared distance of rows out of reach: far above any squared distance of the features (per-stage
# unit features stay below 4 per stage; raw Lite stage outputs, ReLU6-bounded, below 6**2 per channel, a few
# thousand over the default stages), so such a row never is the nearest while one in reach exists (every
# aligned bank covers every place).
OUT_OF_REACH = 1.0e6


class PatchEncoder(nn.Module):
    """Image ``[B x 3 x H x W]`` (normalized RGB) -> patch features ``[B x N x D]``.

    Features of several stages are locally aggregated (a ``k x k`` mean for
    each size ``k`` of ``neighbourhood``: 3 as PatchCore does, so each patch
    sees its neighbourhood; several sizes as MuSc's LNAMD, so small and large
    defects both stand out), brought to the grid of the finest stage, and
    concatenated, one part per stage and size (stage-major). Each part is
    L2-normalized per patch so that no part dominates the distance by its
    width (``feature_norm="stage"``; ``"none"`` keeps them as PatchCore does;
    ``"shots"`` divides each part by one constant, its mean patch norm over
    the shots, so parts weigh alike while a patch keeps its magnitude;
    ``"balanced"`` L2-normalizes each part, then divides it by its stage's
    constant from the shots, so that each stage's typical nearest-neighbour
    distance is the same: ``stage_balance``).
    ``N = (H/s) * (W/s)`` with ``s`` the finest stage's stride.

    ``score_neighbourhood``: the sizes whose parts the image score reads (all
    by default); their parts come first, so the score reads the leading
    ``score_features`` columns and the map all of them. The score and the map
    want different parts: 1x1 parts sharpen the map (pixel AUROC +0.009 to
    +0.014 on the dev set) but move the image score and its threshold
    (docs/accuracy.md). ``bank_neighbourhood``: the sizes whose parts choose
    the bank's rows and the layout (the score's by default), the leading
    ``bank_features`` columns: a coreset chosen by the smoother 3x3 parts
    covers the 1x1 ones too (docs/accuracy.md).
    """

    def __init__(
        self,
        backbone: EfficientNetLite,
        stages: tuple[int, ...],
        feature_norm: str = DEFAULT_FEATURE_NORM,
        neighbourhood: tuple[int, ...] = DEFAULT_NEIGHBOURHOOD,
        score_neighbourhood: tuple[int, ...] | None = None,
        bank_neighbourhood: tuple[int, ...] | None = None,
    ) -> None:
        super().__init__()
        if feature_norm not in FEATURE_NORMS:
            raise ValueError(f"feature_norm must be one of {FEATURE_NORMS}, got {feature_norm!r}")
        self.feature_norm = feature_norm
        self.backbone = backbone
        self.stages = tuple(sorted(stages))
        self.neighbourhood = tuple(sorted(set(neighbourhood)))
        self.score_sizes = tuple(sorted(set(score_neighbourhood or self.neighbourhood)))
        self.bank_sizes = tuple(sorted(set(bank_neighbourhood or self.score_sizes)))
        if not set(self.bank_sizes) <= set(self.score_sizes) <= set(self.neighbourhood):
            raise ValueError(
                f"bank sizes {self.bank_sizes} must be among the score's {self.score_sizes}, and those among the "
                f"neighbourhood's {self.neighbourhood}"
            )
        # The order of the feature's parts: those that choose the bank first, then the score's other parts, then
        # the map's, so that each group is a run of leading columns; stage-major within each group.
        parts = [(s, k) for s in self.stages for k in self.neighbourhood]
        rank = [set(self.bank_sizes), set(self.score_sizes), set(self.neighbourhood)]
        self.parts = sorted(parts, key=lambda p: min(i for i, group in enumerate(rank) if p[1] in group))
        self.feature_dim = sum(backbone.stage_channels[s] for s, _ in self.parts)
        self.score_features = self._leading(self.score_sizes)  # None: the score reads all
        self.bank_features = self._leading(self.bank_sizes)  # None: the bank's rows are chosen by all
        self.stride = backbone.strides()[self.stages[0]]
        # divisors of the parts: set by fit_stage_scales ("shots") or stage_balance ("balanced")
        self.register_buffer("stage_scales", torch.ones(len(self.parts)))

    def _leading(self, sizes: tuple[int, ...]) -> int | None:
        """How many leading columns the parts of ``sizes`` fill; None where that is all of them."""
        width = sum(self.backbone.stage_channels[s] for s, k in self.parts if k in sizes)
        return width if width < self.feature_dim else None

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        parts = self.stage_parts(image)
        if self.feature_norm in ("stage", "balanced"):
            parts = [F.normalize(f, dim=1) for f in parts]
        if self.feature_norm in ("shots", "balanced"):
            parts = [f / self.stage_scales[k] for k, f in enumerate(parts)]
        features = torch.cat(parts, dim=1)
        return features.flatten(2).transpose(1, 2).contiguous()

    def part_columns(self, stage: int, size: int) -> tuple[int, int]:
        """Where the part of ``stage`` aggregated at ``size`` lies in the feature: ``(first, end)`` columns."""
        start = 0
        for s, k in self.parts:
            width = self.backbone.stage_channels[s]
            if (s, k) == (stage, size):
                return start, start + width
            start += width
        raise ValueError(f"the feature has no part of stage {stage} at size {size}: {self.parts}")

    def stage_parts(self, image: torch.Tensor) -> list[torch.Tensor]:
        """Each part's mean-aggregated features on the finest grid ``[B x C_s x h x w]``, before any scaling."""
        outputs = self.backbone.stage_outputs(image, self.stages[-1])
        grid = outputs[self.stages[0]].shape[-2:]
        parts = []
        for s, k in self.parts:
            f = outputs[s]
            if k > 1:
                f = F.avg_pool2d(f, k, stride=1, padding=k // 2, count_include_pad=False)
            if f.shape[-2:] != grid:
                f = F.interpolate(f, size=grid, mode="bilinear", align_corners=False)
            parts.append(f)
        return parts

    @torch.no_grad()
    def fit_stage_scales(self, images: torch.Tensor) -> list[float]:
        """``feature_norm="shots"``: each part's mean patch norm over ``images`` becomes its divisor."""
        norms = [f.norm(dim=1).mean() for f in self.stage_parts(images)]
        self.stage_scales.copy_(torch.stack(norms).clamp(min=1e-6))
        return [round(float(n), 6) for n in self.stage_scales]


def upsample_and_smooth(cells: int, pixels: int, sigma: float) -> torch.Tensor:
    """``[pixels x cells]``: one axis of bilinear upsampling (half-pixel centres) followed by a Gaussian of
    ``sigma`` pixels (reflected at the borders), as one matrix.

    Both steps are linear and act on rows and columns apart, so the smoothed map is ``A_rows @ patch @
    A_cols^T``: two small matmuls in place of a full-size interpolation and two one-channel convolutions,
    which run slowly on CPUs (above all in bfloat16) for what little arithmetic they hold."""
    identity = torch.eye(cells).view(cells, 1, cells)  # each cell's unit response, one per batch entry
    up = F.interpolate(identity, size=pixels, mode="linear", align_corners=False)
    k = gaussian_kernel(sigma)
    r = (k.numel() - 1) // 2
    if pixels <= r:
        raise ValueError(f"a map of {pixels} pixels is too small for a Gaussian of sigma {sigma}")
    smooth = F.conv1d(F.pad(up, (r, r), mode="reflect"), k.view(1, 1, -1))
    return smooth[:, 0].t().contiguous()


def gaussian_kernel(sigma: float) -> torch.Tensor:
    """1-D Gaussian of radius ``4 sigma`` (PatchCore's smoothing of the patch map)."""
    radius = int(4 * sigma + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-(x**2) / (2 * sigma**2))
    return k / k.sum()


class NearestNeighbourDecoder(nn.Module):
    """Patch features + memory bank -> anomaly map at input resolution and image score.

    A patch's anomaly is its Euclidean distance to the nearest normal patch in
    the bank. The patch map is upsampled to the input size and smoothed with a
    separable Gaussian (both as one matrix per axis, ``upsample_and_smooth``);
    the image score is the map's maximum, so an image is anomalous exactly
    when some pixel of its map exceeds the threshold.

    Each bank row ends with its place on the patch grid and its reach
    (``edge_anomaly.placement``): a patch matches only rows whose place lies
    within their reach of its own (Chebyshev, grid cells). A free bank's rows
    reach everywhere; an aligned bank's rows only a few cells, so a normal
    look at the wrong place scores as anomalous.

    With a ``head`` (``text_free_head``), its abnormal probability times
    ``head_weight`` is added to each patch's distance before upsampling: the
    trained map sharpens the few-shot one, as in AnomalyGPT.

    With ``score_features`` (the encoder's), the score is the maximum of the
    map of nearest distances over the features' leading ``score_features``
    columns only, as a decoder of those columns alone gives it; the anomaly
    map is drawn from the nearest distances over all columns. The map then
    has a scale of its own and needs a threshold of its own for its regions
    (``calibration``).

    Inputs: ``features [B x N x D]``, ``memory_bank [M x (D + 3)]`` (M dynamic).
    Outputs: ``anomaly_map [B x H x W]``, ``score [B]``.
    """

    def __init__(
        self,
        grid: tuple[int, int],
        image_size: tuple[int, int],
        sigma: float = 4.0,
        head: nn.Module | None = None,
        head_weight: float = 0.0,
        score_features: int | None = None,
    ) -> None:
        super().__init__()
        self.head = head
        self.head_weight = head_weight
        self.score_features = score_features
        self.grid = grid
        self.image_size = image_size
        self.register_buffer("rows_operator", upsample_and_smooth(grid[0], image_size[0], sigma))
        self.register_buffer("cols_operator_t", upsample_and_smooth(grid[1], image_size[1], sigma).t().contiguous())
        # Each query patch's place as two one-hot codes (its grid row, its grid column): appended to the
        # features, they meet a bank row's out-of-reach columns inside the one distance matmul (see
        # ``patch_distances``), so the reach costs no pass over the [N x M] distances.
        rows, cols = torch.meshgrid(torch.arange(grid[0]), torch.arange(grid[1]), indexing="ij")
        codes = torch.cat([F.one_hot(rows.flatten(), grid[0]), F.one_hot(cols.flatten(), grid[1])], dim=1)
        self.register_buffer("place_codes", codes.float())
        self.register_buffer("grid_rows", torch.arange(grid[0]).float())
        self.register_buffer("grid_cols", torch.arange(grid[1]).float())

    def forward(self, features: torch.Tensor, memory_bank: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.scored(features, *self.patch_distances(features, memory_bank))

    def scored(
        self, features: torch.Tensor, distances: torch.Tensor, score_distances: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Patch distances ``[B x N]`` for the map and, where they differ, for the score (None: the map's),
        each with the head's share added -> map and image score."""
        if self.head is not None:
            share = self.head_weight * self.head(features)
            distances = distances + share
            score_distances = None if score_distances is None else score_distances + share
        anomaly_map, peak = self.image_map(distances)
        if score_distances is None:
            return anomaly_map, peak
        return anomaly_map, self.image_map(score_distances)[1]

    def reaches_everywhere(self, memory_bank: torch.Tensor) -> torch.Tensor:
        """Whether every bank row reaches every place of the grid (a free bank): then ``free_distances``
        equals ``patch_distances`` exactly."""
        return memory_bank[:, -1].min() >= max(self.grid) - 1

    def free_distances(
        self, features: torch.Tensor, memory_bank: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``patch_distances`` for a bank whose rows all reach everywhere: without the place columns, which
        are zero there and made up 64 of the matmul's 218 columns at 256 px (the 4-shot decoder alone on
        OpenVINO: 2.8-3.2 ms without them, 3.4-3.9 with them; docs/benchmarks.md)."""
        bank = memory_bank[:, :-PLACE_COLUMNS]
        return self._distance_pair(features, bank, [], [])

    def _distance_pair(
        self, features: torch.Tensor, bank: torch.Tensor, query_extra: list, bank_extra: list
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The map's distances and the score's (None: the map's). With ``score_features``, the squared
        distances over the score's leading columns and over the rest come from two matmuls; the score takes
        the minimum of the first, the map that of their sum, so each is the nearest-neighbour distance of
        its own parts and the matmuls cost what one over all columns does. (The nearest row by the score's
        columns, then the whole distance to it, needs its index: OpenVINO's TopK over ``[N x M]`` made that
        decoder slower, 7 ms against 3 at 1 shot; docs/accuracy.md.)"""
        s = self.score_features
        scored = squared_distances(features[..., :s], bank[:, :s], query_extra, bank_extra)
        if s is None:
            return _root_of_min(scored), None
        whole = scored + squared_distances(features[..., s:], bank[:, s:])
        return _root_of_min(whole), _root_of_min(scored)

    def patch_distances(
        self, features: torch.Tensor, memory_bank: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``[B x N]``: each patch's distance to its nearest normal patch within reach, for the map and (with
        ``score_features``) for the score.

        A bank row gets ``OUT_OF_REACH`` for each grid row and each grid column farther than its reach from
        its place; the query's place codes pick its own row and column of those, so the matmul adds
        ``OUT_OF_REACH`` to the squared distance of a row out of reach (Chebyshev: out in rows or in columns)
        and nothing to one within it."""
        bank, place, reach = memory_bank[:, :-PLACE_COLUMNS], memory_bank[:, -PLACE_COLUMNS:-1], memory_bank[:, -1:]
        far_rows = ((self.grid_rows[None, :] - place[:, :1]).abs() > reach).float() * OUT_OF_REACH
        far_cols = ((self.grid_cols[None, :] - place[:, 1:]).abs() > reach).float() * OUT_OF_REACH
        codes = self.place_codes.expand(features.shape[0], -1, -1)
        return self._distance_pair(features, bank, [codes], [far_rows, far_cols])

    def image_map(self, patch_scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Patch scores ``[B x N]`` -> smoothed map at input size ``[B x H x W]`` and its maximum ``[B]``."""
        patch = patch_scores.view(-1, self.grid[0], self.grid[1])
        anomaly_map = torch.matmul(torch.matmul(self.rows_operator, patch), self.cols_operator_t)
        return anomaly_map, anomaly_map.flatten(1).amax(dim=1)


def _root_of_min(squared: torch.Tensor) -> torch.Tensor:
    """``[B x N x M]`` squared distances -> ``[B x N]`` distances to the nearest row (float error below 0 cut)."""
    return torch.sqrt(torch.clamp(squared.amin(dim=-1), min=0.0))


def squared_distances(
    features: torch.Tensor, bank: torch.Tensor, query_extra: list | None = None, bank_extra: list | None = None
) -> torch.Tensor:
    """``[B x N x M]``: each patch's squared distance to each bank row, the whole of it in one matmul,
    ``[-2f, query_extra, |f|^2, 1] . [m, bank_extra, 1, |m|^2]``, whose output goes straight into the
    minimum: adding the norms and scaling by -2 over the ``[N x M]`` distances had taken a sixth of the
    4-shot decoder on OpenVINO (docs/benchmarks.md). The extra columns add a penalty (the reach)."""
    m_sq = (bank * bank).sum(-1, keepdim=True)
    f_sq = (features * features).sum(-1, keepdim=True)
    keys = torch.cat([bank, *(bank_extra or []), torch.ones_like(m_sq), m_sq], dim=1)
    queries = torch.cat([-2.0 * features, *(query_extra or []), f_sq, torch.ones_like(f_sq)], dim=-1)
    return torch.matmul(queries, keys.t())


class FreeBankDecoder(nn.Module):
    """A decoder's graph for free banks only (``NearestNeighbourDecoder.free_distances``): the branch the
    exported decoder takes when ``ReachCheck`` says the bank allows it (``decoder_branches``)."""

    def __init__(self, decoder: NearestNeighbourDecoder) -> None:
        super().__init__()
        self.decoder = decoder

    def forward(self, features: torch.Tensor, memory_bank: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.decoder.scored(features, *self.decoder.free_distances(features, memory_bank))


class ReachCheck(nn.Module):
    """Memory bank -> whether ``FreeBankDecoder`` may decode it (``reaches_everywhere``), as a graph."""

    def __init__(self, decoder: NearestNeighbourDecoder) -> None:
        super().__init__()
        self.decoder = decoder

    def forward(self, memory_bank: torch.Tensor) -> torch.Tensor:
        return self.decoder.reaches_everywhere(memory_bank)


def grid_for(image_size: int, stride: int) -> tuple[int, int]:
    side = math.ceil(image_size / stride)
    return side, side
