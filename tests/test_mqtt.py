"""Events to a real Mosquitto broker on 127.0.0.1: order, QoS 1, outages, restarts, refusals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import cv2
import pytest
from broker import MOSQUITTO, Broker, Listener

from edge_anomaly.runtime.event_log import read_events
from edge_anomaly.runtime.gate import EventGate
from edge_anomaly.runtime.sources import IterableSource
from edge_anomaly.synthetic import defect_line

pytestmark = pytest.mark.skipif(
    MOSQUITTO is None, reason="mosquitto is not installed (make test installs it: apt-get install mosquitto)"
)
EVENT_KINDS = ("event_opened", "event_closed", "verdict")


@pytest.fixture(scope="module")
def line_frames():
    """48 BGR fabric frames with defects passing at 8-11, 24-27 and 40-43."""
    return defect_line(48, lambda i: i % 16 in range(8, 12), seed=5)


@pytest.fixture()
def broker(tmp_path):
    b = Broker(tmp_path).start()
    yield b
    b.stop()


def _gate():
    return EventGate(open_n=2, open_m=3, close_n=3, close_m=3)


def _wait_for(predicate, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


def _events_received(listener, prefix: str) -> list[dict]:
    return [json.loads(p) for t, p in listener.lines() if t == f"{prefix}/events"]


def _logged_events(path) -> list[dict]:
    return [r for r in read_events(path) if r["type"] in EVENT_KINDS]


def _watched_sink(broker, prefix: str, folder, heartbeat_s: float):
    """A listener on the prefix, the event log that is the spool, and the sink feeding the broker from it."""
    from edge_anomaly.runtime.mqtt_sink import MqttSink

    listener = Listener(broker.port, f"{prefix}/#", folder)
    log = folder / "events.jsonl"
    return listener, log, MqttSink(f"mqtt://127.0.0.1:{broker.port}/{prefix}", log, heartbeat_s=heartbeat_s)


def test_events_reach_the_broker_in_order_with_status_and_heartbeat(inspector, line_frames, broker, tmp_path):
    prefix = "edge-anomaly/line7/cam1"
    listener, log, sink = _watched_sink(broker, prefix, tmp_path, heartbeat_s=0.2)

    def slow():
        for frame in line_frames:
            time.sleep(0.02)
            yield frame

    list(inspector.stream(IterableSource(slow()), events=log, sinks=[sink], gate=_gate()))
    logged = _logged_events(log)
    assert len(logged) == 9  # three events: opened, closed, verdict each
    assert _wait_for(lambda: len(_events_received(listener, prefix)) >= len(logged))
    received = _events_received(listener, prefix)
    assert received == logged  # the log's JSON, in the log's order, each once
    assert all(r["event_uid"] == f"{r['run']}-{r['event']}" for r in received)
    topics = [t for t, _ in listener.lines()]
    assert f"{prefix}/heartbeat" in topics

    def statuses():
        return [json.loads(p)["state"] for t, p in listener.lines() if t == f"{prefix}/status"]

    assert _wait_for(lambda: statuses()[-1:] == ["offline"]) and statuses()[0] == "online"
    listener.stop()
    retained = subprocess.run(
        ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(broker.port), "-t", f"{prefix}/status", "-C", "1", "-W", "5"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert json.loads(retained.stdout)["state"] == "offline"  # retained for whoever subscribes later


def test_events_of_a_broker_outage_arrive_after_it_returns(inspector, line_frames, broker, tmp_path):
    prefix = "edge-anomaly/outage"
    listener, log, sink = _watched_sink(broker, prefix, tmp_path, heartbeat_s=60)

    def with_outage():
        for i, frame in enumerate(line_frames):
            if i == 14:  # after the first event, before the second
                broker.stop()
            if i == 46:  # both later events happened while the broker was away
                broker.start()
            time.sleep(0.02)
            yield frame
        quiet = line_frames[0]
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and sink.published < 9:  # the line goes on while the backlog drains
            time.sleep(0.05)
            yield quiet

    runner = inspector.stream(IterableSource(with_outage()), events=log, sinks=[sink], gate=_gate())
    list(runner)
    logged = _logged_events(log)
    assert len(logged) == 9
    assert _wait_for(lambda: {r["seq"] for r in _events_received(listener, prefix)} >= {r["seq"] for r in logged})
    received = _events_received(listener, prefix)
    assert [r["seq"] for r in received] == sorted(r["seq"] for r in received)  # in order, repeats allowed
    assert {r["event_uid"] for r in received} == {r["event_uid"] for r in logged}
    listener.stop()


RUN_SCRIPT = r"""
import sys
from edge_anomaly.cli import main
sys.exit(main(["run", sys.argv[1], "--source", sys.argv[2], "--events", sys.argv[3], "--quiet", "--mqtt", sys.argv[4]]))
"""


def test_after_kill_9_the_next_run_publishes_the_unsent_tail(bundle_dir, line_frames, broker, tmp_path):
    prefix = "edge-anomaly/restart"
    url = f"mqtt://127.0.0.1:{broker.port}/{prefix}"
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(480):
        cv2.imwrite(str(frames / f"{i:05d}.png"), line_frames[i % 48])
    log = tmp_path / "events.jsonl"
    listener = Listener(broker.port, f"{prefix}/#", tmp_path)
    broker.stop()  # the first run records events the broker never hears of
    proc = subprocess.Popen(
        [sys.executable, "-c", RUN_SCRIPT, str(bundle_dir), str(frames), str(log), url],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    seen = 0
    deadline = time.monotonic() + 120
    while seen < 6 and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen += 1
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    first_run = _logged_events(log)
    assert len(first_run) >= 6

    broker.start()
    short = tmp_path / "short"
    short.mkdir()
    for path in sorted(frames.iterdir())[:20]:
        (short / path.name).write_bytes(path.read_bytes())
    done = subprocess.run(
        [sys.executable, "-c", RUN_SCRIPT, str(bundle_dir), str(short), str(log), url],
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    logged = _logged_events(log)
    assert len(logged) > len(first_run)
    assert _wait_for(lambda: {r["seq"] for r in _events_received(listener, prefix)} >= {r["seq"] for r in logged})
    received = _events_received(listener, prefix)
    assert [r["seq"] for r in received] == sorted(r["seq"] for r in received)
    second_run = [r for r in logged[len(first_run) :] if r.get("reason") != "interrupted"]
    assert second_run[0]["event"] > max(r["event"] for r in first_run)  # the numbering continued
    listener.stop()


def test_refused_credentials_and_tls_to_a_plain_port_are_clear_errors(bundle_dir, synth_root, tmp_path):
    from edge_anomaly.runtime.mqtt_sink import MqttError, MqttSink

    secured = Broker(tmp_path, users={"line7": "right"}).start()
    try:
        with pytest.raises(MqttError, match="refused the connection"):
            MqttSink(f"mqtt://line7:wrong@127.0.0.1:{secured.port}/p", tmp_path / "e.jsonl")
        sink = MqttSink(f"mqtt://line7:right@127.0.0.1:{secured.port}/p", tmp_path / "e.jsonl")
        sink.close()
        with pytest.raises(MqttError, match="TLS with broker"):
            MqttSink(f"mqtts://127.0.0.1:{secured.port}/p", tmp_path / "e.jsonl")
        done = subprocess.run(
            [sys.executable, "-m", "edge_anomaly.cli", "run", str(bundle_dir), "--source",
             str(synth_root / "fabric" / "test" / "good"), "--events", str(tmp_path / "e.jsonl"),
             "--mqtt", f"mqtt://line7:wrong@127.0.0.1:{secured.port}/p"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == 2 and "Traceback" not in done.stderr
        assert "refused the connection" in done.stderr and "wrong" not in done.stderr  # no password echoed
    finally:
        secured.stop()


def _certificates(folder):
    """A CA, and a server certificate for 127.0.0.1 signed by it, as PEM files."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.timezone.utc)

    def name(text):
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])

    def write(path, key, cert):
        path.with_suffix(".key").write_bytes(
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption())
        )  # fmt: skip
        path.with_suffix(".pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder().subject_name(name("test CA")).issuer_name(name("test CA"))
        .public_key(ca_key.public_key()).serial_number(1).not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = (
        x509.CertificateBuilder().subject_name(name("127.0.0.1")).issuer_name(ca.subject)
        .public_key(server_key.public_key()).serial_number(2).not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    write(folder / "ca", ca_key, ca)
    write(folder / "server", server_key, server)
    return folder / "ca.pem", folder / "server.pem", folder / "server.key"


def test_events_reach_a_tls_broker_that_the_given_ca_vouches_for(inspector, line_frames, tmp_path):
    from edge_anomaly.runtime.mqtt_sink import MqttSink, TlsFiles

    ca, cert, key = _certificates(tmp_path)
    broker = Broker(tmp_path, tls=(ca, cert, key)).start()
    try:
        listener = Listener(broker.port, "tls/#", tmp_path, tls_ca=ca)
        log = tmp_path / "events.jsonl"
        sink = MqttSink(f"mqtts://127.0.0.1:{broker.port}/tls", log, TlsFiles(ca=ca))
        list(inspector.stream(IterableSource(line_frames[:20]), events=log, sinks=[sink], gate=_gate()))
        logged = _logged_events(log)
        assert logged and _wait_for(lambda: _events_received(listener, "tls") == logged)
        listener.stop()
        with pytest.raises(Exception, match="TLS with broker"):  # without the CA, the broker is not trusted
            MqttSink(f"mqtts://127.0.0.1:{broker.port}/tls", log)
    finally:
        broker.stop()
