"""AnomalyGPT's trained decoder without text: a small class-agnostic head added to the memory-bank map.

    python -m edge_anomaly.export.text_free_head --out export/assets/text-free-head.npz

AnomalyGPT projects patch features with small linear layers and compares them
with "normal" / "abnormal" text features; the projections are trained on
simulated anomalies (NSA cut-paste with Poisson blending) with focal + dice
loss, and the resulting map is added to the few-shot memory-bank map. We have
no text encoder, so the two prototypes per encoder stage are learned. The head
is trained once, class-agnostically, on simulated anomalies over images the
project has offline (its own textures and scikit-image's photographs, never an
evaluation category), on the features of the default encoder (Lite0, stride 8
and 16 stages). It ships as ``export/assets/text-free-head.npz`` (about 80 KB,
read with ``allow_pickle=False``) and goes into the decoder graph, so the edge
runtime runs it without knowing it is there.

Measured by ``edge_anomaly.benchmarks.text_free_head``: alone it does not
rank real images; added to the bank's patch distances with weight
``HEAD_WEIGHT`` it sharpens the maps (the figures: ``docs/accuracy.md``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.nn import functional as F
from tqdm import tqdm

from edge_anomaly.few_shot import encode_images
from edge_anomaly.fit_options import DEFAULT_STAGES
from edge_anomaly.synthetic import DEFECTS, TEXTURES, add_defect, texture_source

from .head_model import ASSET, TextFreeHead, file_sha256, save_head
from .onnx_export import build_graphs

TRAIN_IMAGES = 1600
EPOCHS = 20
IMAGE_SIZE = 256
PHOTOGRAPHS = (
    "astronaut",
    "camera",
    "cell",
    "chelsea",
    "clock",
    "coffee",
    "coins",
    "horse",
    "hubble_deep_field",
    "immunohistochemistry",
    "logo",
    "microaneurysms",
    "moon",
    "page",
    "retina",
    "rocket",
    "text",
)  # scikit-image ships these in its wheel: no download
SOURCE_NAMES = [f"texture:{t}" for t in TEXTURES] + [f"scikit-image:{p}" for p in PHOTOGRAPHS]
DEFECT_PROBABILITY = 0.8


def focal_dice_loss(probability: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """AnomalyGPT's loss: focal (gamma 2) plus dice, on binary patch targets ``[B x N]``."""
    p_true = torch.where(target > 0, probability, 1 - probability).clamp(1e-6, 1.0)
    focal = (-((1 - p_true) ** 2) * p_true.log()).mean()
    dice = 1 - (2 * (probability * target).sum() + 1) / (probability.sum() + target.sum() + 1)
    return focal + dice


def normal_sources(seed: int) -> list[np.ndarray]:
    """RGB uint8 images to crop normal views from: the project's textures and scikit-image's photographs."""
    from skimage import data  # noqa: PLC0415  (only training data needs scikit-image)

    sources = [texture_source(name, seed) for name in TEXTURES]
    for name in PHOTOGRAPHS:
        image = np.asarray(getattr(data, name)())
        if image.ndim == 2:
            image = np.repeat(image[:, :, None], 3, axis=2)
        image = image[:, :, :3].astype(np.float32)
        span = max(float(image.max() - image.min()), 1e-6)
        sources.append(((image - image.min()) * (255.0 / span)).astype(np.uint8))
    return sources


def simulated_anomalies(count: int, size: int, seed: int, sources: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """``count`` random crops (turned, mirrored) of the sources; 80% carry 1-2 of the generator's defects,
    cut-paste taking its patch from another source. Returns images ``[B x S x S x 3]`` and masks ``[B x S x S]``."""
    rng = np.random.default_rng(seed)

    def crop(source: np.ndarray) -> np.ndarray:
        h, w = source.shape[:2]
        side = int(min(h, w) * rng.uniform(0.35, 1.0))
        y, x = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
        view = cv2.resize(source[y : y + side, x : x + side], (size, size), interpolation=cv2.INTER_AREA)
        view = view[:, ::-1] if rng.random() < 0.5 else view
        return np.ascontiguousarray(np.rot90(view, int(rng.integers(4))))

    images, masks = [], []
    for _ in range(count):
        i = int(rng.integers(len(sources)))
        image, mask = crop(sources[i]), np.zeros((size, size), np.uint8)
        if rng.random() < DEFECT_PROBABILITY:
            for _ in range(int(rng.integers(1, 3))):
                other = crop(sources[(i + 1 + int(rng.integers(len(sources) - 1))) % len(sources)])
                image, defect = add_defect(image, DEFECTS[int(rng.integers(len(DEFECTS)))], rng, np.vstack([other] * 2))
                mask = np.maximum(mask, defect)
        images.append(image)
        masks.append(mask > 0)
    return np.stack(images), np.stack(masks)


def patch_targets(masks: np.ndarray, grid: int, coverage: float = 0.3) -> torch.Tensor:
    """Pixel masks -> ``[B x grid*grid]``: a patch is abnormal when ``coverage`` of it is defective."""
    fraction = F.adaptive_avg_pool2d(torch.from_numpy(masks).float()[:, None], grid)[:, 0]
    return (fraction > coverage).float().flatten(1)


def train_head(head: TextFreeHead, features: torch.Tensor, targets: torch.Tensor, epochs: int, seed: int) -> list:
    """Adam (lr 1e-3, batch 16); returns the mean loss of each epoch."""
    torch.manual_seed(seed)
    optimizer = torch.optim.Adam(head.parameters(), lr=1e-3)
    losses = []
    for _ in tqdm(range(epochs), desc="train head", leave=False):
        order, total = torch.randperm(len(features)), 0.0
        for i in range(0, len(features), 16):
            batch = order[i : i + 16]
            loss = focal_dice_loss(head(features[batch]), targets[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.detach().item() * len(batch)
        losses.append(round(total / len(features), 4))
    return losses


def train_on_simulated_anomalies(graphs, count: int = TRAIN_IMAGES, epochs: int = EPOCHS) -> tuple[TextFreeHead, list]:
    """A head for ``graphs``' encoder, trained on ``count`` simulated anomalies (seed 0); returns it and the
    loss of each epoch. The shipped asset and the benchmark both come from here."""
    images, masks = simulated_anomalies(count, graphs.image_size, 0, normal_sources(seed=0))
    features = torch.from_numpy(encode_images(graphs, list(images), graphs.preprocessing()))
    head = TextFreeHead([graphs.encoder.backbone.stage_channels[s] for s in graphs.encoder.stages])
    losses = train_head(head, features, patch_targets(masks, graphs.decoder.grid[0]), epochs, seed=0)
    return head.eval(), losses


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ASSET)
    parser.add_argument("--train", type=int, default=TRAIN_IMAGES)
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    args = parser.parse_args(argv)
    graphs = build_graphs("lite0", IMAGE_SIZE, DEFAULT_STAGES, head_weight=0.0)
    head, losses = train_on_simulated_anomalies(graphs, args.train, args.epochs)
    save_head(head, args.out)
    log = {
        "command": "python -m edge_anomaly.export.text_free_head " + " ".join(sys.argv[1:] if argv is None else argv),
        "encoder": "lite0",
        "stages": list(DEFAULT_STAGES),
        "train_images": args.train,
        "sources": SOURCE_NAMES,
        "epoch_loss": losses,
        "sha256": file_sha256(args.out),
    }
    args.out.with_suffix(".json").write_text(json.dumps(log, indent=2) + "\n")
    print(json.dumps(log))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
