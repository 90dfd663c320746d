"""``edge-anomaly export``: normal images -> a sealed, self-describing bundle.

Torch is used only to write the two ONNX graphs. The bank and the threshold
are then fitted through ONNX Runtime, the same path the edge box takes.
"""

from __future__ import annotations

import datetime as dt
import random
import shutil
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

from edge_anomaly import __version__
from edge_anomaly import bundle_format as fmt
from edge_anomaly.bundle import Bundle, open_bundle
from edge_anomaly.errors import InputError
from edge_anomaly.few_shot import fit_normal_shots, fitted_sections, write_fitted_bundle
from edge_anomaly.fit_options import DEFAULT_FIT, FitOptions
from edge_anomaly.images import list_images, read_image
from edge_anomaly.manifest import Manifest, object_name_problem
from edge_anomaly.runtime.onnxruntime_backend import OnnxRuntimeBackend

from .int8_encoder import METHOD as INT8_METHOD
from .int8_encoder import agreement, calibration_images, quantize_encoder
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


def _fit(backend, images: list, prep, options: FitOptions, columns: tuple[int | None, int | None]):
    """``columns``: the leading feature columns the score reads and those the bank is chosen by."""
    return fit_normal_shots(
        backend, images, prep, options.max_bank, options.seed, options.augmentation, options.layout,
        score_features=columns[0], chosen_by=columns[1],
    )  # fmt: skip


def _int8_fit(
    staging: Path, fp32: tuple, images: list, prep, options: FitOptions, columns: tuple[int | None, int | None]
) -> tuple:
    """The int8 encoder in place of the fp32 one and the fit through it, where they agree with fp32
    (``int8_encoder``); else the fp32 fit, and a line on stderr saying why. Returns the fit and the encoder
    section's precision fields."""
    fp32_backend, fp32_fit = fp32
    encoder_path = staging / fmt.ENCODER_ONNX
    int8_path = quantize_encoder(
        encoder_path, staging / "encoder.int8.onnx", calibration_images(fp32_fit.shots, options.seed), prep
    )
    int8_backend = OnnxRuntimeBackend(int8_path, staging / fmt.DECODER_ONNX, "cpu")
    int8_fit = _fit(int8_backend, images, prep, options, columns)
    agreed = agreement((fp32_backend, fp32_fit), (int8_backend, int8_fit), fp32_fit.shots, prep, options.seed)
    fp32_backend.close()
    int8_backend.close()
    if not agreed.holds:
        int8_path.unlink()
        print(f"export: int8 encoder refused, fp32 kept: {agreed.words()}", file=sys.stderr)
        return fp32_fit, {"quantization": f"int8 refused: {agreed.words()}"}
    int8_path.replace(encoder_path)
    return int8_fit, {"precision": "int8", "quantization": f"{INT8_METHOD}; {agreed.words()}"}


def build_bundle(
    normal: Path | list[Path],
    out: Path,
    shots: int | None = None,
    object_name: str = "part",
    options: FitOptions = DEFAULT_FIT,
) -> Bundle:
    """Export graphs, fit the bank and threshold on the chosen shots, and seal the bundle at ``out``.
    ``options``: image size, encoder, stages, neighbourhood, views, layout, head weight, feature scaling,
    encoder precision, bank cap and the seed that draws the shots (``FitOptions``). Every option is checked
    before any work is done, and a mistake raises ``InputError`` saying which."""
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
            options.score_neighbourhood,
            options.bank_neighbourhood,
        )
    except (ValueError, ImportError) as exc:
        raise InputError(str(exc)) from None
    if options.feature_norm == "shots":
        graphs = graphs.with_stage_scales(images)
    elif options.feature_norm == "balanced":
        graphs = graphs.with_balanced_scales(images, options.seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="edge-anomaly-export-", dir=out.parent))  # same disk: the move is a rename
    try:
        encoder_path, decoder_path = export_onnx(graphs, staging)
        backend = OnnxRuntimeBackend(encoder_path, decoder_path, "cpu")
        sections = graphs.sections
        columns = (sections.decoder.score_features, sections.encoder.bank_features)
        fit = _fit(backend, images, graphs.preprocessing(), options, columns)
        if options.encoder_precision == "int8":
            fit, encoder = _int8_fit(staging, (backend, fit), images, graphs.preprocessing(), options, columns)
            sections = replace(sections, encoder=replace(sections.encoder, **encoder))
        manifest = Manifest.of(
            sections,
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
