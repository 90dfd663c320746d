"""``edge-anomaly serve``: bundles hosted by a real Triton Inference Server, for many camera controllers.

PyTriton starts Triton's own server (HTTP, gRPC, Prometheus metrics, health, dynamic batching) and hands
each batch to a Python function here, which runs the bundle's two graphs on a backend chosen as
``Inspector.load`` chooses it. The camera controller keeps findings, events, overlays and verdicts
(``triton_backend``); only preprocessed frames and their maps cross the network.

Every answer carries the sha256 of the bundle's manifest, so a client that holds another bundle (or a
server whose model was swapped under it) is refused instead of being answered with another bank's scores.

PyTriton's Python-backend stub is built for numpy 1 and loads the first ``libpython`` it finds, so the
server runs in an environment of its own (``make serve-env``: ``.venv-serve``, numpy 1.26, OpenCV 4) and
puts this interpreter's library folder first on ``LD_LIBRARY_PATH`` before Triton starts.
"""

from __future__ import annotations

import os
import signal
import socket
import sysconfig
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge_anomaly.bundle import Bundle, open_bundle
from edge_anomaly.errors import BackendError, InputError

from .backends import Backend, select_backend
from .triton_protocol import DIGEST, INPUT, MAP, SCORE, model_name


@dataclass(frozen=True)
class ServeOptions:
    """Where the server listens and how it batches. ``queue_delay_us``: how long the first request of a batch
    waits for others (Triton's dynamic batcher); ``batching=False`` runs each request as it comes."""

    host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    max_batch: int = 8
    queue_delay_us: int = 2000
    batching: bool = True
    backend: str = "auto"
    threads: int = 0
    trusted_keys: tuple = field(default_factory=tuple)


@dataclass
class ServedBundle:
    """One bundle as a Triton model: verified, on its backend, with its bank loaded once."""

    name: str
    bundle: Bundle
    backend: Backend
    backend_reason: str
    bank: np.ndarray
    digest: str

    def infer(self, image: np.ndarray) -> dict[str, np.ndarray]:
        """A batch from Triton's batcher -> maps, scores and this bundle's digest, one row per frame."""
        if image.dtype != np.float32 or image.ndim != 4 or image.shape[1:] != (3, *self.input_shape):
            raise InputError(f"expected float32 frames [B x 3 x {self.input_shape[0]} x {self.input_shape[1]}]")
        maps, scores = self.backend.decode(self.backend.encode(image), self.bank)
        digest = np.array([[self.digest.encode()]] * len(image))  # dtype S64: one row per frame
        return {MAP: np.asarray(maps, np.float32), SCORE: np.asarray(scores, np.float32).reshape(-1, 1), DIGEST: digest}

    @property
    def input_shape(self) -> tuple[int, int]:
        return self.bundle.input_size, self.bundle.input_size


def load_bundles(paths: Sequence[str | Path], options: ServeOptions) -> list[ServedBundle]:
    """Open and verify every bundle as ``Inspector.load`` would (seal, files, signature when keys are given),
    each on its backend; two bundles with one name are refused (a client could not tell them apart)."""
    served: list[ServedBundle] = []
    try:
        for path in paths:
            name = model_name(Path(path))
            if any(s.name == name for s in served):
                raise InputError(f"two bundles would both be served as model {name!r}: rename one folder")
            bundle = open_bundle(path, list(options.trusted_keys) or None)
            choice = select_backend(bundle, options.backend, options.threads)
            bank = bundle.memory_bank()
            served.append(ServedBundle(name, bundle, choice.backend, choice.reason, bank, bundle.digest))
    except BaseException:
        for s in served:
            s.bundle.close()
        raise
    return served


def serve(served: Sequence[ServedBundle], options: ServeOptions, on_ready: Callable[[], None] = lambda: None) -> None:
    """Host ``served`` until Ctrl-C or SIGTERM, then stop Triton cleanly (in-flight requests finish);
    ``on_ready`` runs once every model answers."""
    _library_first_for_triton()
    try:
        from pytriton.decorators import batch
        from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
        from pytriton.triton import Triton, TritonConfig
    except ImportError as exc:
        hint = "make serve-env, or pip install edge-anomaly[serve] into an environment of its own"
        raise BackendError(f"serve needs nvidia-pytriton ({exc}): {hint}") from None
    config = TritonConfig(
        http_address=options.host,
        http_port=options.http_port,
        grpc_address=options.host,
        grpc_port=options.grpc_port,
        metrics_address=options.host,
        metrics_port=options.metrics_port,
        exit_timeout_secs=5,
    )
    batcher = DynamicBatcher(max_queue_delay_microseconds=options.queue_delay_us) if options.batching else None
    _check_ports_free(options)
    asked_to_stop = threading.Event()

    def interrupt(signum, frame) -> None:
        asked_to_stop.set()
        raise KeyboardInterrupt  # Triton.serve stops cleanly on it

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, interrupt)
    triton = Triton(config=config)
    try:
        for s in served:
            size = s.input_shape
            triton.bind(
                model_name=s.name,
                infer_func=batch(_infer_function(s)),
                inputs=[Tensor(name=INPUT, dtype=np.float32, shape=(3, *size))],
                outputs=[
                    Tensor(name=MAP, dtype=np.float32, shape=size),
                    Tensor(name=SCORE, dtype=np.float32, shape=(1,)),
                    Tensor(name=DIGEST, dtype=np.bytes_, shape=(1,)),
                ],
                config=ModelConfig(max_batch_size=options.max_batch, batcher=batcher),
                strict=True,
            )
        triton.run()  # starts the server and waits until every model is loaded
        on_ready()
        triton.serve()
    except KeyboardInterrupt:  # a stop asked for while Triton was still starting
        pass
    finally:
        triton.stop()
    if not asked_to_stop.is_set():
        raise BackendError("Triton Inference Server stopped by itself (its log above says why)")


def _check_ports_free(options: ServeOptions) -> None:
    """A port another process listens on makes Triton exit at start, and PyTriton then waits two minutes for
    it: say so at once instead."""
    for what, port in (("HTTP", options.http_port), ("gRPC", options.grpc_port), ("metrics", options.metrics_port)):
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((options.host, port))
            except OSError as exc:
                raise InputError(
                    f"cannot listen on {options.host}:{port} for {what} ({exc.strerror}): another server holds it, "
                    f"or pick another with --{what.lower()}-port"
                ) from None


def _infer_function(served: ServedBundle):
    def infer(**inputs: np.ndarray) -> dict[str, np.ndarray]:
        return served.infer(inputs[INPUT])

    return infer


def _library_first_for_triton() -> None:
    """Triton's Python-backend stub loads the first ``libpython3.X.so`` on the library path; without this it
    may take the system's (another patch release) and fail to load the model (``_recursion_count``)."""
    libdir = sysconfig.get_config_var("LIBDIR")
    if libdir and Path(libdir).is_dir():
        rest = [p for p in os.environ.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p and p != libdir]
        os.environ["LD_LIBRARY_PATH"] = os.pathsep.join([libdir, *rest])
