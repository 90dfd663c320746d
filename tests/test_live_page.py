"""The live operator page: its JSON and images over real HTTP, and the page itself in headless Chromium."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import cv2
import numpy as np
import pytest

from edge_anomaly.runtime.gate import EventGate
from edge_anomaly.runtime.live_page import LivePage
from edge_anomaly.runtime.serve_process import free_port
from edge_anomaly.runtime.sources import IterableSource
from edge_anomaly.synthetic import defect_line

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


def _get(url: str, token: str | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.fixture(scope="module")
def defect_frames():
    return defect_line(20, lambda i: 5 <= i < 9, seed=3)


def test_the_page_serves_status_events_and_images_behind_its_token(inspector, defect_frames, tmp_path):
    page = LivePage("127.0.0.1", free_port(), token="s3cret")
    base = page.url.split("?")[0]
    runner = inspector.stream(
        IterableSource(defect_frames),
        sinks=[_Lingering(page)],
        gate=EventGate(open_n=2, open_m=3, close_n=3, close_m=3),
    )
    events = list(runner)
    try:
        assert _get(base + "status.json")[0] == 401
        assert _get(base + "status.json?token=wrong")[0] == 401
        status, body = _get(base + "status.json", token="s3cret")
        assert status == 200
        s = json.loads(body)
        assert s["frame"] == 19 and s["decision"] in ("normal", "anomaly") and s["inspected"] == 20
        assert s["run"] == runner.run_id and {"score", "threshold", "fps", "dropped", "location"} <= set(s)
        listed = json.loads(_get(base + "events.json?token=s3cret")[1])
        uids = {e.record["event_uid"] for e in events if e.kind == "event_opened"}
        assert {e["event_uid"] for e in listed} == uids and all(e.get("verdict") for e in listed)
        status, jpeg = _get(base + "frame.jpg?token=s3cret")
        assert status == 200 and cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR).shape[2] == 3
        status, thumb = _get(base + listed[0]["thumbnail"] + "?token=s3cret")
        assert status == 200 and cv2.imdecode(np.frombuffer(thumb, np.uint8), cv2.IMREAD_COLOR).shape[1] <= 240
        status, html = _get(base + "?token=s3cret")
        assert status == 200 and b"app.js" in html and b"http" not in html.replace(b"http-equiv", b"")  # no CDN
    finally:
        page.close()


class _Lingering:
    """The page as a sink that stays up after the stream (which would close it), so the test can read it."""

    def __init__(self, page: LivePage) -> None:
        self.start, self.frame, self.handle = page.start, page.frame, page.handle

    def close(self) -> None:
        pass


def _chromium(*args: str, timeout: int = 60) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, *CHROMIUM_FLAGS, *args], capture_output=True, text=True, timeout=timeout)


@pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (make test installs it: apt-get install chromium)"
)
def test_a_browser_sees_the_decision_and_a_live_image_that_updates(bundle_dir, defect_frames, tmp_path):
    video = tmp_path / "line.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 25, (256, 256))
    for i in range(4000):
        writer.write(defect_frames[i % 20])
    writer.release()
    port = free_port()
    run = subprocess.Popen(
        [sys.executable, "-m", "edge_anomaly.cli", "run", str(bundle_dir), "--source", str(video), "--quiet",
         "--http", f"127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if json.loads(_get(url + "status.json")[1]).get("frame") is not None:
                    break
            except (OSError, ValueError):
                pass
            time.sleep(0.2)
        shown = []
        for _ in range(2):
            dom = _chromium(f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=2500", "--dump-dom", url)
            frame = re.search(r'id="live"[^>]*data-frame="(\d+)"|data-frame="(\d+)"[^>]*id="live"', dom.stdout)
            decision = re.search(r'id="decision"[^>]*>([^<]+)<', dom.stdout)
            assert frame and decision, dom.stdout[-2000:]
            shown.append(int(frame.group(1) or frame.group(2)))
            assert decision.group(1).strip() == "normal" or decision.group(1).startswith("ANOMALY")
            assert run.poll() is None, "the run ended before the browser looked twice"
        assert shown[1] > shown[0]  # the live image moved on between the two looks
        shot = tmp_path / "live-page.png"
        _chromium(f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,900", "--virtual-time-budget=2000",
                  f"--screenshot={shot}", url)  # fmt: skip
        assert shot.is_file() and cv2.imread(str(shot)).shape[:2] == (900, 1280)
    finally:
        run.send_signal(signal.SIGTERM)
        run.wait(timeout=60)
    assert run.returncode == 0, run.stderr.read()
