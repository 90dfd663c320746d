"""``edge-anomaly export``: normal images -> a sealed, self-describing bundle.

Torch is used only to write the two ONNX graphs. The bank and the threshold
are then fitted through ONNX Runtime, the same path the edge box takes.
"""

from __future__ import annotations

import datetime as dt
import random
import shutil
import tempfile
from pathlib import Path

from edge_anomaly import __version__
from edge_anomaly.bundle import Bundle, open_bundle
from edge_anomaly.bundle_format import DEFAULT_FEATURE_NORM
from edge_anomaly.errors import InputError
from edge_anomaly.few_shot import Preprocessing, fit_normal_shots, write_fitted_bundle
from edge_anomaly.images import list_images, read_image
from edge_anomaly.manifest import object_name_problem
from edge_anomaly.memory_bank import DEFAULT_MAX_SIZE
from edge_anomaly.placement import DEFAULT_LAYOUT
from edge_anomaly.runtime.onnxruntime_backend import OnnxRuntimeBackend
from edge_anomaly.shot_views import DEFAULT_AUGMENTATION

from .onnx_export import DEFAULT_STAGES, build_graphs, export_onnx


def choose_shots(normal: Path | list[Path], shots: int | None, seed: int) -> list[Path]:
    """``shots`` images drawn with ``seed`` from a folder (or list); all of them when ``shots`` is None."""
    files = list_images(normal) if isinstance(normal, Path) else sorted(normal)
    if shots is None:
        return files
    if shots < 1:
        raise InputError(f"--shots must be at least 1, got {shots}")
    if shots > len(files):
        raise InputError(f"asked for {shots} shots but only {len(files)} normal images are available")
    return sorted(random.Random(seed).sample(files, shots))


def build_bundle(
    normal: Path | list[Path],
    out: Path,
    shots: int | None = None,
    image_size: int = 256,
    object_name: str = "part",
    encoder: str = "lite0",
    stages: tuple[int, ...] = DEFAULT_STAGES,
    seed: int = 0,
    max_bank: int = DEFAULT_MAX_SIZE,
    augmentation: str = DEFAULT_AUGMENTATION,
    head_weight: float | None = None,
    layout: str = DEFAULT_LAYOUT,
    feature_norm: str = DEFAULT_FEATURE_NORM,
) -> Bundle:
    """Export graphs, fit the bank and threshold on the chosen shots, and seal the bundle at ``out``.
    ``head_weight``: the text-free head's share of the map (``build_graphs``; None: the default).
    Every option is checked before any work is done, and a mistake raises ``InputError`` saying which."""
    problem = object_name_problem(object_name)
    if problem:
        raise InputError(f"object name {problem}")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} exists and is {'not a folder' if not out.is_dir() else 'not empty'}")
    shot_paths = choose_shots(normal, shots, seed)
    if layout == "aligned" and len(shot_paths) < 2:
        raise InputError("layout 'aligned' needs at least 2 shots: one shot cannot show where things belong")
    images = [read_image(p) for p in shot_paths]
    try:
        graphs = build_graphs(encoder, image_size, stages, head_weight, feature_norm)
    except (ValueError, ImportError) as exc:
        raise InputError(str(exc)) from None
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="edge-anomaly-export-", dir=out.parent))  # same disk: the move is a rename
    try:
        encoder_path, decoder_path = export_onnx(graphs, staging)
        backend = OnnxRuntimeBackend(encoder_path, decoder_path, "cpu")
        prep = Preprocessing(
            image_size, tuple(graphs.manifest["input"]["mean"]), tuple(graphs.manifest["input"]["std"])
        )
        fit = fit_normal_shots(backend, images, prep, max_bank, seed, augmentation, layout)
        manifest = {
            **graphs.manifest,
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "sdk_version": __version__,
            "object": object_name,
            "shot_sources": [p.name for p in shot_paths],
        }
        write_fitted_bundle(staging, manifest, fit)
        if out.exists():
            out.rmdir()
        shutil.move(str(staging), str(out))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return open_bundle(out)
