"""The backend table: auto takes the first entry that can run, by name one that cannot says why."""

from __future__ import annotations

import platform

import numpy as np
import pytest

from edge_anomaly import BackendError, Inspector
from edge_anomaly.runtime import backends
from edge_anomaly.runtime.openvino_backend import openvino_problem

needs_openvino = pytest.mark.skipif(
    openvino_problem() is not None or platform.machine().lower() not in ("x86_64", "amd64"),
    reason="OpenVINO is not installed here, or this is not an x86 CPU",
)


@needs_openvino
def test_openvino_gives_onnxruntimes_maps_and_auto_takes_it_on_x86(bundle_dir, synth_root):
    images = sorted((synth_root / "fabric" / "test" / "cut").iterdir())[:4]
    reference = Inspector.load(bundle_dir, backend="onnxruntime-cpu").inspect(images)
    openvino = Inspector.load(bundle_dir, backend="openvino")
    assert openvino.backend_name == "openvino-cpu"
    for ov, ort in zip(openvino.inspect(images), reference):
        assert abs(ov.score - ort.score) < 1e-5 and np.abs(ov.anomaly_map - ort.anomaly_map).max() < 1e-4
        assert ov.is_anomalous == ort.is_anomalous
    auto = Inspector.load(bundle_dir)  # the decoder in bf16 where this CPU has bfloat16
    assert auto.backend_name == ("openvino-cpu" if openvino_problem("bf16") else "openvino-cpu-bf16")
    assert "OpenVINO" in auto.backend_reason
    assert "CUDA not used" in auto.backend_reason or "CUDA" in auto.backend_name


def test_auto_skips_an_entry_that_cannot_run_and_says_why(bundle_dir, monkeypatch):
    monkeypatch.setattr(backends, "_openvino_problem", lambda bundle: "openvino is not installed (test)")
    table = tuple(
        backends.BackendEntry(e.name, backends._openvino_problem, e.make) if e.name.startswith("openvino") else e
        for e in backends.TABLE
    )
    monkeypatch.setattr(backends, "TABLE", table)
    insp = Inspector.load(bundle_dir)
    assert insp.backend_name.startswith("onnxruntime")
    assert "OpenVINO not used: openvino is not installed (test)" in insp.backend_reason
    with pytest.raises(BackendError, match="openvino cannot run here: openvino is not installed"):
        Inspector.load(bundle_dir, backend="openvino")


needs_bf16 = pytest.mark.skipif(
    openvino_problem("bf16") is not None or platform.machine().lower() not in ("x86_64", "amd64"),
    reason=f"OpenVINO bf16 cannot run here: {openvino_problem('bf16')}",
)


@needs_bf16
def test_openvino_bf16_runs_the_decoder_in_bf16_and_auto_takes_it(bundle_dir, synth_root):
    images = sorted((synth_root / "fabric" / "test" / "cut").iterdir())[:4]
    images += sorted((synth_root / "fabric" / "test" / "good").iterdir())[:4]
    f32 = Inspector.load(bundle_dir, backend="openvino").inspect(images)
    bf16 = Inspector.load(bundle_dir, backend="openvino-bf16")
    assert bf16.backend_name == "openvino-cpu-bf16" and "bf16 decoder" in Inspector.load(bundle_dir).backend_reason
    for low, full in zip(bf16.inspect(images), f32):
        assert low.score != full.score  # really another precision
        assert abs(low.score - full.score) < 0.02 * full.threshold  # moved by rounding, not by another answer
        assert np.abs(low.anomaly_map - full.anomaly_map).max() < 0.25 * full.threshold  # bf16 steps in the map
    assert backends.probe(bf16.bundle)["openvino-bf16"] is None


def test_an_unknown_openvino_precision_is_refused(bundle_dir):
    from edge_anomaly.runtime.openvino_backend import OpenVinoBackend

    bundle = Inspector.load(bundle_dir, backend="onnxruntime-cpu").bundle
    with pytest.raises(BackendError, match="precision must be one of"):
        OpenVinoBackend(bundle.path_of("encoder"), bundle.path_of("decoder"), 1, "fp8")


@needs_openvino
def test_a_box_on_openvino_never_loads_onnxruntime(bundle_dir):
    """The probes ask package metadata whether onnxruntime and its CUDA wheel are there: a process that runs
    on OpenVINO keeps onnxruntime's ~30 MB out of its memory, probes of every backend included."""
    import subprocess
    import sys

    if backends._installed(backends.ONNXRUNTIME_CUDA_WHEEL):
        pytest.skip("onnxruntime-gpu is installed here: auto asks onnxruntime for its CUDA provider")
    code = (
        "import sys; from edge_anomaly import Inspector; from edge_anomaly.runtime.backends import probe\n"
        f"insp = Inspector.load({str(bundle_dir)!r}); found = probe(insp.bundle)\n"
        "assert insp.backend_name.startswith('openvino'), insp.backend_name\n"
        "assert found['onnxruntime-cpu'] is None and 'onnxruntime-gpu' in found['onnxruntime-cuda'], found\n"
        "print('onnxruntime' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "False"
