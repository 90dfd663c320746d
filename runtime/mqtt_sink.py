"""Events to the factory's MQTT broker, with the event log as the spool (store-and-forward).

>>> sink = MqttSink("mqtt://line7:secret@10.0.0.2:1883/edge-anomaly/line7/cam1", spool="events.jsonl")
>>> inspector.stream("rtsp://...", events="events.jsonl", sinks=[sink]).run()

Topics under the URL's path (the prefix):

- ``PREFIX/events``: ``event_opened``, ``event_closed`` and ``verdict`` records, QoS 1, the JSON the log
  holds (``event_uid`` stays the same across restarts: a consumer drops repeats by it);
- ``PREFIX/status``: retained ``{"state": "online", ...}``, and ``offline`` as the last will when the box
  vanishes, or at a clean end;
- ``PREFIX/heartbeat``: every ``heartbeat_s`` seconds the run's frames/s, frames inspected and dropped,
  events and the backend (QoS 0: the next one replaces it).

The frame loop never waits on the broker: ``handle`` only queues the record and wakes a forwarder
thread, which publishes one record at a time and moves a cursor (``SPOOL.mqtt-<broker>``, the last
``seq`` the broker acknowledged) only after the broker's PUBACK. After an outage or a restart the
forwarder sends, in order, every record of the log past the cursor: the broker sees each record at
least once. Credentials the broker refuses, and TLS against a plain port, fail at start with one clear
error; a broker that is down at start is retried with backoff while the line runs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import ssl
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from edge_anomaly.errors import EdgeAnomalyError

from .event_log import read_spool
from .sinks import StreamEvent

log = logging.getLogger(__name__)

EVENT_KINDS = ("event_opened", "event_closed", "verdict")
CONNECT_TIMEOUT_S = 10.0
ACK_TIMEOUT_S = 10.0
MAX_PENDING = 10_000  # records held in memory; past this they are read back from the spool when there is room


class MqttError(EdgeAnomalyError):
    """The broker cannot be used as configured (bad URL, refused credentials, TLS mismatch)."""


@dataclass(frozen=True)
class BrokerAddress:
    """``mqtt[s]://[user[:password]@]host[:port]/prefix``, parsed; ``password`` never appears in ``str``."""

    host: str
    port: int
    prefix: str
    tls: bool
    username: str | None = None
    password: str | None = None

    @classmethod
    def parse(cls, url: str) -> BrokerAddress:
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts"):
            raise MqttError(f"broker URL must start with mqtt:// or mqtts://, got {url!r}")
        if not parts.hostname:
            raise MqttError(f"broker URL {url!r} names no host")
        prefix = parts.path.strip("/")
        if not prefix or any(ch in prefix for ch in "#+"):
            raise MqttError(f"broker URL {url!r} needs a topic prefix without wildcards, e.g. /edge-anomaly/line7/cam1")
        try:
            port = parts.port or (8883 if parts.scheme == "mqtts" else 1883)
        except ValueError:
            raise MqttError(f"broker URL {url!r} has a bad port") from None
        username = unquote(parts.username) if parts.username else None
        password = unquote(parts.password) if parts.password else None
        return cls(parts.hostname, port, prefix, parts.scheme == "mqtts", username, password)

    def __str__(self) -> str:
        user = f"{self.username}@" if self.username else ""
        return f"{'mqtts' if self.tls else 'mqtt'}://{user}{self.host}:{self.port}/{self.prefix}"


@dataclass(frozen=True)
class TlsFiles:
    """CA bundle to trust, and the client's own certificate and key where the broker asks for one."""

    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None


