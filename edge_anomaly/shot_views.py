"""More normal evidence from few shots: the dihedral views of each shot.

A part on a line turns up rotated by quarter turns or mirrored (screws, nuts,
round or square parts); one shot seen in its 8 dihedral views covers those
poses, so a rotated normal part no longer looks anomalous. Quarter turns and
mirrors are exact on the pixel grid (no interpolation, no border filling,
unlike small-angle rotations) and move the encoder's square patch grid onto
itself, so each patch of a view can be traced to the patch of the shot it came
from (``patch_sources``): the single-shot calibration needs that to hold a
quadrant out of *every* view.

A part that lies at any angle (a screw, a round part) shows poses between
the quarter turns too. ``turns`` adds the shot turned by an eighth turn (45
degrees) in all its dihedral views: 16 views in all. An eighth turn is not
exact on the grid; the frame's corners are filled by reflection, and each view
patch is traced to the shot patch under its centre.

The bank keeps ``BANK_FACTOR`` times the patches of the plain shots (greedy
coreset over all views): 8x the patches would slow the decoder 8x.
"""

from __future__ import annotations

import cv2
import numpy as np

from .errors import InputError

AUGMENTATIONS = ("auto", "none", "dihedral", "turns")
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
    if augmentation == "turns":
        h, w = image.shape[:2]
        turn = _eighth_turn(w, h)
        turned = cv2.warpAffine(image, turn, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
        return [np.ascontiguousarray(v) for v in (*_dihedral(image), *_dihedral(turned))]
    raise InputError(f"unknown augmentation {augmentation!r}: expected 'none', 'dihedral' or 'turns'")


def patch_sources(side: int, augmentation: str) -> np.ndarray:
    """``[V x side*side]``: for each view, the row-major index of the shot patch each of its patches shows
    (in an eighth-turned view, the shot patch under the view patch's centre, kept on the grid)."""
    index = np.arange(side * side).reshape(side, side)
    if augmentation == "none":
        return index.ravel()[None]
    grids = _dihedral(index)
    if augmentation == "turns":
        rows, cols = np.divmod(np.arange(side * side), side)
        centres = np.stack([cols + 0.5, rows + 0.5, np.ones(side * side)])  # x, y in grid cells
        back = cv2.invertAffineTransform(_eighth_turn(side, side, continuous=True)) @ centres
        x, y = (np.clip(np.floor(v), 0, side - 1).astype(int) for v in back)
        grids += _dihedral((y * side + x).reshape(side, side))
    return np.stack([v.ravel() for v in grids])


def bank_limit(patches: int, views: int, max_bank: int) -> int:
    """How many of ``patches`` (from ``views`` views of each shot) the bank may keep."""
    return max_bank if views == 1 else min(max_bank, BANK_FACTOR * patches // views)


def _eighth_turn(w: int, h: int, continuous: bool = False) -> np.ndarray:
    """The 2x3 affine map of a turn by 45 degrees about the centre. ``continuous``: in coordinates where a
    cell spans [i, i+1) (the patch grid), not pixel centres."""
    centre = (w / 2, h / 2) if continuous else ((w - 1) / 2, (h - 1) / 2)
    return cv2.getRotationMatrix2D(centre, 45.0, 1.0)


def _dihedral(grid: np.ndarray) -> list[np.ndarray]:
    mirrored = grid[:, ::-1]
    return [np.rot90(grid, k) for k in range(4)] + [np.rot90(mirrored, k) for k in range(4)]
