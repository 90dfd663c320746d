"""A long stream with injected faults: what happened to each, and whether memory stayed flat.

    python -m edge_anomaly.benchmarks.soak --frames 20000 --json benchmarks/results/soak-cpu.json

Faults injected, on a schedule so the counts are exact: frames too small to
use, two-channel frames, int32 frames (all must be skipped and counted);
grey, 16-bit and all-black frames (all must be inspected); a camera that
drops every ``--drop-every`` frames (must reconnect); a verdict model that
crashes on every third call and hangs once (must yield template verdicts
while detection goes on). RSS is read from /proc at frame 1,000 and at the end.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np

from edge_anomaly.benchmarks.report import command_line, write_report
from edge_anomaly.runtime.gate import EventGate
from edge_anomaly.runtime.sources import Frame, ReconnectingSource, SourceError

BAD = {"tiny": 97, "two_channel": 89, "int32": 83}  # kind -> every Nth frame
ODD_BUT_FINE = {"grey": 53, "uint16": 71, "black": 199}


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class ScheduledCamera:
    """Synthetic line camera: defects every 150 frames for 5 frames, odd frames on a schedule,
    and a cable that drops after ``drop_every`` frames per connection."""

    live = True
    name = "scheduled-camera"

    def __init__(self, state: dict, normals: list[np.ndarray], defects: list[np.ndarray], drop_every: int) -> None:
        self.state, self.normals, self.defects, self.drop_every = state, normals, defects, drop_every
        self.delivered_here = 0
        self.rng = np.random.default_rng(len(state["injected"]) + state["next"])

    def read(self) -> Frame | None:
        i = self.state["next"]
        if i >= self.state["total"]:
            return None
        if self.delivered_here >= self.drop_every:
            raise SourceError("cable dropped")
        self.state["next"] += 1
        self.delivered_here += 1
        if i == 1000:
            self.state["rss_start"] = rss_mb()
        return Frame(i, time.time(), self._image(i), self.name)

    def _image(self, i: int) -> np.ndarray:
        for kind, every in BAD.items():
            if i % every == every - 1:
                self.state["injected"][kind] += 1
                return {
                    "tiny": np.zeros((8, 8, 3), np.uint8),
                    "two_channel": np.zeros((64, 64, 2), np.uint8),
                    "int32": np.zeros((64, 64, 3), np.int32),
                }[kind]
        base = self.defects[i % len(self.defects)] if i % 150 < 5 else self.normals[i % len(self.normals)]
        noise = self.rng.normal(0, 0.5, base.shape)  # sensor noise: no two frames are the same
        base = np.clip(base + noise, 0, 255).astype(np.uint8)
        for kind, every in ODD_BUT_FINE.items():
            if i % every == every - 1:
                self.state["injected"][kind] += 1
                if kind == "grey":
                    return base[:, :, 0].copy()
                if kind == "uint16":
                    return base.astype(np.uint16) * 257
                return np.zeros_like(base)
        return base

    def close(self) -> None:
        pass


class FaultyModel:
    """Crashes on every third call, hangs (until released) on the fifth."""

    name = "faulty-model"

    def __init__(self) -> None:
        self.calls = 0
        self.release = threading.Event()

    def verdict(self, result) -> str:
        self.calls += 1
        if self.calls == 5:
            self.release.wait(60)
        if self.calls % 3 == 0:
            raise RuntimeError("model crashed")
        return f"The part is anomalous at the {result.location}."


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=20000)
    parser.add_argument("--drop-every", type=int, default=2500)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args(argv)

    from edge_anomaly import Inspector
    from edge_anomaly.synthetic import add_defect, generate_category

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="edge-anomaly-soak-") as work:
        normal_dir = generate_category(Path(work), "fabric", 96, n_train=4, n_good=0, n_defect=0) / "train" / "good"
        # A fixed camera on a line sees the same parts again: the shots, with sensor noise and defects.
        normals = [cv2.imread(str(p)) for p in sorted(normal_dir.iterdir())]
        defects = [add_defect(n[:, :, ::-1].copy(), "cut", rng)[0][:, :, ::-1] for n in normals]
        bundle = Path(work) / "bundle"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "edge_anomaly.cli",
                "export",
                "--normal",
                str(normal_dir),
                "--image-size",
                str(args.image_size),
                "--out",
                str(bundle),
            ],
            check=True,
            capture_output=True,
        )
        state = {"next": 0, "total": args.frames, "injected": dict.fromkeys([*BAD, *ODD_BUT_FINE], 0)}
        source = ReconnectingSource(
            lambda: ScheduledCamera(state, normals, defects, args.drop_every), initial_backoff=0.01, max_backoff=0.05
        )
        model = FaultyModel()
        inspector = Inspector.load(bundle, backend="onnxruntime-cpu")
        start = time.perf_counter()
        runner = inspector.stream(
            source,
            events=Path(work) / "events.jsonl",
            provider=model,
            verdict_timeout=1.0,
            gate=EventGate(open_n=2, open_m=3, close_n=3, close_m=3),
        )
        stats = runner.run()
        model.release.set()
        elapsed = time.perf_counter() - start
        from edge_anomaly.runtime.event_log import read_events

        logged = read_events(Path(work) / "events.jsonl")
    report = {
        "command": command_line("edge_anomaly.benchmarks.soak", argv),
        "frames": args.frames,
        "seconds": round(elapsed, 1),
        "injected": state["injected"],
        "expected_bad_frames": sum(state["injected"][k] for k in BAD),
        "stats": stats.to_dict(),
        "reconnects": source.reconnects,
        "source_failures": source.failures,
        "verdict_counts": runner.worker.counts,
        "logged_records": {k: sum(r["type"] == k for r in logged) for k in ("event_opened", "event_closed", "verdict")},
        "rss_mb_at_frame_1000": round(state["rss_start"], 1),
        "rss_mb_at_end": round(rss_mb(), 1),
    }
    write_report(args.json, report, echo=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
