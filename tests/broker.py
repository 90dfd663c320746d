"""A real Mosquitto broker on 127.0.0.1 for the tests: started, stopped and restarted on one port."""

from __future__ import annotations

import getpass
import shutil
import socket
import subprocess
import time
from pathlib import Path

from edge_anomaly.runtime.serve_process import free_port

MOSQUITTO = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)


class Broker:
    """``mosquitto -c`` with a loopback listener; ``users`` turns on a password file."""

    def __init__(
        self, folder: Path, users: dict[str, str] | None = None, tls: tuple[Path, Path, Path] | None = None
    ) -> None:
        """``tls``: (CA, server certificate, server key) PEM files, for a TLS-only listener."""
        self.folder, self.port = folder, free_port()
        lines = [
            f"listener {self.port} 127.0.0.1",
            "persistence true",  # a subscriber's session and queued messages outlive a broker restart
            f"persistence_location {folder}/",
            f"log_dest file {folder / 'broker.log'}",
            f"user {getpass.getuser()}",  # as root, mosquitto would drop to a user who cannot read the test's files
        ]
        if tls:
            lines += [f"cafile {tls[0]}", f"certfile {tls[1]}", f"keyfile {tls[2]}"]
        if users:
            passwords = folder / "passwords"
            passwords.write_text("")
            for user, password in users.items():
                subprocess.run(["mosquitto_passwd", "-b", str(passwords), user, password], check=True, timeout=30)
            passwords.chmod(0o600)
            lines += ["allow_anonymous false", f"password_file {passwords}"]
        else:
            lines.append("allow_anonymous true")
        self.config = folder / "mosquitto.conf"
        self.config.write_text("\n".join(lines) + "\n")
        self.process: subprocess.Popen | None = None

    def start(self) -> Broker:
        self.process = subprocess.Popen([MOSQUITTO, "-c", str(self.config)], stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"mosquitto did not start on port {self.port}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self.process = None


class Listener:
    """``mosquitto_sub`` on a topic filter, printing every message with its topic, QoS 1."""

    def __init__(self, port: int, topic: str, folder: Path, tls_ca: Path | None = None) -> None:
        self.out = folder / f"sub-{time.monotonic_ns()}.txt"
        self._fh = open(self.out, "w")
        self.process = subprocess.Popen(
            ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(port), "-t", topic, "-q", "1", "-v", "-c", "-i",
             f"listener-{port}", *(["--cafile", str(tls_ca)] if tls_ca else [])],
            stdout=self._fh,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        time.sleep(0.3)  # subscribed before anything is published

    def lines(self) -> list[tuple[str, str]]:
        self._fh.flush()
        out = []
        for line in self.out.read_text().splitlines():
            topic, _, payload = line.partition(" ")
            out.append((topic, payload))
        return out

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)
        self._fh.close()
