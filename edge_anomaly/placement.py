"""Where on the patch grid a patch may find its normal match: anywhere, or near its own place.

A fixtured part (a bottle in its holder, a board in its jig) shows the same
thing at the same place in every frame, and its defect may be nothing but a
normal-looking thing at the wrong place: a label too low, a fill level too
high, a part missing where its look-alike sits elsewhere in the frame (MVTec
LOCO's logical anomalies). Matched anywhere, each such patch finds its twin
and scores as normal; matched only within ``REACH`` grid cells of its own
place, it does not. Parts that turn up in any pose (screws, loose parts) need
the opposite: matches anywhere, and the dihedral views of the shots.

Every bank row carries, after the patch feature, its place (grid row, grid
column) and its reach (grid cells, Chebyshev); the decoder graph reads them
from the bank itself, so it needs no other input, and a free bank is one whose
rows reach everywhere. ``auto`` chooses from the shots: they are aligned when
nearly every patch of one shot finds its nearest patch of another shot near
its own place. One shot cannot show that, so ``aligned`` needs two. Frames
presumed normal (zero-shot bootstrapping, settling on a line) are evidence
too: a few shots may share one pose by chance, a line shows whether it holds.
"""

from __future__ import annotations

import numpy as np

from .errors import InputError

LAYOUTS = ("auto", "aligned", "free")
DEFAULT_LAYOUT = "auto"
PLACE_COLUMNS = 3  # grid row, grid column, reach
REACH = 4  # grid cells: a tolerance for parts that sit a few pixels off in their fixture
EVERYWHERE = 60000.0  # the reach of a free bank's rows: beyond any grid, and exact in float16 (fp16 engines)
# ``auto``: aligned when at least this share of patches find their nearest match in another frame within REACH.
# On 10 draws of 2 and 4 shots (``benchmarks/layout_gate.py``): juice_bottle (in a holder) 0.94-0.99; metal_plate
# (laid by hand) 0.43-0.98 at 2 shots (1 draw of 10 above the line), at most 0.88 at 4; screw (any pose) at most 0.86.
ALIGNED_SHARE = 0.93
COMPARED_FRAMES = 16  # normal frames compared, each with the next: enough to tell, and bounded at any shot count


def resolve_layout(
    layout: str, shot_features: np.ndarray, presumed_features: np.ndarray | None = None
) -> tuple[str, float | None]:
    """The layout applied for shots with patch features ``[K x N x D]`` (no views), with the features of any
    frames presumed normal as more evidence, and the share of patches that matched near their place (None
    with one frame in all). Aligned needs two shots whatever the evidence: with one, a held-out quarter of
    the shot has no other patch at its place to calibrate the threshold against."""
    if layout not in LAYOUTS:
        raise InputError(f"unknown layout {layout!r}: expected one of {LAYOUTS}")
    frames = shot_features if presumed_features is None else np.concatenate([shot_features, presumed_features])
    share = aligned_share(frames) if len(frames) >= 2 else None
    if layout == "aligned" and len(shot_features) < 2:
        raise InputError("an aligned layout needs at least 2 shots: one shot cannot show where things belong")
    if layout == "auto":
        layout = "aligned" if len(shot_features) >= 2 and share >= ALIGNED_SHARE else "free"
    return layout, share


def aligned_share(plain_features: np.ndarray) -> float:
    """The share of patches whose nearest patch in the neighbouring frame (each of the first ``COMPARED_FRAMES``
    frames against the next, both ways) lies within ``REACH`` grid cells of their own place."""
    frames = np.asarray(plain_features[:COMPARED_FRAMES], dtype=np.float32)
    places = grid_places(frames.shape[1])
    shares = []
    for a, b in zip(range(len(frames) - 1), range(1, len(frames))):
        for query, other in ((frames[a], frames[b]), (frames[b], frames[a])):
            nearest = (np.einsum("md,md->m", other, other)[None, :] - 2.0 * query @ other.T).argmin(axis=1)
            shares.append(float((np.abs(places - places[nearest]).max(axis=1) <= REACH).mean()))
    return float(np.mean(shares))


def grid_places(patches: int) -> np.ndarray:
    """``[N x 2]`` (row, column) of each patch of a square, row-major grid."""
    side = int(round(np.sqrt(patches)))
    if side * side != patches:
        raise ValueError(f"expected a square patch grid, got {patches} patches")
    return np.stack(np.divmod(np.arange(patches), side), axis=1)


def with_places(features: np.ndarray, reach: float) -> np.ndarray:
    """Patch features ``[... x N x D]`` -> bank rows ``[... x N x (D + 3)]``: each feature, then its place on the
    grid and ``reach``. Only a view's own grid counts: aligned banks hold no views."""
    patches = features.shape[-2]
    places = np.concatenate([grid_places(patches), np.full((patches, 1), reach)], axis=1).astype(np.float32)
    places = np.broadcast_to(places, (*features.shape[:-1], PLACE_COLUMNS))
    return np.concatenate([np.asarray(features, dtype=np.float32), places], axis=-1)


def free_rows(features: np.ndarray) -> np.ndarray:
    """Patch features ``[N x D]`` as bank rows any patch may match (zero-shot scoring of frames against
    each other)."""
    return with_places(features, EVERYWHERE)


def is_aligned(rows: np.ndarray) -> bool:
    """Whether any of these bank rows reaches less than everywhere."""
    return bool((rows[:, -1] < EVERYWHERE).any())


def check_rows(rows: np.ndarray, grid: tuple[int, int]) -> None:
    """Refuse bank rows whose places lie off the ``grid`` or whose reach is negative, and a bank that leaves
    some place with no row in reach (every patch there would score as a defect). Raises ValueError."""
    place, reach = rows[:, -PLACE_COLUMNS:-1], rows[:, -1]
    if not (np.isfinite(place).all() and np.isfinite(reach).all()):
        raise ValueError("bank places and reaches must be finite")
    if (place < 0).any() or (place >= np.asarray(grid)).any() or (reach < 0).any():
        raise ValueError(f"bank places must lie on the {grid[0]} x {grid[1]} grid, with a reach of at least 0")
    covered = np.zeros(grid, dtype=bool)
    for row, col, cells in np.unique(np.column_stack([place, np.minimum(reach, max(grid))]).astype(int), axis=0):
        covered[max(0, row - cells) : row + cells + 1, max(0, col - cells) : col + cells + 1] = True
    if not covered.all():
        raise ValueError(f"the bank leaves {int((~covered).sum())} grid places with no normal patch in reach")
