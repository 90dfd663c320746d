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
    auto = Inspector.load(bundle_dir)
    assert auto.backend_name == "openvino-cpu" and "OpenVINO" in auto.backend_reason
    assert "CUDA not used" in auto.backend_reason or "CUDA" in auto.backend_name


def test_auto_skips_an_entry_that_cannot_run_and_says_why(bundle_dir, monkeypatch):
    monkeypatch.setattr(backends, "_openvino_problem", lambda bundle: "openvino is not installed (test)")
    table = tuple(
        backends.BackendEntry(e.name, backends._openvino_problem, e.make) if e.name == "openvino" else e
        for e in backends.TABLE
    )
    monkeypatch.setattr(backends, "TABLE", table)
    insp = Inspector.load(bundle_dir)
    assert insp.backend_name.startswith("onnxruntime")
    assert "OpenVINO not used: openvino is not installed (test)" in insp.backend_reason
    with pytest.raises(BackendError, match="openvino cannot run here: openvino is not installed"):
        Inspector.load(bundle_dir, backend="openvino")
