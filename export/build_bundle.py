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
from edge_anomaly.errors import InputError
from edge_anomaly.few_shot import fit_normal_shots, fitted_sections, write_fitted_bundle
from edge_anomaly.fit_options import DEFAULT_FIT, FitOptions
from edge_anomaly.images import list_images, read_image
from edge_anomaly.manifest import Manifest, object_name_problem
from edge_anomaly.runtime.onnxruntime_backend import OnnxRuntimeBackend

from .onnx_export import build_graphs, export_onnx


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
    object_name: str = "part",
    options: FitOptions = DEFAULT_FIT,
) -> Bundle:
    """Export graphs, fit the bank and threshold on the chosen shots, and seal the bundle at ``out``.
    ``options``: image size, encoder, stages, neighbourhood, views, layout, head weight, feature scaling, bank
    cap and the seed that draws the shots (``FitOptions``). Every option is checked before any work is done, and a
    mistake raises ``InputError`` saying which."""
    problem = object_name_problem(object_name)
    if problem:
        raise InputError(f"object name {problem}")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} exists and is {'not a folder' if not out.is_dir() else 'not empty'}")
    shot_paths = choose_shots(normal, shots, options.seed)
    if options.layout == "aligned" and len(shot_paths) < 2:
        raise InputError("layout 'aligned' needs at least 2 shots: one shot cannot show where things belong")
    images = [read_image(p) for p in shot_paths]
    try:
        graphs = build_graphs(
            options.encoder,
            options.image_size,
            options.stages,
            options.head_weight,
            options.feature_norm,
            options.neighbourhood,
        )
    except (ValueError, ImportError) as exc:
        raise InputError(str(exc)) from None
    if options.feature_norm == "shots":
        graphs = graphs.with_stage_scales(images)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="edge-anomaly-export-", dir=out.parent))  # same disk: the move is a rename
    try:
        encoder_path, decoder_path = export_onnx(graphs, staging)
        backend = OnnxRuntimeBackend(encoder_path, decoder_path, "cpu")
        fit = fit_normal_shots(
            backend, images, graphs.preprocessing(), options.max_bank, options.seed, options.augmentation,
            options.layout,
        )  # fmt: skip
        manifest = Manifest.of(
            graphs.sections,
            fit=options,
            **fitted_sections(fit),
            object=object_name,
            created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            sdk_version=__version__,
            shot_sources=tuple(p.name for p in shot_paths),
        )
        write_fitted_bundle(staging, manifest, fit)
        if out.exists():
            out.rmdir()
        shutil.move(str(staging), str(out))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return open_bundle(out)
