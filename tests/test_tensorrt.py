"""TensorRT engines: real TensorRT-RTX builds of the project's graphs on this CPU, fit and refusal logic,
and execution where a fitting GPU exists (skipped, with the reason, elsewhere)."""

from __future__ import annotations

import shutil
from dataclasses import replace

import numpy as np
import pytest

from edge_anomaly import BackendError, BundleError, Inspector, open_bundle
from edge_anomaly.manifest import EngineEntry, as_json
from edge_anomaly.memory_bank import DEFAULT_MAX_SIZE
from edge_anomaly.runtime.gpu_info import GpuInfo, detect_gpu

trt_rtx = pytest.importorskip("tensorrt_rtx_bindings", reason="TensorRT-RTX is not installed")

from edge_anomaly.runtime.tensorrt_engines import EngineOptions, build_engines, engine_fit  # noqa: E402


@pytest.fixture(scope="module")
def engine_bundle(bundle_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("engines") / "bundle"
    shutil.copytree(bundle_dir, root)
    build_engines(root, "rtx", EngineOptions(precision="fp16", max_batch=4))
    return root


def test_rtx_engines_build_on_a_cpu_only_host_and_are_recorded(engine_bundle):
    bundle = open_bundle(engine_bundle)
    engines = {e.graph: as_json(e) for e in bundle.manifest.engines}
    assert set(engines) == {"encoder", "decoder"}
    for entry in engines.values():
        assert entry["flavour"] == "rtx" and entry["precision"] == "fp16"
        assert entry["tensorrt_version"] == trt_rtx.__version__
        assert "8.6" in entry["compute_capabilities"] and "8.7" not in entry["compute_capabilities"]
        assert entry["bytes"] == (engine_bundle / entry["file"]).stat().st_size > 100_000
        assert bundle.manifest.files[entry["file"]].role == "engine"
    bank = bundle.manifest.memory_bank.size
    assert engines["encoder"]["profiles"]["image"] == [[1, 3, 128, 128], [1, 3, 128, 128], [4, 3, 128, 128]]
    # bank rows: 152 feature columns, then place and reach
    assert engines["decoder"]["profiles"]["memory_bank"] == [[1, 155], [bank, 155], [DEFAULT_MAX_SIZE, 155]]


def test_precisions_coexist_and_a_rebuild_replaces_its_own_slot(engine_bundle, tmp_path):
    root = tmp_path / "b"
    shutil.copytree(engine_bundle, root)
    cache = tmp_path / "int8-calibration.onnx"
    build_engines(root, "rtx", EngineOptions(precision="int8", max_batch=2, calibration_cache=cache))
    first = cache.read_bytes()
    build_engines(root, "rtx", EngineOptions(precision="int8", max_batch=2, calibration_cache=cache))
    assert cache.read_bytes() == first  # calibration reused, not recomputed
    bundle = open_bundle(root)  # verifies: no stale or unlisted engine files
    slots = sorted((e.graph, e.precision) for e in bundle.manifest.engines)
    assert slots == [("decoder", "fp16"), ("decoder", "int8"), ("encoder", "fp16"), ("encoder", "int8")]


def test_without_a_fitting_gpu_auto_says_why_and_falls_back(engine_bundle):
    if detect_gpu() is not None:
        pytest.skip("a GPU is visible here; the fallback applies only without one")
    insp = Inspector.load(engine_bundle)
    assert insp.backend_name.startswith(("onnxruntime", "openvino"))
    assert "TensorRT not used" in insp.backend_reason and "rtx.fp16.engine" in insp.backend_reason
    with pytest.raises(BackendError, match="no TensorRT engine of this bundle can run here"):
        Inspector.load(engine_bundle, backend="tensorrt")


@pytest.mark.parametrize(
    "gpu, fits",
    [
        (GpuInfo("NVIDIA GeForce RTX 4090", (8, 9)), True),
        (GpuInfo("NVIDIA RTX A6000", (8, 6)), True),
        (GpuInfo("NVIDIA RTX PRO 6000", (12, 0)), True),
        (GpuInfo("NVIDIA H100 80GB HBM3", (9, 0)), False),
        (GpuInfo("Orin", (8, 7)), False),
    ],
)
def test_rtx_engine_fit_by_compute_capability(engine_bundle, gpu, fits):
    entry = open_bundle(engine_bundle).manifest.engines[0]
    reason = engine_fit(entry, gpu)
    assert (reason is None) == fits
    if not fits:
        assert "not an RTX-class GPU" in reason and gpu.cc in reason


def test_engine_of_another_tensorrt_version_is_refused_with_advice(engine_bundle):
    entry = replace(open_bundle(engine_bundle).manifest.engines[0], tensorrt_version="0.9.0")
    reason = engine_fit(entry, GpuInfo("NVIDIA GeForce RTX 4090", (8, 9)))
    assert "built with rtx TensorRT 0.9.0" in reason and "build-engine" in reason


def test_full_tensorrt_engine_is_tied_to_its_gpu(monkeypatch):
    """Judged as JetPack's TensorRT 10.3 would be (the module is stood in; the rule is the real one)."""
    import types

    from edge_anomaly.runtime import tensorrt_engines

    monkeypatch.setattr(tensorrt_engines, "load_tensorrt", lambda flavour: types.SimpleNamespace(__version__="10.3.0"))
    entry = EngineEntry(
        file="encoder.full.fp16.engine",
        graph="encoder",
        flavour="full",
        tensorrt_version="10.3.0",
        precision="fp16",
        profiles={},
        compute_capabilities=("8.7",),
        gpu="Orin",
        built_on="orin",
        build_seconds=1.0,
        bytes=1,
    )
    assert engine_fit(entry, GpuInfo("Orin", (8, 7))) is None
    reason = engine_fit(entry, GpuInfo("NVIDIA A100", (8, 0)))
    assert "built for compute capability 8.7 (Orin)" in reason and "rebuild on this device" in reason


def test_tampered_engine_is_refused(engine_bundle, tmp_path):
    root = tmp_path / "b"
    shutil.copytree(engine_bundle, root)
    with open(root / "encoder.rtx.fp16.engine", "r+b") as fh:
        fh.seek(5000)
        fh.write(b"\x00\x01\x02")
    with pytest.raises(BundleError, match=r"encoder\.rtx\.fp16\.engine: sha256"):
        Inspector.load(root)


def test_full_flavour_needs_tensorrt_installed(bundle_dir, tmp_path):
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        root = tmp_path / "b"
        shutil.copytree(bundle_dir, root)
        with pytest.raises(BackendError, match="needs the module tensorrt"):
            build_engines(root, "full", EngineOptions())
    else:
        pytest.skip("full TensorRT is installed here; the refusal applies only without it")


@pytest.mark.gpu
def test_tensorrt_matches_onnxruntime_on_a_fitting_gpu(engine_bundle, synth_root):
    gpu = detect_gpu()
    entry = open_bundle(engine_bundle).manifest.engines[0]
    reason = engine_fit(entry, gpu)
    if reason is not None:
        pytest.skip(f"no GPU here fits the TensorRT-RTX engine: {reason}")
    trt_insp = Inspector.load(engine_bundle, backend="tensorrt")
    ort_insp = Inspector.load(engine_bundle, backend="onnxruntime-cpu")
    images = sorted((synth_root / "fabric" / "test" / "cut").iterdir())
    for image in images:
        a, b = trt_insp.inspect(image), ort_insp.inspect(image)
        assert abs(a.score - b.score) < 0.02 * max(b.score, 1e-3)  # fp16 engine vs fp32 graph
        assert np.corrcoef(a.anomaly_map.ravel(), b.anomaly_map.ravel())[0, 1] > 0.99
