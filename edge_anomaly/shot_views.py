"""More normal evidence from few shots: the dihedral views of each shot.

A part on a line turns up rotated by quarter turns or mirrored (screws, nuts,
round or square parts); one shot seen in its 8 dihedral views covers those
poses, so a rotated normal part no longer looks anomalous. Quarter turns and
mirrors are exact on the pixel grid (no interpolation, no border filling,
unlike small-angle rotations) and move the encoder's square patch grid onto
itself, so each patch of a view can be traced to the patch of the shot it came
from (``patch_sources``): the single-shot calibration needs that to hold a
quadrant out of *every* view.

The bank keeps ``BANK_FACTOR`` times the patches of the plain shots (greedy
coreset over all views): 8x the patches would slow the decoder 8x.
"""

from __future__ import annotations

import numpy as np

from .errors import InputError

AUGMENTATIONS = ("auto", "none", "dihedral")
DEFAULT_AUGMENTATION = "auto"
AUTO_MAX_SHOTS = 4  # "auto": dihedral views up to this many shots; past it the shots cover poses themselves
BANK_FACTOR = 2


def resolve_augmentation(augmentation: str, shots: int) -> str:
    """The augmentation actually applied: ``auto`` is ``dihedral`` for at most ``AUTO_MAX_SHOTS`` shots.

    Few shots show few poses; views add the turned and mirrored ones, at the price of a bank twice the
    size (decoder time) and a longer fit. What they gain on the dev set: ``docs/accuracy.md``.
    """
    if augmentation not in AUGMENTATIONS:
        raise InputError(f"unknown augmentation {augmentation!r}: expected one of {AUGMENTATIONS}")
    if augmentation == "auto":
        return "dihedral" if shots <= AUTO_MAX_SHOTS else "none"
    return augmentation


def shot_views(image: np.ndarray, augmentation: str) -> list[np.ndarray]:
    """The views of one square shot; the first is always the shot itself. ``augmentation`` as resolved."""
    if augmentation == "none":
        return [image]
    if augmentation == "dihedral":
        return [np.ascontiguousarray(v) for v in _dihedral(image)]
    raise InputError(f"unknown augmentation {augmentation!r}: expected 'none' or 'dihedral'")


def patch_sources(side: int, augmentation: str) -> np.ndarray:
    """``[V x side*side]``: for each view, the row-major index of the shot patch each of its patches shows."""
    index = np.arange(side * side).reshape(side, side)
    return np.stack([v.ravel() for v in (_dihedral(index) if augmentation == "dihedral" else [index])])


def bank_limit(patches: int, views: int, max_bank: int) -> int:
    """How many of ``patches`` (from ``views`` views of each shot) the bank may keep."""
    return max_bank if views == 1 else min(max_bank, BANK_FACTOR * patches // views)


def _dihedral(grid: np.ndarray) -> list[np.ndarray]:
    mirrored = grid[:, ::-1]
    return [np.rot90(grid, k) for k in range(4)] + [np.rot90(mirrored, k) for k in range(4)]
