"""Where the object is, for a part shown on a plain background: pixels unlike the frame's border.

A tire on black cloth or a bottle against a dark wall is framed by its
background, so the border of the frame says what background looks like: its
colour and how grainy it is. A pixel whose neighbourhood differs from that by
more than the border's own spread is the object. A textured surface that fills
the frame (a commutator, fabric) has no plain border; it gets no mask, and the
whole frame counts. The image-score study weighs the map by this mask
(``evaluation.score_rules``), the issue-16 "foreground weighting".
"""

from __future__ import annotations

import cv2
import numpy as np

SIDE = 256  # the mask is computed at this side and then resized: the map's own detail is not needed
BORDER = 8  # pixels of the frame's edge taken as background
WINDOW = 9  # pixels: the neighbourhood whose mean colour and grain a pixel is judged by
MIN_TOLERANCE = 10.0  # Lab units: below this two neighbourhoods look alike whatever the border's spread
BORDER_Z = 3.0  # robust standard deviations of the border's own spread
MASK_SHARE = (0.05, 0.95)  # a mask outside this share of the frame is no object on a background


def foreground_mask(image: np.ndarray) -> np.ndarray | None:
    """``image``: RGB uint8 ``[H x W x 3]`` -> a bool mask ``[H x W]`` of the object, or None where the frame
    has no plain background (its border is as varied as the rest, or the object fills the frame)."""
    h, w = image.shape[:2]
    small = cv2.resize(image, (SIDE, SIDE), interpolation=cv2.INTER_AREA)
    lab = cv2.cvtColor(small, cv2.COLOR_RGB2LAB).astype(np.float32)
    grey = lab[..., 0]
    mean = cv2.blur(grey, (WINDOW, WINDOW))
    grain = np.sqrt(np.maximum(cv2.blur(grey * grey, (WINDOW, WINDOW)) - mean * mean, 0.0))
    look = np.concatenate([cv2.blur(lab, (WINDOW, WINDOW)), 2.0 * grain[..., None]], axis=2)
    edge = np.zeros((SIDE, SIDE), dtype=bool)
    edge[:BORDER], edge[-BORDER:], edge[:, :BORDER], edge[:, -BORDER:] = True, True, True, True
    border = look[edge]
    background = np.median(border, axis=0)
    spread = np.median(np.linalg.norm(border - background, axis=1))
    tolerance = max(MIN_TOLERANCE, BORDER_Z * 1.4826 * float(spread))
    mask = (np.linalg.norm(look - background, axis=2) > tolerance).astype(np.uint8)
    kernel = np.ones((WINDOW, WINDOW), dtype=np.uint8)
    mask = cv2.morphologyEx(cv2.morphologyEx(mask, cv2.MORPH_CLOSE, kernel), cv2.MORPH_OPEN, kernel)
    if not MASK_SHARE[0] <= mask.mean() <= MASK_SHARE[1]:
        return None
    return cv2.resize(mask, (w, h), interpolation=cv2.INTER_NEAREST).astype(bool)
