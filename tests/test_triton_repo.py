"""``export --triton-repo``: a native Triton model repository, checked here as far as a CPU box can.

Triton's own config parser (the protobuf schema tritonclient ships) reads every ``config.pbtxt``; the
decoder with the bank baked in runs in ONNX Runtime and answers as the bundle's decoder does; the ensemble
wires the two; and the ``tritonserver`` PyTriton ships reads the repository and checks the ensemble against
its steps, failing only for want of the onnxruntime backend, which NVIDIA's Triton image has and PyTriton
does not ship (docs/scale-out.md).
"""

from __future__ import annotations

import os
import re
import subprocess

import numpy as np
import onnxruntime as ort
import pytest

from edge_anomaly import InputError
from edge_anomaly.export.triton_repo import write_triton_repo
from edge_anomaly.runtime.serve_process import SERVE_PYTHON, free_port
from edge_anomaly.runtime.triton_protocol import DIGEST, INPUT, MAP, SCORE

model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2", reason="tritonclient is not installed")
text_format = pytest.importorskip("google.protobuf.text_format")


def _config(folder):
    return text_format.Parse((folder / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())


def test_repository_parses_and_answers_as_the_bundle(inspector, tmp_path):
    bundle = inspector.bundle
    encoder, decoder, ensemble = write_triton_repo(bundle, tmp_path / "repo", max_batch=4)
    configs = {f.name: _config(f) for f in (encoder, decoder, ensemble)}
    assert configs["fabric_encoder"].platform == "onnxruntime_onnx"
    assert configs["fabric_decoder"].max_batch_size == 4
    assert configs["fabric_decoder"].dynamic_batching.max_queue_delay_microseconds == 2000
    steps = configs["fabric"].ensemble_scheduling.step
    assert [s.model_name for s in steps] == ["fabric_encoder", "fabric_decoder"]
    assert {o.name for o in configs["fabric"].output} == {MAP, SCORE, DIGEST}
    assert [i.name for i in configs["fabric"].input] == [INPUT]
    assert (encoder / "1" / "model.onnx").is_file() and (ensemble / "1").is_dir()

    rng = np.random.default_rng(0)
    images = rng.normal(size=(3, 3, bundle.input_size, bundle.input_size)).astype(np.float32)
    features = inspector.backend.encode(images)
    want_map, want_score = inspector.backend.decode(features, inspector.memory_bank)
    session = ort.InferenceSession(str(decoder / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["features"]
    got_map, got_score, digests = session.run([MAP, SCORE, DIGEST], {"features": features})
    np.testing.assert_allclose(got_map, want_map, atol=1e-5)
    np.testing.assert_allclose(got_score, want_score, atol=1e-5)
    assert digests.shape == (3, 1) and all(d == bundle.digest for d in digests.ravel())


def test_a_model_already_there_is_not_overwritten(inspector, tmp_path):
    write_triton_repo(inspector.bundle, tmp_path / "repo")
    with pytest.raises(InputError, match="already has a model"):
        write_triton_repo(inspector.bundle, tmp_path / "repo")
    write_triton_repo(inspector.bundle, tmp_path / "repo", name="fabric-line-2")  # beside it, another name


@pytest.mark.skipif(not SERVE_PYTHON.is_file(), reason=f"no serve environment at {SERVE_PYTHON} (make serve-env)")
def test_tritonserver_reads_the_repository(inspector, tmp_path):
    probe = (
        "import pathlib, pytriton, sysconfig; "
        "print(pathlib.Path(pytriton.__file__).parent); print(sysconfig.get_config_var('LIBDIR'))"
    )
    found = subprocess.run([str(SERVE_PYTHON), "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    package, libdir = found.stdout.split()
    write_triton_repo(inspector.bundle, tmp_path / "repo")
    server = f"{package}/tritonserver"
    command = [f"{server}/bin/tritonserver", "--model-repository", str(tmp_path / "repo"), "--backend-directory",
               f"{server}/backends", "--http-address", "127.0.0.1", "--http-port", str(free_port()),
               "--grpc-address", "127.0.0.1", "--grpc-port", str(free_port()), "--allow-metrics", "false",
               "--exit-on-error", "true"]  # fmt: skip
    env = {**os.environ, "LD_LIBRARY_PATH": os.pathsep.join([libdir, os.environ.get("LD_LIBRARY_PATH", "")])}
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)
    log = done.stdout + done.stderr
    failures = dict(re.findall(r"failed to load '(\w+)' version 1: (.*)", log))
    assert set(failures) == {"fabric_encoder", "fabric_decoder"}, log[-3000:]
    assert all("unable to find backend library for backend 'onnxruntime'" in why for why in failures.values())
    assert "ensemble 'fabric' depends on 'fabric_decoder'" in log  # parsed, and wired to its steps
    assert "failed to parse" not in log.lower()
