"""Encoder and decoder graphs -> ONNX (opset 17, dynamic batch and memory-bank length)."""

from __future__ import annotations

import tempfile
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from edge_anomaly import bundle_format as fmt
from edge_anomaly.fit_options import (
    DEFAULT_BANK_NEIGHBOURHOOD,
    DEFAULT_NEIGHBOURHOOD,
    DEFAULT_SCORE_NEIGHBOURHOOD,
    DEFAULT_STAGES,
)
from edge_anomaly.images import Preprocessing
from edge_anomaly.manifest import DecoderSection, EncoderSection, GraphSections, HeadSection, InputSection, OnnxSection
from edge_anomaly.placement import PLACE_COLUMNS

from .decoder_branches import with_free_branch
from .efficientnet_lite import load_efficientnet_lite
from .encoders import resolve_encoder
from .head_model import ASSET as HEAD_ASSET
from .head_model import HEAD_NEIGHBOURHOOD, HEAD_WEIGHT, file_sha256, load_head
from .patch_model import FreeBankDecoder, NearestNeighbourDecoder, PatchEncoder, ReachCheck, grid_for
from .stage_balance import balanced_scales

OPSET = 17
SIGMA = 4.0
MEAN = (0.5, 0.5, 0.5)  # how the TF Lite weights were trained
STD = (0.5, 0.5, 0.5)
# the manifest's aggregation words for each feature norm ("shots" and "balanced" add their divisors later)
NORM_WORDS = {
    "stage": ", L2-normalized per stage",
    "none": ", not normalized",
    "shots": "",
    "balanced": ", L2-normalized per stage",
}


