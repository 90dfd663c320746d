"""What every command's parser shares: the usage-error contract, value parsers and the option groups.

The fit options come from ``FitOptions`` (one flag per field, added once here),
so ``export``, ``eval`` and the accuracy benchmark offer the same flags with the
same defaults and checks.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from edge_anomaly.bundle_format import FEATURE_NORMS
from edge_anomaly.fit_options import DEFAULT_FIT, ENCODER_PRECISIONS, FitOptions
from edge_anomaly.placement import LAYOUTS
from edge_anomaly.shot_views import AUGMENTATIONS

EXIT_USAGE = 2  # every mistake a user can fix: one line on stderr, this status

BACKEND_HELP = (
    "auto, tensorrt, onnxruntime, onnxruntime-cpu, onnxruntime-cuda, openvino, openvino-bf16 (bf16 decoder), or "
    "triton://host:8000/MODEL "
    "(the graphs on an edge-anomaly serve server; triton+grpc://host:8001/MODEL for gRPC)"
)
FIT_HELP = {
    "image_size": "encoder input side, a multiple of 16",
    "encoder": "lite0, lite1, lite2 or a .pth checkpoint",
    "stages": "EfficientNet-Lite stages whose features are concatenated (2 4: strides 8 and 16; the head needs these)",
    "neighbourhood": "sides of the local means each stage is aggregated over, one feature part per side (3: "
    "PatchCore's 3x3; 1 3 5: several scales, as MuSc; the head needs 3 among them)",
    "score_neighbourhood": "the sizes among --neighbourhood whose parts the image score reads (default: all); "
    "the map reads every part, with a threshold of its own for its regions (3 with --neighbourhood 1 3: the "
    "3x3 score and threshold, a sharper map)",
    "bank_neighbourhood": "the sizes among the score's whose parts choose the memory bank's rows (coreset) and "
    "decide the layout (default: the score's)",
    "augmentation": "views of each normal shot put into the bank: 'dihedral' adds quarter turns and mirror images",
    "layout": "where a patch may find its normal match: 'aligned' (fixtured parts, near its own place; 2+ shots, "
    "no views), 'free' (anywhere) or 'auto' (aligned when the shots show it)",
    "head_weight": "share of the trained text-free head's map in the decoder (0: memory bank only; default 0.25 "
    "with lite0)",
    "feature_norm": "'stage': each stage's features L2-normalised per patch (the default); 'none': as PatchCore "
    "keeps them; 'shots': each stage divided by its mean patch norm on the shots; 'balanced': L2 per stage, then "
    "each stage weighted so that its typical nearest-neighbour distance on the shots is the same",
    "encoder_precision": "'int8': the encoder quantized (NNCF; stem and block 0 in float) and the bank fitted "
    "through it, kept only where it decides as fp32 does on synthetic defects (threshold and scores within 10%% "
    "of it, flagged pixels overlapping by 0.75); 'fp32' the default",
    "max_bank": "most patches the memory bank keeps (greedy coreset past it)",
    "seed": "seed for choosing shots",
}


class Parser(argparse.ArgumentParser):
    """Usage mistakes end in one line and exit 2, as every other mistake does."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def at_least(low: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value

    return parse


def image_size(text: str) -> int:
    value = at_least(64)(text)
    if value % 16:
        raise argparse.ArgumentTypeError(f"must be a multiple of 16, got {value}")
    return value


def port(text: str) -> int:
    value = at_least(1)(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"must be a port number up to 65535, got {value}")
    return value


def non_negative(text: str) -> float:
    """A finite number of at least 0 (a threshold, a weight): NaN and infinity are refused here."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number of at least 0, got {text}")
    return value


def add_fit_arguments(parser: argparse.ArgumentParser, seed: bool = True) -> None:
    """One flag per ``FitOptions`` field (``seed`` False: the caller has its own, e.g. a list of seeds)."""
    d = DEFAULT_FIT
    parser.add_argument("--image-size", type=image_size, default=d.image_size, help=FIT_HELP["image_size"])
    parser.add_argument("--encoder", default=d.encoder, help=FIT_HELP["encoder"])
    parser.add_argument("--stages", type=int, nargs="+", default=list(d.stages), help=FIT_HELP["stages"])
    parser.add_argument(
        "--neighbourhood", type=int, nargs="+", default=list(d.neighbourhood), help=FIT_HELP["neighbourhood"]
    )
    score_sizes = None if d.score_neighbourhood is None else list(d.score_neighbourhood)
    parser.add_argument(
        "--score-neighbourhood", type=int, nargs="+", default=score_sizes, help=FIT_HELP["score_neighbourhood"]
    )
    bank_sizes = None if d.bank_neighbourhood is None else list(d.bank_neighbourhood)
    parser.add_argument(
        "--bank-neighbourhood", type=int, nargs="+", default=bank_sizes, help=FIT_HELP["bank_neighbourhood"]
    )
    parser.add_argument("--augment", choices=AUGMENTATIONS, default=d.augmentation, help=FIT_HELP["augmentation"])
    parser.add_argument("--layout", choices=LAYOUTS, default=d.layout, help=FIT_HELP["layout"])
    parser.add_argument("--head-weight", type=non_negative, default=d.head_weight, help=FIT_HELP["head_weight"])
    parser.add_argument("--feature-norm", choices=FEATURE_NORMS, default=d.feature_norm, help=FIT_HELP["feature_norm"])
    parser.add_argument(
        "--encoder-precision", choices=ENCODER_PRECISIONS, default=d.encoder_precision,
        help=FIT_HELP["encoder_precision"],
    )  # fmt: skip
    parser.add_argument("--max-bank", type=at_least(1), default=d.max_bank, help=FIT_HELP["max_bank"])
    if seed:
        parser.add_argument("--seed", type=int, default=d.seed, help=FIT_HELP["seed"])


def fit_options(args: argparse.Namespace, seed: int | None = None) -> FitOptions:
    """The ``FitOptions`` the flags of ``add_fit_arguments`` give (``seed``: instead of ``--seed``)."""
    return FitOptions(
        image_size=args.image_size,
        encoder=args.encoder,
        stages=tuple(args.stages),
        neighbourhood=tuple(args.neighbourhood),
        score_neighbourhood=None if args.score_neighbourhood is None else tuple(args.score_neighbourhood),
        bank_neighbourhood=None if args.bank_neighbourhood is None else tuple(args.bank_neighbourhood),
        augmentation=args.augment,
        layout=args.layout,
        head_weight=args.head_weight,
        feature_norm=args.feature_norm,
        encoder_precision=args.encoder_precision,
        max_bank=args.max_bank,
        seed=args.seed if seed is None else seed,
    )


def add_backend_argument(parser: argparse.ArgumentParser, help: str = BACKEND_HELP) -> None:
    parser.add_argument("--backend", default="auto", help=help)


def add_trusted_key_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--trusted-key",
        type=Path,
        action="append",
        metavar="PUB",
        help="Ed25519 public key (PEM); repeatable. Then only a bundle signed by one of them is opened",
    )
