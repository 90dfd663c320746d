"""The live operator page: what the camera sees, the decision, the last events, frames per second.

>>> page = LivePage.at("127.0.0.1:8080")                 # this box only; another address takes a token
>>> inspector.stream("rtsp://...", sinks=[page]).run()   # open http://127.0.0.1:8080/

A sink with its own HTTP server (the standard library's threading server, files
shipped in ``runtime/web/``, nothing from a CDN). The frame loop only hands it
a reference to the latest frame and result (``frame``) and to each event
record (``handle``); all drawing and JPEG encoding happens on the server's
threads, once per frame however many clients watch, and only when a client
asks. Clients get the latest frame only: one that cannot keep up misses frames,
and one that stops reading is dropped after ``CLIENT_TIMEOUT_S``.

Endpoints: ``/`` (the page), ``/status.json`` (decision, score, threshold,
location, frames/s, counters, backend), ``/events.json`` (the last events with
their verdicts), ``/frame.jpg`` (the latest frame with its anomaly overlay),
``/event/<uid>.jpg`` (an event's best frame, as a thumbnail). With a token,
every request must carry it (``?token=`` or ``Authorization: Bearer``).
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import threading
import time
from collections import OrderedDict
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import cv2

from edge_anomaly.errors import EdgeAnomalyError
from edge_anomaly.overlay import render_overlay

from .priority import run_below_the_frame_loop
from .sinks import StreamEvent

log = logging.getLogger(__name__)

WEB = Path(__file__).parent / "web"
STATIC = {"/": ("index.html", "text/html; charset=utf-8"), "/app.js": ("app.js", "text/javascript"),
          "/style.css": ("style.css", "text/css")}  # fmt: skip
EVENTS_KEPT = 20
THUMB_SIDE = 240
LIVE_SIDE = 640  # the live picture is drawn at most this wide: enough to see, cheap to encode
CLIENT_TIMEOUT_S = 5.0
JPEG_QUALITY = 80


class LivePageError(EdgeAnomalyError):
    """The page cannot be served as asked (a bad address, a port in use)."""


class LivePage:
    """A stream sink serving the live page; see the module docstring."""

    def __init__(self, host: str = "127.0.0.1", port: int = 8080, token: str | None = None) -> None:
        self.token = token
        self._lock = threading.Lock()
        self._latest: tuple[int, object, object] | None = None  # frame id, BGR image, result
        self._rendered: tuple[int, bytes] | None = None
        self._events: OrderedDict[str, dict] = OrderedDict()
        self._best: dict[str, tuple[object, object]] = {}  # event uid -> (image, result), for thumbnails
        self._thumbs: dict[str, bytes] = {}
        self._runner = None
        if not _is_loopback(host) and not token:
            log.warning("live page on %s without --http-token: anyone on that network can watch the line", host)
        try:
            self._server = ThreadingHTTPServer((host, port), _handler_for(self))
        except OSError as exc:
            raise LivePageError(f"cannot serve the live page on {host}:{port}: {exc.strerror or exc}") from None
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="live-page", daemon=True)
        self._thread.start()

    @classmethod
    def at(cls, address: str, token: str | None = None) -> LivePage:
        """``HOST:PORT`` (``[::1]:8080`` for IPv6) -> a running page."""
        host, sep, port = address.rpartition(":")
        if not sep or not port.isdigit() or not host:
            raise LivePageError(f"--http expects HOST:PORT such as 127.0.0.1:8080, got {address!r}")
        return cls(host.strip("[]"), int(port), token)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{port}/" + (f"?token={self.token}" if self.token else "")

    # the stream's side: references only, never a wait

    def start(self, runner) -> None:
        self._runner = runner

    def frame(self, frame, result) -> None:
        self._latest = (frame.id, frame.image, result)

    def handle(self, event: StreamEvent) -> None:
        record = event.record
        uid = record.get("event_uid")
        if uid is None:
            return
        with self._lock:
            entry = self._events.setdefault(uid, {"event_uid": uid, "event": record.get("event")})
            if event.kind == "event_opened":
                entry |= {
                    "opened": record.get("time"),
                    "score": record.get("score"),
                    "location": record.get("location"),
                }
            elif event.kind == "event_closed":
                entry |= {
                    "closed_reason": record.get("reason"),
                    "score": record.get("best_score", entry.get("score")),
                    "location": record.get("location", entry.get("location")),
                    "frames": record.get("frames"),
                }
                if event.image is not None and event.result is not None:
                    self._best[uid] = (event.image, event.result)
                    entry["thumbnail"] = f"event/{uid}.jpg"
            elif event.kind == "verdict":
                entry |= {"verdict": record.get("text"), "verdict_source": record.get("verdict_source")}
            self._events.move_to_end(uid)
            while len(self._events) > EVENTS_KEPT:
                old, _ = self._events.popitem(last=False)
                self._best.pop(old, None)
                self._thumbs.pop(old, None)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    # the server's side

    def status(self) -> dict:
        latest, runner = self._latest, self._runner
        status: dict = {"time": time.time(), "frame": None}
        if latest is not None:
            frame_id, _, result = latest
            status |= {
                "frame": frame_id,
                "decision": "anomaly" if result.is_anomalous else "normal",
                "score": round(float(result.score), 4),
                "threshold": round(float(result.threshold), 4),
                "location": result.location,
            }
        if runner is not None:
            stats = runner.stats
            status |= {
                "run": runner.run_id,
                "source": runner.source.name,
                "fps": round(stats.fps, 2),
                "inspected": stats.inspected,
                "dropped": stats.dropped,
                "bad_frames": stats.bad_frames,
                "events": stats.events,
                "p99_ms": round(stats.p99_ms, 2),
            }
        return status

    def events(self) -> list[dict]:
        with self._lock:
            return list(reversed(self._events.values()))

    def live_jpeg(self) -> bytes | None:
        """The latest frame with its overlay, drawn once per frame whoever asks."""
        latest = self._latest
        if latest is None:
            return None
        frame_id, image, result = latest
        rendered = self._rendered
        if rendered is not None and rendered[0] == frame_id:
            return rendered[1]
        data = _jpeg(render_overlay(image, result), LIVE_SIDE)
        self._rendered = (frame_id, data)
        return data

    def thumbnail(self, uid: str) -> bytes | None:
        with self._lock:
            if uid in self._thumbs:
                return self._thumbs[uid]
            best = self._best.get(uid)
        if best is None:
            return None
        data = _jpeg(render_overlay(*best), THUMB_SIDE)
        with self._lock:
            self._thumbs[uid] = data
        return data

    def authorised(self, query: dict, header: str | None) -> bool:
        if not self.token:
            return True
        offered = (query.get("token") or [None])[0] or (header or "").removeprefix("Bearer ").strip()
        return bool(offered) and hmac.compare_digest(offered.encode(), self.token.encode())


def _jpeg(bgr, side: int) -> bytes:
    h, w = bgr.shape[:2]
    if w > side:
        bgr = cv2.resize(bgr, (side, max(1, round(h * side / w))), interpolation=cv2.INTER_AREA)
    ok, data = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise LivePageError("cannot encode a JPEG")
    return data.tobytes()


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _handler_for(page: LivePage):
    class Handler(BaseHTTPRequestHandler):
        timeout = CLIENT_TIMEOUT_S  # a client that stops reading is dropped, never waited on
        server_version = "edge-anomaly"
        protocol_version = "HTTP/1.1"  # keep-alive: one connection (and thread) per client, not per request

        def setup(self) -> None:
            run_below_the_frame_loop()  # drawing and encoding get only the CPU the frame loop leaves
            super().setup()

        def do_GET(self) -> None:  # noqa: N802  (the standard library's name)
            parts = urlsplit(self.path)
            if not page.authorised(parse_qs(parts.query), self.headers.get("Authorization")):
                self._send(HTTPStatus.UNAUTHORIZED, b"token required\n", "text/plain")
                return
            path = parts.path
            if path in STATIC:
                name, kind = STATIC[path]
                self._send(HTTPStatus.OK, (WEB / name).read_bytes(), kind)
            elif path == "/status.json":
                self._json(page.status())
            elif path == "/events.json":
                self._json(page.events())
            elif path == "/frame.jpg":
                self._image(page.live_jpeg())
            elif path.startswith("/event/") and path.endswith(".jpg"):
                self._image(page.thumbnail(path[len("/event/") : -len(".jpg")]), cache="max-age=3600, immutable")
            else:
                self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain")

        def _json(self, value) -> None:
            self._send(HTTPStatus.OK, json.dumps(value, allow_nan=False).encode(), "application/json")

        def _image(self, data: bytes | None, cache: str = "no-store") -> None:
            if data is None:
                self._send(HTTPStatus.NOT_FOUND, b"no frame yet\n", "text/plain")
            else:
                self._send(HTTPStatus.OK, data, "image/jpeg", cache)

        def _send(self, status: HTTPStatus, body: bytes, kind: str, cache: str = "no-store") -> None:
            try:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", cache)
                self.end_headers()
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError, TimeoutError):
                pass  # the client left; the line does not care

        def log_message(self, format: str, *args) -> None:  # noqa: A002  (the standard library's name)
            log.debug("live page: " + format, *args)

    return Handler