@dataclass(frozen=True)
class DetectorGraphs:
    """The torch modules behind a bundle, and the manifest sections that describe them.

    ``encode`` / ``decode`` give them the runtime backends' surface, so the product's own fitting and
    encoding (``few_shot``) run on them directly when training or measuring, without an ONNX round trip."""

    encoder: PatchEncoder
    decoder: NearestNeighbourDecoder
    image_size: int
    sections: GraphSections

    @torch.no_grad()
    def encode(self, batch: np.ndarray) -> np.ndarray:
        return self.encoder(torch.from_numpy(batch)).numpy()

    @torch.no_grad()
    def decode(self, features: np.ndarray, bank: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """As the exported decoder: the free-bank branch where every row reaches everywhere."""
        features_t, bank_t = torch.from_numpy(features), torch.from_numpy(bank)
        free = bool(self.decoder.reaches_everywhere(bank_t))
        maps, scores = (FreeBankDecoder(self.decoder) if free else self.decoder)(features_t, bank_t)
        return maps.numpy(), scores.numpy()

    def preprocessing(self) -> Preprocessing:
        """How frames are brought to the encoder's input."""
        return Preprocessing(self.image_size, self.sections.input.mean, self.sections.input.std)

    def with_stage_scales(self, shots: list[np.ndarray]) -> DetectorGraphs:
        """``feature_norm="shots"``: the encoder's per-stage divisors fitted on the shots (RGB), and the
        manifest saying which; the graphs to export."""
        scales = self.encoder.fit_stage_scales(torch.from_numpy(self.preprocessing().batch(shots)))
        aggregation = f"{self.sections.encoder.aggregation}, each stage divided by its mean norm on the shots {scales}"
        encoder = replace(self.sections.encoder, aggregation=aggregation)
        return replace(self, sections=replace(self.sections, encoder=encoder))

    def with_balanced_scales(self, shots: list[np.ndarray], seed: int = 0) -> DetectorGraphs:
        """``feature_norm="balanced"``: the encoder's per-part divisors measured on the shots (RGB,
        ``stage_balance``), the head told to undo them on the parts it reads, and the manifest saying so."""
        scales = balanced_scales(self, shots, seed)
        self.encoder.stage_scales.copy_(torch.tensor(scales))
        head = self.decoder.head
        if head is not None:
            gains = [scales[self.encoder.parts.index((s, HEAD_NEIGHBOURHOOD))] for s in DEFAULT_STAGES]
            head.input_gains.copy_(torch.tensor(gains))
        rounded = [round(s, 6) for s in scales]
        aggregation = f"{self.sections.encoder.aggregation}, each part then divided by {rounded} (balanced on shots)"
        encoder = replace(self.sections.encoder, aggregation=aggregation)
        return replace(self, sections=replace(self.sections, encoder=encoder))


def build_graphs(
    encoder: str = "lite0",
    image_size: int = 256,
    stages: tuple[int, ...] = DEFAULT_STAGES,
    head_weight: float | None = None,
    feature_norm: str = fmt.DEFAULT_FEATURE_NORM,
    neighbourhood: tuple[int, ...] = DEFAULT_NEIGHBOURHOOD,
    score_neighbourhood: tuple[int, ...] | None = DEFAULT_SCORE_NEIGHBOURHOOD,
    bank_neighbourhood: tuple[int, ...] | None = DEFAULT_BANK_NEIGHBOURHOOD,
) -> DetectorGraphs:
    """Torch encoder and decoder for ``encoder`` at ``image_size`` (a multiple of 16, at least 64).

    ``head_weight``: how much of the text-free head's map joins the bank's (0: none); by default
    ``HEAD_WEIGHT`` where the head fits (it was trained on Lite0's default stages, per-stage normalised;
    under "balanced" it undoes the divisors), else none. The head reads the 3x3 parts of those stages, so it
    fits wherever the encoder has them (more stages or sizes beside them included). ``feature_norm``,
    ``neighbourhood``, ``score_neighbourhood``, ``bank_neighbourhood``: ``PatchEncoder``'s."""
    if image_size % 16 or image_size < 64:
        raise ValueError(f"image size must be a multiple of 16 and at least 64, got {image_size}")
    source = resolve_encoder(encoder)
    head_fits = (
        encoder == "lite0"
        and set(DEFAULT_STAGES) <= set(stages)
        and HEAD_NEIGHBOURHOOD in neighbourhood
        and feature_norm in ("stage", "balanced")
    )
    if head_weight is None:
        head_weight = HEAD_WEIGHT if head_fits else 0.0
    if head_weight < 0 or (head_weight and not head_fits):
        raise ValueError(
            f"head weight must be >= 0 and needs the lite0 encoder with stages {DEFAULT_STAGES} at neighbourhood "
            f"{HEAD_NEIGHBOURHOOD}, per-stage normalised, got {head_weight} with {encoder} stages {stages}, "
            f"neighbourhood {neighbourhood}, feature norm {feature_norm}"
        )
    backbone = load_efficientnet_lite(source.checkpoint)
    patch_encoder = PatchEncoder(
        backbone, stages, feature_norm, neighbourhood, score_neighbourhood, bank_neighbourhood
    ).eval()
    grid = grid_for(image_size, patch_encoder.stride)
    head = None
    if head_weight:
        columns = [patch_encoder.part_columns(s, HEAD_NEIGHBOURHOOD) for s in DEFAULT_STAGES]
        head = load_head(HEAD_ASSET).reading(columns)
    split = patch_encoder.score_features
    decoder = NearestNeighbourDecoder(grid, (image_size, image_size), SIGMA, head, head_weight, split).eval()
    head_section = (
        HeadSection(
            weight=float(head_weight),
            weights_sha256=file_sha256(HEAD_ASSET),
            method="abnormal probability from learned prototypes, added to the patch distance",
        )
        if head_weight
        else None
    )
    sections = GraphSections(
        input=InputSection(size=image_size, mean=MEAN, std=STD),
        encoder=EncoderSection(
            name=source.name,
            weights_sha256=source.sha256(),
            stages=tuple(patch_encoder.stages),
            strides=tuple(patch_encoder.backbone.strides()[s] for s in patch_encoder.stages),
            feature_dim=patch_encoder.feature_dim,
            grid=tuple(grid),
            aggregation=" and ".join(f"{k}x{k}" for k in patch_encoder.neighbourhood)
            + " local mean per stage, bilinear to the finest grid"
            + NORM_WORDS[feature_norm],
            feature_norm=feature_norm,
            bank_features=patch_encoder.bank_features,
        ),
        decoder=DecoderSection(
            kind="nearest-neighbour distance to the memory bank",
            smoothing_sigma=SIGMA,
            score="maximum of the smoothed anomaly map"
            if split is None
            else "maximum of a second smoothed map, from the "
            + " and ".join(f"{k}x{k}" for k in patch_encoder.score_sizes)
            + " parts only",
            text_free_head=head_section,
            score_features=split,
        ),
        onnx=OnnxSection(opset=OPSET, dynamic_axes=("batch", "memory_bank_size")),
    )
    return DetectorGraphs(patch_encoder, decoder, image_size, sections)


def export_onnx(graphs: DetectorGraphs, out_dir: Path) -> tuple[Path, Path]:
    """Write ``encoder.onnx`` and ``decoder.onnx`` into ``out_dir``."""
    size = graphs.image_size
    image = torch.zeros(1, 3, size, size)
    with torch.no_grad():
        features = graphs.encoder(image)
    bank = torch.zeros(4, features.shape[-1] + PLACE_COLUMNS)  # feature, place, reach (placement)
    encoder_path, decoder_path = out_dir / fmt.ENCODER_ONNX, out_dir / fmt.DECODER_ONNX
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer chatter about constant shapes, expected here
        batch = {0: "batch"}
        _to_onnx(graphs.encoder, (image,), encoder_path, {fmt.ENCODER_INPUT: batch, fmt.ENCODER_OUTPUT: batch})
        bank_rows = {0: "memory_bank_size"}
        decoder_axes = dict(zip((*fmt.DECODER_INPUTS, *fmt.DECODER_OUTPUTS), (batch, bank_rows, batch, batch)))
        with tempfile.TemporaryDirectory(prefix="edge-anomaly-decoder-") as work:
            full, free, check = (Path(work) / f"{name}.onnx" for name in ("full", "free", "reach"))
            _to_onnx(graphs.decoder, (features, bank), full, decoder_axes)
            _to_onnx(FreeBankDecoder(graphs.decoder), (features, bank), free, decoder_axes)
            reach_axes = {fmt.DECODER_INPUTS[1]: bank_rows, "reaches_everywhere": {}}
            _to_onnx(ReachCheck(graphs.decoder), (bank,), check, reach_axes)
            with_free_branch(full, free, check, decoder_path)
    return encoder_path, decoder_path


def _to_onnx(module: torch.nn.Module, args: tuple, path: Path, names: dict[str, dict[int, str]]) -> None:
    """Trace ``module`` on ``args`` to ``path`` at the bundle's opset. ``names``: each input, then each output
    (as many as the module has of each, in order), with its dynamic axes."""
    torch.onnx.export(
        module,
        args,
        str(path),
        input_names=list(names)[: len(args)],
        output_names=list(names)[len(args) :],
        dynamic_axes={name: axes for name, axes in names.items() if axes},
        opset_version=OPSET,
        dynamo=False,
    )
