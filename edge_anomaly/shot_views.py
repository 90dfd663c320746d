"""More normal evidence from few shots: the dihedral views of each shot.

A part on a line turns up rotated by quarter turns or mirrored (screws, nuts,
round or square parts); one shot seen in its 8 dihedral views covers those
poses, so a rotated normal part no longer looks anomalous. Quarter turns and
mirrors are exact on the pixel grid (no interpolation, no border filling,
unlike small-angle rotations) and move the encoder's square patch grid onto
itself, so each patch of a view can be traced to the patch of the shot it came
from (``patch_sources``): the single-shot calibration needs that to hold a
quadrant out of *every* view.

A part that stays upright (a bottle in its holder, a plate laid by hand)
turned upside down is a defect, and dihedral views would teach it as normal.
``mild`` views are for such parts: the shot turned by a few degrees and moved
by half a patch, the jitter of a part in its place. They are not exact on the
grid: each view patch is traced to the shot patch under its centre.

The bank keeps ``BANK_FACTOR`` times the patches of the plain shots (greedy
coreset over all views): 8x the patches would slow the decoder 8x.
"""

from __future__ import annotations

import cv2
import numpy as np

from .errors import InputError

AUGMENTATIONS = ("auto", "none", "mild", "dihedral")
DEFAULT_AUGMENTATION = "auto"
AUTO_MAX_SHOTS = 4  # "auto": dihedral views up to this many shots; past it the shots cover poses themselves
BANK_FACTOR = 2
# ``mild``: (degrees turned, share of the side moved right and down) of each view after the shot itself; 1/64 of
# the side is half a patch at stride 8.
MILD_MOVES = ((-5.0, 0.0), (5.0, 0.0), (0.0, 1 / 64), (0.0, -1 / 64))


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
    if augmentation == "mild":
        h, w = image.shape[:2]
        return [image] + [
            cv2.warpAffine(image, _move(w, h, *move), (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
            for move in MILD_MOVES
        ]
    raise InputError(f"unknown augmentation {augmentation!r}: expected 'none', 'mild' or 'dihedral'")


def patch_sources(side: int, augmentation: str) -> np.ndarray:
    """``[V x side*side]``: for each view, the row-major index of the shot patch each of its patches shows
    (for ``mild`` views, the shot patch under the view patch's centre, kept on the grid)."""
    index = np.arange(side * side).reshape(side, side)
    if augmentation == "dihedral":
        return np.stack([v.ravel() for v in _dihedral(index)])
    if augmentation != "mild":
        return index.ravel()[None]
    rows, cols = np.divmod(np.arange(side * side), side)
    centres = np.stack([cols + 0.5, rows + 0.5, np.ones(side * side)])  # x, y in grid cells
    sources = [index.ravel()]
    for move in MILD_MOVES:
        back = cv2.invertAffineTransform(_move(side, side, *move, continuous=True)) @ centres
        x, y = (np.clip(np.floor(v), 0, side - 1).astype(int) for v in back)
        sources.append(y * side + x)
    return np.stack(sources)


def bank_limit(patches: int, views: int, max_bank: int) -> int:
    """How many of ``patches`` (from ``views`` views of each shot) the bank may keep."""
    return max_bank if views == 1 else min(max_bank, BANK_FACTOR * patches // views)


def _move(w: int, h: int, degrees: float, shift: float, continuous: bool = False) -> np.ndarray:
    """The 2x3 affine map of a mild view: turned about the centre, then moved by ``shift`` of the side right and
    down. ``continuous``: in coordinates where a cell spans [i, i+1) (the patch grid), not pixel centres."""
    centre = (w / 2, h / 2) if continuous else ((w - 1) / 2, (h - 1) / 2)
    m = cv2.getRotationMatrix2D(centre, degrees, 1.0)
    m[:, 2] += (shift * w, shift * h)
    return m


def _dihedral(grid: np.ndarray) -> list[np.ndarray]:
    mirrored = grid[:, ::-1]
    return [np.rot90(grid, k) for k in range(4)] + [np.rot90(mirrored, k) for k in range(4)]
