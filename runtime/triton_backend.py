"""The ``triton`` backend: a bundle's two graphs run on a Triton server (``edge-anomaly serve``), while the
camera controller keeps findings, events, overlays and verdicts.

``Inspector.load(bundle, backend="triton://host:8000/model")`` (HTTP) or ``"triton+grpc://host:8001/model"``.
The controller holds the same bundle as the server (for its threshold, object name and language model) and
checks, on the first answer and on every one after, that the server's model is that bundle: each answer
carries the sha256 of the bundle's manifest.

``encode`` makes the one round trip (so a pipelined stream overlaps the network with the previous frame's
gate) and returns the answers packed as ``[B x (1 + H*W)]``: score, then map; ``decode`` unpacks them. The
features never leave the server, so shots cannot be fitted through this backend (``Inspector`` refuses).

A server that does not answer makes ``encode`` raise ``BackendUnavailable``; further calls are refused at
once until a backoff (0.5 s, doubling to 8 s) has passed, so a stream counts the frames it could not
inspect and keeps its camera and its event log going while the server is away.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import numpy as np

from edge_anomaly.bundle import Bundle
from edge_anomaly.errors import BackendError, BackendUnavailable

from .triton_protocol import DIGEST, INPUT, MAP, OUTPUTS, SCORE

SCHEMES = {"triton": "http", "triton+grpc": "grpc"}
DEFAULT_PORTS = {"http": 8000, "grpc": 8001}
FIRST_BACKOFF_S, LAST_BACKOFF_S = 0.5, 8.0


def is_triton_url(text: str) -> bool:
    return any(text.startswith(f"{scheme}://") for scheme in SCHEMES)


@dataclass(frozen=True)
class TritonAddress:
    """``triton://host[:port]/model`` parsed; ``protocol`` is ``http`` or ``grpc``."""

    protocol: str
    host: str
    port: int
    model: str

    @classmethod
    def parse(cls, url: str) -> TritonAddress:
        parts = urlsplit(url)
        protocol = SCHEMES.get(parts.scheme)
        model = parts.path.strip("/")
        try:
            port = parts.port
        except ValueError:
            port = -1
        if protocol is None or not parts.hostname or not model or "/" in model or port == -1:
            raise BackendError(f"{url!r} is not a Triton address: expected triton://host:8000/model")
        return cls(protocol, parts.hostname, port or DEFAULT_PORTS[protocol], model)

    @property
    def url(self) -> str:
        scheme = next(s for s, p in SCHEMES.items() if p == self.protocol)
        return f"{scheme}://{self.host}:{self.port}/{self.model}"


class TritonBackend:
    """The encoder and decoder of ``bundle`` on the Triton server at ``address``; same surface as every
    other backend. One client per thread (the HTTP client is not thread-safe)."""

    remote = True  # features stay on the server: Inspector refuses to fit shots through it

    def __init__(self, address: TritonAddress, bundle: Bundle, timeout_s: float = 10.0) -> None:
        try:
            if address.protocol == "grpc":
                import tritonclient.grpc as client_module
            else:
                import tritonclient.http as client_module
        except ImportError as exc:
            hint = "pip install edge-anomaly[triton]"
            raise BackendError(f"the triton backend needs tritonclient ({exc}): {hint}") from None
        self._module = client_module
        self.address = address
        self.name = "triton"
        self.threads = 0
        self._timeout_s = timeout_s
        self._size = bundle.input_size
        self._digest = bundle.digest
        self._local = threading.local()
        self._lock = threading.Lock()
        self._retry_at = 0.0
        self._backoff_s = FIRST_BACKOFF_S
        try:
            self.encode(np.zeros((1, 3, self._size, self._size), np.float32))  # reachable, same bundle
        except BackendUnavailable as exc:
            raise BackendError(str(exc)) from None

    def encode(self, images: np.ndarray) -> np.ndarray:
        """Normalized images -> the server's answers packed as ``[B x (1 + H*W)]`` (score, then map)."""
        with self._lock:
            wait = self._retry_at - time.monotonic()
        if wait > 0:
            raise BackendUnavailable(f"Triton server {self.address.url} unreachable; next try in {wait:.1f} s")
        try:
            maps, scores, digests = self._infer(images)
        except Exception as exc:  # noqa: BLE001  tritonclient, gevent and grpc each raise their own types
            with self._lock:
                self._retry_at = time.monotonic() + self._backoff_s
                self._backoff_s = min(2 * self._backoff_s, LAST_BACKOFF_S)
            raise BackendUnavailable(f"Triton server {self.address.url} did not answer: {_one_line(exc)}") from None
        with self._lock:
            self._backoff_s = FIRST_BACKOFF_S
        expected = self._digest.encode()
        other = next((d for d in digests.reshape(-1) if d != expected), None)
        if other is not None:
            theirs = other.decode(errors="replace") if isinstance(other, bytes) else str(other)
            raise BackendUnavailable(
                f"the server's model {self.address.model!r} is another bundle (manifest sha256 {theirs[:12]}..., "
                f"this bundle's is {self._digest[:12]}...): serve this bundle, or load the one served"
            )
        batch = len(images)
        return np.concatenate([scores.reshape(batch, 1), maps.reshape(batch, -1)], axis=1)

    def decode(self, features: np.ndarray, memory_bank: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Unpack ``encode``'s answers into ``(anomaly_map [B x H x W], score [B])``. The bank is the
        server's (the bundle's own, checked by digest); the one passed here is not sent."""
        batch = len(features)
        return features[:, 1:].reshape(batch, self._size, self._size), features[:, 0]

    def close(self) -> None:
        """Close this thread's client (each thread's own is closed with its thread-local storage)."""
        client = getattr(self._local, "client", None)
        if client is not None:
            client.close()
            self._local.client = None

    def _client(self):
        client = getattr(self._local, "client", None)
        if client is None:
            url = f"{self.address.host}:{self.address.port}"
            if self.address.protocol == "grpc":
                client = self._module.InferenceServerClient(url)
            else:
                client = self._module.InferenceServerClient(
                    url, connection_timeout=self._timeout_s, network_timeout=self._timeout_s
                )
            self._local.client = client
        return client

    def _infer(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        m = self._module
        frames = m.InferInput(INPUT, list(images.shape), "FP32")
        if self.address.protocol == "grpc":
            frames.set_data_from_numpy(np.ascontiguousarray(images, np.float32))
            outputs = [m.InferRequestedOutput(name) for name in OUTPUTS]
            answer = self._client().infer(self.address.model, [frames], outputs=outputs, client_timeout=self._timeout_s)
        else:
            frames.set_data_from_numpy(np.ascontiguousarray(images, np.float32), binary_data=True)
            outputs = [m.InferRequestedOutput(name, binary_data=True) for name in OUTPUTS]
            answer = self._client().infer(self.address.model, [frames], outputs=outputs)
        return answer.as_numpy(MAP), answer.as_numpy(SCORE), answer.as_numpy(DIGEST)


def _one_line(exc: Exception) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:200]
