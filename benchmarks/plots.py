"""Figures for the accuracy report: ROC curves per category and a grid of overlays (matplotlib, PNG)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.image as mpimg  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
from sklearn.metrics import roc_curve  # noqa: E402


def roc_figure(runs: list[dict], out: Path) -> Path:
    """Image-level ROC of each run (category, shots, seed) from its per-image scores."""
    fig, ax = plt.subplots(figsize=(6, 5))
    for run in runs:
        labels = [p["label"] for p in run["per_image"]]
        scores = [p["score"] for p in run["per_image"]]
        fpr, tpr, _ = roc_curve(labels, scores)
        ax.plot(fpr, tpr, label=f"{run['category']} {run['shots']}-shot s{run['seed']} ({run['image_auroc']:.3f})")
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title("image-level ROC (AUROC in brackets)")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def overlay_grid(folder: Path, out: Path, columns: int = 6) -> Path:
    """All overlay PNGs of ``folder`` in one labelled grid."""
    paths = sorted(folder.glob("*_overlay.png"))
    if not paths:
        raise FileNotFoundError(f"no overlays in {folder}")
    rows = -(-len(paths) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(2.2 * columns, 2.4 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, path in zip(axes.ravel(), paths):
        ax.imshow(mpimg.imread(path))
        ax.set_title(path.stem.replace("_overlay", ""), fontsize=6)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
