"""How a detector is fitted to normal shots: one set of options for export, eval, refit and the benchmarks.

The options are stored once in the manifest (its ``fit`` section) as they were
asked for, so a refit on the edge box (``Inspector.add_normal_shots``) decides
``auto`` again from the new shots, while the ``memory_bank`` section records
what was applied. The CLI adds one flag per field (``cli.parsing``).
"""

from __future__ import annotations

from dataclasses import dataclass

from .bundle_format import DEFAULT_FEATURE_NORM, FEATURE_NORMS
from .errors import InputError
from .memory_bank import DEFAULT_MAX_SIZE
from .placement import DEFAULT_LAYOUT, LAYOUTS
from .shot_views import AUGMENTATIONS, DEFAULT_AUGMENTATION

ENCODER_PRECISIONS = ("fp32", "int8")
DEFAULT_STAGES = (2, 4)  # EfficientNet-Lite stages at strides 8 and 16
# Each EfficientNet-Lite stage's output stride (``export.efficientnet_lite``'s ``strides()``; a test keeps them
# equal), known here so that a size the stages cannot tile is refused before torch is loaded.
STAGE_OUTPUT_STRIDES = (2, 4, 8, 16, 16, 32, 32)
DEFAULT_NEIGHBOURHOOD = (3,)  # sides of the local means each stage is aggregated over (PatchCore's 3x3)
# The sizes the image score reads, None: all of the neighbourhood's (``export.patch_model.PatchEncoder``).
DEFAULT_SCORE_NEIGHBOURHOOD: tuple[int, ...] | None = None
# The sizes whose parts choose the bank's rows (coreset) and the layout, None: the score's.
DEFAULT_BANK_NEIGHBOURHOOD: tuple[int, ...] | None = None
MAX_NEIGHBOURHOOD = 7


@dataclass(frozen=True)
class FitOptions:
    """``head_weight`` None: the encoder's default (0.25 with lite0 on the default stages, else 0).
    ``score_neighbourhood`` None: the image score reads every part the map reads. ``bank_neighbourhood`` None:
    the bank's rows and the layout are chosen by the parts the score reads."""

    image_size: int = 256
    encoder: str = "lite0"
    stages: tuple[int, ...] = DEFAULT_STAGES
    neighbourhood: tuple[int, ...] = DEFAULT_NEIGHBOURHOOD
    score_neighbourhood: tuple[int, ...] | None = DEFAULT_SCORE_NEIGHBOURHOOD
    bank_neighbourhood: tuple[int, ...] | None = DEFAULT_BANK_NEIGHBOURHOOD
    augmentation: str = DEFAULT_AUGMENTATION
    layout: str = DEFAULT_LAYOUT
    head_weight: float | None = None
    feature_norm: str = DEFAULT_FEATURE_NORM
    encoder_precision: str = "fp32"
    max_bank: int = DEFAULT_MAX_SIZE
    seed: int = 0

    def __post_init__(self) -> None:
        problem = self.problem()
        if problem:
            raise InputError(f"fit options: {problem}")

    def problem(self) -> str | None:
        """What is wrong with these options, or None; checked before any work is done."""
        if not _whole(self.image_size) or self.image_size < 64 or self.image_size % 16:
            return f"image_size must be a multiple of 16 of at least 64, got {self.image_size!r}"
        if not isinstance(self.encoder, str) or not self.encoder:
            return f"encoder must be a name or a checkpoint path, got {self.encoder!r}"  # export.encoders knows which
        if not self.stages or not all(_whole(s) and 0 <= s <= 6 for s in self.stages):
            return f"stages must be EfficientNet-Lite stage numbers 0-6, got {self.stages!r}"
        sizes = self.neighbourhood
        if not sizes or not all(_whole(k) and k % 2 == 1 and 1 <= k <= MAX_NEIGHBOURHOOD for k in sizes):
            return f"neighbourhood must be odd sides 1-{MAX_NEIGHBOURHOOD}, got {sizes!r}"
        if len(set(sizes)) != len(sizes) or len(set(self.stages)) != len(self.stages):
            return f"stages and neighbourhood must not repeat, got {self.stages!r} and {sizes!r}"
        scored = self.score_neighbourhood
        if scored is not None and (not scored or len(set(scored)) != len(scored) or not set(scored) <= set(sizes)):
            return f"score_neighbourhood must be some of the neighbourhood's sizes {sizes!r}, got {scored!r}"
        chosen = self.bank_neighbourhood
        among = sizes if scored is None else scored
        if chosen is not None and (not chosen or len(set(chosen)) != len(chosen) or not set(chosen) <= set(among)):
            return f"bank_neighbourhood must be some of the score's sizes {among!r}, got {chosen!r}"
        step = size_step(self.stages)
        if self.image_size % step:
            return f"image_size must be a multiple of {step} for stages {list(self.stages)}, got {self.image_size}"
        for name, value, choices in (
            ("augmentation", self.augmentation, AUGMENTATIONS),
            ("layout", self.layout, LAYOUTS),
            ("feature_norm", self.feature_norm, FEATURE_NORMS),
            ("encoder_precision", self.encoder_precision, ENCODER_PRECISIONS),
        ):
            if value not in choices:
                return f"{name} must be one of {choices}, got {value!r}"
        weight = self.head_weight
        if weight is not None and (isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight < 0):
            return f"head_weight must be a number of at least 0 or None, got {weight!r}"
        if not _whole(self.max_bank) or self.max_bank < 1:
            return f"max_bank must be a positive whole number, got {self.max_bank!r}"
        if not _whole(self.seed):
            return f"seed must be a whole number, got {self.seed!r}"
        return None


def size_step(stages: tuple[int, ...]) -> int:
    """The multiple an input size must be for these stages: every stage's grid whole (no stage rounds its
    side up while another does not), and the finest grid of even side, since the calibration holds out its
    quarters."""
    strides = [STAGE_OUTPUT_STRIDES[s] for s in stages]
    return max(max(strides), 2 * min(strides))


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


DEFAULT_FIT = FitOptions()
