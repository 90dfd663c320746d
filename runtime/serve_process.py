"""``edge-anomaly serve`` as a child process: started, waited for, stopped and killed from Python.

For the tests and ``benchmarks/serve.py``, and for a controller that owns its server. It runs from the
numpy-1 environment ``make serve-env`` builds (``.venv-serve``) or ``EDGE_ANOMALY_SERVE_PYTHON``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from .triton_protocol import model_name

ROOT = Path(__file__).resolve().parent.parent
SERVE_PYTHON = Path(os.environ.get("EDGE_ANOMALY_SERVE_PYTHON", ROOT / ".venv-serve" / "bin" / "python"))
START_TIMEOUT_S = 90.0


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class ServeProcess:
    """``edge-anomaly serve BUNDLES OPTIONS`` on three free loopback ports, its output in ``log``."""

    def __init__(self, bundles: Sequence[Path], log: Path, options: Sequence[str] = ()) -> None:
        self.bundles, self.log, self.options = list(bundles), log, list(options)
        self.http_port, self.grpc_port, self.metrics_port = free_port(), free_port(), free_port()
        self.process: subprocess.Popen | None = None

    def url(self, model: str, protocol: str = "http") -> str:
        """The ``--backend`` address of ``model`` on this server."""
        if protocol == "grpc":
            return f"triton+grpc://127.0.0.1:{self.grpc_port}/{model}"
        return f"triton://127.0.0.1:{self.http_port}/{model}"

    def start(self, timeout_s: float = START_TIMEOUT_S) -> ServeProcess:
        """Start it in a session of its own (so ``kill`` reaches Triton's children) and wait until ready."""
        command = [str(SERVE_PYTHON), "-m", "edge_anomaly.cli", "serve", *map(str, self.bundles)]
        command += ["--http-port", str(self.http_port), "--grpc-port", str(self.grpc_port)]
        command += ["--metrics-port", str(self.metrics_port), *self.options]
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"serve exited with {self.process.returncode}: {self._tail()}")
            if self.ready():
                return self
            time.sleep(0.25)
        self.kill()
        raise RuntimeError(f"serve not ready after {timeout_s:.0f} s: {self._tail()}")

    def ready(self) -> bool:
        """Every bundle's model answers (the server itself is ready before PyTriton has loaded them)."""
        for bundle in self.bundles:
            url = f"http://127.0.0.1:{self.http_port}/v2/models/{model_name(Path(bundle))}/ready"
            try:
                with urllib.request.urlopen(url, timeout=1) as r:
                    if r.status != 200:
                        return False
            except OSError:
                return False
        return True

    def metrics(self) -> str:
        """Triton's Prometheus metrics, as text."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as r:
            return r.read().decode()

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """SIGTERM, as a service manager stops it; its exit status, or None if it had to be killed."""
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else None
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def kill(self) -> None:
        """SIGKILL the server and everything it started (tritonserver, the Python-backend stubs)."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def _tail(self) -> str:
        return self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
