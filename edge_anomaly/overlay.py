"""Overlay images an operator can read at a glance: heatmap, region boxes, decision."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from .errors import InputError
from .images import ImageLike, as_rgb
from .result import InspectionResult

RED, GREEN = (0, 0, 255), (0, 170, 0)  # BGR


def render_overlay(image: ImageLike, result: InspectionResult, color_order: str = "bgr") -> np.ndarray:
    """BGR uint8 image: the frame with the anomaly map blended in (scaled so the
    threshold sits mid-colormap), boxes around regions and the decision on top."""
    rgb = as_rgb(image, color_order)
    h, w = rgb.shape[:2]
    if result.anomaly_map.shape != (h, w):
        raise InputError(f"result map is {result.anomaly_map.shape}, image is {(h, w)}: not the inspected frame")
    level = np.clip(result.anomaly_map / (2.0 * result.map_level), 0.0, 1.0)
    heat = cv2.applyColorMap((level * 255).astype(np.uint8), cv2.COLORMAP_JET)
    frame = cv2.addWeighted(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), 0.6, heat, 0.4, 0)
    color = RED if result.is_anomalous else GREEN
    thickness = max(1, round(min(h, w) / 200))
    for region in result.regions:
        x0, y0, x1, y1 = region.box
        cv2.rectangle(frame, (x0, y0), (x1 - 1, y1 - 1), color, thickness)
    label = (
        f"{'ANOMALY ' + result.location if result.is_anomalous else 'OK'}  {result.score:.2f}/{result.threshold:.2f}"
    )
    scale = max(0.4, min(h, w) / 600)
    (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    cv2.rectangle(frame, (0, 0), (tw + 8, th + base + 8), (0, 0, 0), -1)
    cv2.putText(frame, label, (4, th + 4), cv2.FONT_HERSHEY_SIMPLEX, scale, color, thickness, cv2.LINE_AA)
    return frame


def save_overlay(
    image: ImageLike, result: InspectionResult, out_dir: Path, name: str, color_order: str = "bgr"
) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{Path(name).stem}_overlay.png"
    if not cv2.imwrite(str(path), render_overlay(image, result, color_order)):
        raise OSError(f"cannot write overlay {path}")
    return path