class MqttSink:
    """A stream sink publishing to one broker; see the module docstring for topics and guarantees."""

    def __init__(
        self,
        url: str,
        spool: str | Path,
        tls: TlsFiles = TlsFiles(),
        heartbeat_s: float = 10.0,
        client_id: str | None = None,
        backups: int = 5,
    ) -> None:
        """``spool``: the stream's event log (``events=``), which this sink feeds the broker from."""
        try:
            import paho.mqtt.client as mqtt
        except ImportError:
            raise MqttError("MQTT needs paho-mqtt: pip install paho-mqtt") from None
        self.address = BrokerAddress.parse(url)
        self.spool, self.backups, self.heartbeat_s = Path(spool), backups, heartbeat_s
        key = hashlib.sha256(f"{self.address.host}:{self.address.port}/{self.address.prefix}".encode()).hexdigest()
        self.cursor_path = self.spool.with_name(f"{self.spool.name}.mqtt-{key[:12]}")
        self.acked = self._read_cursor()
        self.published = 0
        self._pending: deque[dict[str, Any]] = deque()
        self._overflowed = False
        self._wake = threading.Condition()
        self._closing = threading.Event()
        self._connected = threading.Event()
        self._runner = None
        self._run_id: str | None = None
        self._client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id or f"edge-anomaly-{os.getpid()}-{os.urandom(3).hex()}",
            protocol=mqtt.MQTTv311,
        )
        self._mqtt = mqtt
        if self.address.username:
            self._client.username_pw_set(self.address.username, self.address.password)
        if self.address.tls:
            self._client.tls_set(
                ca_certs=str(tls.ca) if tls.ca else None,
                certfile=str(tls.cert) if tls.cert else None,
                keyfile=str(tls.key) if tls.key else None,
                cert_reqs=ssl.CERT_REQUIRED,
            )
        self._client.will_set(self._topic("status"), json.dumps({"state": "offline", "reason": "lost"}), 1, True)
        self._client.reconnect_delay_set(min_delay=1, max_delay=8)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._refused: str | None = None
        self._connect_first()
        self._forwarder = threading.Thread(target=self._forward, name="mqtt-forwarder", daemon=True)
        self._heartbeat = threading.Thread(target=self._beat, name="mqtt-heartbeat", daemon=True)

    # the stream's side: never blocks

    def start(self, runner) -> None:
        """Called by the stream as it starts: the run's id and stats, then the spool's unsent tail."""
        self._runner, self._run_id = runner, runner.run_id
        self._publish_status("online")
        with self._wake:
            self._reload_from_spool()
        self._forwarder.start()
        self._heartbeat.start()

    def handle(self, event: StreamEvent) -> None:
        with self._wake:
            if self._overflowed or len(self._pending) >= MAX_PENDING:
                self._overflowed = True  # it is on disk: read back from the spool once there is room
            else:
                self._pending.append(event.record)
            self._wake.notify()

    def close(self, drain_s: float = 5.0) -> None:
        """Give the forwarder ``drain_s`` to send what is left (the rest waits in the spool for the next run),
        publish ``offline`` and disconnect."""
        deadline = time.monotonic() + drain_s
        while self._forwarder.is_alive() and time.monotonic() < deadline:
            with self._wake:
                if not self._pending and not self._overflowed:
                    break
            time.sleep(0.05)
        self._closing.set()
        with self._wake:
            self._wake.notify_all()
        for thread in (self._forwarder, self._heartbeat):
            if thread.is_alive():
                thread.join(timeout=ACK_TIMEOUT_S + 1)
        if self._connected.is_set():
            try:
                self._publish_status("offline", reason="stopped").wait_for_publish(timeout=2.0)
            except (RuntimeError, ValueError):
                pass  # the broker went away: its last will says offline instead
        self._client.disconnect()
        self._client.loop_stop()

    # the broker's side

    def _topic(self, name: str) -> str:
        return f"{self.address.prefix}/{name}"

    def _connect_first(self) -> None:
        """Connect once, synchronously enough to tell a mistake from an outage: refused credentials and a
        failed TLS handshake raise; a broker that is down or unreachable is logged and retried in the
        background while the line runs."""
        address, reachable = self.address, False
        try:
            self._client.connect(address.host, address.port, keepalive=30)  # TCP and TLS now, CONNACK in the loop
            reachable = True
        except ssl.SSLError as exc:
            raise MqttError(f"TLS with broker {address} failed ({exc.reason or exc}): is it a TLS port, and the CA "
                            "the one that signed its certificate?") from None  # fmt: skip
        except (ConnectionResetError, BrokenPipeError) as exc:
            if address.tls:
                raise MqttError(f"TLS with broker {address} failed ({exc}): is {address.port} a TLS port?") from None
            self._client.connect_async(address.host, address.port, keepalive=30)
        except OSError as exc:
            log.warning("broker %s not reachable (%s); events wait in %s and go out once it answers", address,
                        exc.strerror or exc, self.spool)  # fmt: skip
            self._client.connect_async(address.host, address.port, keepalive=30)
        self._client.loop_start()
        deadline = time.monotonic() + (CONNECT_TIMEOUT_S if reachable else 0.0)
        while time.monotonic() < deadline and not self._connected.is_set() and self._refused is None:
            time.sleep(0.02)
        if self._refused is not None:
            self._client.loop_stop()
            raise MqttError(f"broker {address} refused the connection: {self._refused}")

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self._refused = str(reason_code)
            if "authori" in self._refused.lower() or "password" in self._refused.lower():
                client.disconnect()  # retrying refused credentials would only hammer the broker
            return
        self._connected.set()
        if self._run_id is not None:
            self._publish_status("online")
        with self._wake:
            self._wake.notify()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self._connected.clear()

    def _publish_status(self, state: str, reason: str | None = None):
        status = {"state": state, "run": self._run_id, "time": time.time()} | ({"reason": reason} if reason else {})
        return self._client.publish(self._topic("status"), json.dumps(status), qos=1, retain=True)

    def _forward(self) -> None:
        """One record at a time, in spool order; the cursor moves only on the broker's acknowledgement."""
        backoff = 0.5
        while not self._closing.is_set():
            with self._wake:
                if not self._pending and self._overflowed:
                    self._reload_from_spool()
                while not self._closing.is_set() and not (self._pending and self._connected.is_set()):
                    self._wake.wait(timeout=1.0)
                    if not self._pending and self._overflowed:
                        self._reload_from_spool()
                if self._closing.is_set():
                    return
                record = self._pending[0]
            if record.get("seq", -1) <= self.acked or record.get("type") not in EVENT_KINDS:
                self._done(record)  # already acknowledged, or not an event (stream_end stays in the log)
                continue
            if self._send(record):
                self._done(record)
                backoff = 0.5
            else:
                time.sleep(backoff)  # the client reconnects on its own, with its own backoff
                backoff = min(backoff * 2, 10.0)

    def _send(self, record: dict[str, Any]) -> bool:
        payload = json.dumps(record, separators=(",", ":"), allow_nan=False)
        try:
            info = self._client.publish(self._topic("events"), payload, qos=1)
            if info.rc != self._mqtt.MQTT_ERR_SUCCESS:
                return False
            info.wait_for_publish(timeout=ACK_TIMEOUT_S)
            return info.is_published()
        except (RuntimeError, ValueError, OSError) as exc:
            log.warning("publishing to %s failed (%s); retrying", self.address, exc)
            return False

    def _done(self, record: dict[str, Any]) -> None:
        with self._wake:
            if self._pending and self._pending[0] is record:
                self._pending.popleft()
        seq = record.get("seq")
        if isinstance(seq, int) and seq > self.acked:
            if record.get("type") in EVENT_KINDS:
                self.published += 1
            self.acked = seq
            self._write_cursor()

    def _reload_from_spool(self) -> None:
        """Everything past the cursor, from disk (at start, and after the in-memory queue overflowed)."""
        self._overflowed = False
        queued = {r.get("seq") for r in self._pending}
        tail = [r for r in read_spool(self.spool, self.backups, self.acked) if r["seq"] not in queued]
        if len(tail) > MAX_PENDING:
            tail, self._overflowed = tail[:MAX_PENDING], True
        self._pending = deque(sorted([*self._pending, *tail], key=lambda r: r.get("seq", -1)))

    def _read_cursor(self) -> int:
        try:
            return int(json.loads(self.cursor_path.read_text())["acked_seq"])
        except (OSError, ValueError, KeyError, TypeError):
            return -1

    def _write_cursor(self) -> None:
        """Atomically: a crash leaves the old cursor or the new one, and a stale cursor only resends."""
        tmp = self.cursor_path.with_name(self.cursor_path.name + ".tmp")
        try:
            tmp.write_text(json.dumps({"acked_seq": self.acked, "broker": str(self.address)}))
            os.replace(tmp, self.cursor_path)
        except OSError as exc:
            log.warning("cannot record the broker's acknowledgement in %s: %s (records may be resent)", tmp, exc)

    def _beat(self) -> None:
        while not self._closing.wait(self.heartbeat_s):
            if self._runner is None or not self._connected.is_set():
                continue
            stats = self._runner.stats
            beat = {
                "run": self._run_id,
                "time": time.time(),
                "fps": round(stats.fps, 2),
                "inspected": stats.inspected,
                "dropped": stats.dropped,
                "unreachable": stats.unreachable_frames,
                "events": stats.events,
                "backend": _backend_name(self._runner.inspector),
            }
            self._client.publish(self._topic("heartbeat"), json.dumps(beat), qos=0)


def _backend_name(inspector) -> str | None:
    """The backend of an ``Inspector``, or of the one a settling or zero-shot wrapper holds."""
    while inspector is not None:
        if hasattr(inspector, "backend_name"):
            return inspector.backend_name
        inspector = getattr(inspector, "inspector", None)
    return None
