"""``edge-anomaly serve`` and the ``triton`` backend against a real Triton Inference Server on 127.0.0.1.

The server runs from the numpy-1 environment (``make serve-env``); the clients run here on numpy 2.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import threading
import time

import cv2
import numpy as np
import pytest

from edge_anomaly import BackendError, InputError, Inspector
from edge_anomaly import bundle_format as fmt
from edge_anomaly.cli import main
from edge_anomaly.runtime.serve_process import SERVE_PYTHON, ServeProcess
from edge_anomaly.runtime.sources import Frame
from edge_anomaly.runtime.triton_backend import TritonAddress
from edge_anomaly.synthetic import defect_line

pytestmark = pytest.mark.skipif(
    not SERVE_PYTHON.is_file(), reason=f"no serve environment at {SERVE_PYTHON} (make serve-env builds it)"
)
pytest.importorskip("tritonclient.http", reason="tritonclient is not installed (pip install edge-anomaly[triton])")
LOCAL = ("--backend", "onnxruntime-cpu")  # what the local inspector runs, so the answers can be compared


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    return defect_line(25, lambda i: i % 5 == 2, seed=11, size=256)


@pytest.fixture(scope="module")
def server(bundle_dir, tmp_path_factory):
    srv = ServeProcess([bundle_dir], tmp_path_factory.mktemp("triton") / "serve.log", LOCAL).start()
    yield srv
    status = srv.stop()
    assert status == 0, f"serve did not stop cleanly on SIGTERM: {srv.log.read_text()[-2000:]}"
    assert "server stopped" in srv.log.read_text()


def test_four_clients_get_the_local_answers(server, bundle_dir, inspector, frames):
    """4 camera controllers x 25 frames, over HTTP and gRPC at once, batched by the server: the local scores
    and maps, to 1e-5."""
    expected = [inspector.inspect(f) for f in frames]
    got: dict[int, list] = {}
    errors: list[BaseException] = []

    def camera(k: int) -> None:
        try:
            protocol = "grpc" if k % 2 else "http"
            with Inspector.load(bundle_dir, backend=server.url("fabric", protocol), llm="none") as remote:
                got[k] = [remote.inspect(f) for f in frames]
        except BaseException as exc:  # noqa: BLE001  reported on the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=camera, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert sorted(got) == [0, 1, 2, 3]
    for results in got.values():
        for mine, theirs in zip(results, expected):
            assert mine.score == pytest.approx(theirs.score, abs=1e-5)
            assert np.abs(mine.anomaly_map - theirs.anomaly_map).max() < 1e-5
            assert mine.is_anomalous == theirs.is_anomalous and mine.location == theirs.location
    assert any(r.is_anomalous for r in got[0]) and not all(r.is_anomalous for r in got[0])
    metrics = server.metrics()
    assert 'nv_inference_request_success{model="fabric",version="1"}' in metrics


def test_another_bundle_is_refused(server, bundle_dir, tmp_path):
    """A controller holding a different bundle (here: the same graphs, another manifest) is refused."""
    other = tmp_path / "fabric"
    shutil.copytree(bundle_dir, other)
    manifest = json.loads((other / fmt.MANIFEST).read_text())
    manifest["object"] = "fabric roll"
    text = json.dumps(manifest, indent=2).encode()
    (other / fmt.MANIFEST).write_bytes(text)
    (other / fmt.MANIFEST_SEAL).write_text(hashlib.sha256(text).hexdigest() + "\n")
    with pytest.raises(BackendError, match="another bundle"):
        Inspector.load(other, backend=server.url("fabric"), llm="none")
    with pytest.raises(BackendError, match="did not answer"):
        Inspector.load(bundle_dir, backend=server.url("no-such-model"), llm="none")


def test_shots_cannot_be_fitted_through_the_server(server, bundle_dir, frames):
    with Inspector.load(bundle_dir, backend=server.url("fabric"), llm="none") as remote:
        with pytest.raises(InputError, match="keeps them on its server"):
            remote.add_normal_shots([frames[0]])


def test_inspect_cli_against_the_server(server, bundle_dir, frames, tmp_path, capsys):
    image = tmp_path / "frame.png"
    cv2.imwrite(str(image), frames[2])
    assert main(["inspect", str(bundle_dir), str(image), "--json", "--backend", "onnxruntime-cpu"]) == 0
    local = json.loads(capsys.readouterr().out)
    assert main(["inspect", str(bundle_dir), str(image), "--json", "--backend", server.url("fabric")]) == 0
    remote = json.loads(capsys.readouterr().out)
    assert remote["score"] == pytest.approx(local["score"], abs=1e-5)
    assert remote["is_anomalous"] == local["is_anomalous"] and remote["location"] == local["location"]


def test_the_project_runs_on_numpy_1(bundle_dir, frames, tmp_path, capsys):
    """The serve environment is numpy 1.26 with OpenCV 4: ``inspect`` there gives what it gives here."""
    image = tmp_path / "frame.png"
    cv2.imwrite(str(image), frames[2])
    command = [str(SERVE_PYTHON), "-m", "edge_anomaly.cli", "inspect", str(bundle_dir), str(image), "--json"]
    done = subprocess.run([*command, "--backend", "onnxruntime-cpu"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    versions = subprocess.run(
        [str(SERVE_PYTHON), "-c", "import numpy, cv2; print(numpy.__version__, cv2.__version__)"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout.split()  # fmt: skip
    assert versions[0].startswith("1.") and versions[1].startswith("4.")
    assert main(["inspect", str(bundle_dir), str(image), "--json", "--backend", "onnxruntime-cpu"]) == 0
    here = json.loads(capsys.readouterr().out)
    there = json.loads(done.stdout)
    assert there["score"] == pytest.approx(here["score"], abs=1e-5) and there["regions"] == here["regions"]


def test_bad_addresses_are_one_clear_error():
    for url in ("triton://", "triton://host:99999/m", "triton://host:8000/", "triton://host/a/b"):
        with pytest.raises(BackendError, match="not a Triton address"):
            TritonAddress.parse(url)
    assert TritonAddress.parse("triton+grpc://h/m").port == 8001


class _LineWithOutage:
    """A camera line of ``frames``; the server is killed at ``kill_at`` and started again at ``restart_at``."""

    name, live = "line", False

    def __init__(self, frames, server: ServeProcess, kill_at: int, restart_at: int) -> None:
        self.frames, self.server, self.kill_at, self.restart_at = frames, server, kill_at, restart_at
        self.i = 0

    def read(self) -> Frame | None:
        if self.i >= len(self.frames):
            return None
        if self.i == self.kill_at:
            self.server.kill()
        if self.i == self.restart_at:
            self.server.start()
        if self.kill_at <= self.i < self.restart_at:
            time.sleep(0.05)  # frames keep coming while the server is away
        frame = Frame(self.i, float(self.i), self.frames[self.i], "line")
        self.i += 1
        return frame

    def close(self) -> None:
        pass


def test_server_killed_mid_stream(bundle_dir, tmp_path):
    """SIGKILL the server mid-stream: the frames it missed are counted, the stream goes on, backs off, is
    answered again once the server is back, and every event in the log is opened and closed once."""
    frames = defect_line(60, lambda i: 5 <= i < 9 or 45 <= i < 48, seed=3, size=256)
    server = ServeProcess([bundle_dir], tmp_path / "serve.log", LOCAL).start()
    try:
        with Inspector.load(bundle_dir, backend=server.url("fabric"), llm="none") as remote:
            events = tmp_path / "events.jsonl"
            runner = remote.stream(_LineWithOutage(frames, server, kill_at=20, restart_at=40), events=events)
            stats = runner.run()
    finally:
        server.stop()
    assert stats.unreachable_frames >= 20
    assert stats.inspected == 60 - stats.unreachable_frames and stats.inspected >= 30
    records = [json.loads(line) for line in events.read_text().splitlines()]
    opened = [r["event"] for r in records if r["type"] == "event_opened"]
    closed = [r["event"] for r in records if r["type"] == "event_closed"]
    assert len(opened) == 2 and sorted(opened) == sorted(closed)
    assert [r["seq"] for r in records] == list(range(len(records)))
    end = records[-1]
    assert end["type"] == "stream_end" and end["unreachable_frames"] == stats.unreachable_frames


def test_a_port_in_use_is_one_clear_error(bundle_dir, tmp_path):
    """Triton would exit at start and PyTriton wait two minutes for it; serve says so at once, exit 2."""
    import socket

    server = ServeProcess([bundle_dir], tmp_path / "serve.log", LOCAL)
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", server.grpc_port))
        holder.listen()
        with pytest.raises(RuntimeError, match="exited with 2"):
            server.start(timeout_s=60)
    log = server.log.read_text()
    assert f"cannot listen on 127.0.0.1:{server.grpc_port} for gRPC" in log and "Traceback" not in log
