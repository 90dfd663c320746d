"""How fast a bundle runs on the box it is on: per-stage latency, frames/s, memory, and why this backend.

>>> report = bench(Inspector.load("bundle/"), frames)    # the dict ``edge-anomaly bench --json`` writes

One measuring code for ``edge-anomaly bench`` (a user's own box, runtime only)
and ``benchmarks/latency.py`` (this project's figures): frames are inspected one
at a time after a warm-up (batch 1), per stage (preprocess, encoder, decoder,
findings) and in total, then once more through the stream runner (capture
thread, queue, gate), whose frames/s is what a line camera gets. Timings are
interleaved over ``rounds`` when several inspectors are compared, so a shared
machine's drift hits them alike.
"""

from __future__ import annotations

import os
import platform
import resource
import time
from collections.abc import Sequence

import numpy as np
from tqdm import tqdm

from edge_anomaly.manifest import as_json

from .backends import probe
from .stream import pipelines_by_default

STAGES = ("preprocess", "encoder", "decoder", "findings", "total")
DEFECT_SHARE = 10  # one frame in ten of the default frames carries a synthetic defect


def percentiles(values) -> dict[str, float]:
    """p50, p95, p99 and mean of a series of timings, rounded for reading."""
    a = np.asarray(values, dtype=float)
    return {f"p{q}": round(float(np.percentile(a, q)), 3) for q in (50, 95, 99)} | {"mean": round(float(a.mean()), 3)}


def machine() -> dict:
    """The box: platform, CPU model and cores this process may use, and the GPU if one is visible."""
    from .gpu_info import detect_gpu

    gpu = detect_gpu()
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_model": _cpu_model(),
        "cpus": len(os.sched_getaffinity(0)),
        "gpu": {"name": gpu.name, "compute_capability": gpu.cc} if gpu else None,
    }


def time_inspect(
    inspectors: dict, frames: Sequence[np.ndarray], warmup: int, rounds: int, progress: bool = False
) -> dict:
    """Time every inspector on the same frames, batch 1, interleaved in ``rounds``; per inspector: backend,
    bank size, frames/s, per-stage latency percentiles and CPU time per frame."""
    per_stage = {key: {s: [] for s in STAGES} for key in inspectors}
    cpu_ms = {key: [] for key in inspectors}
    for inspector in inspectors.values():
        for frame in frames[:warmup]:
            inspector.inspect(frame)
    timed = frames[warmup:]
    chunk = max(1, len(timed) // rounds)
    bar = tqdm(total=chunk * rounds * len(inspectors), desc="batch-1 frames", disable=not progress, leave=False)
    for r in range(rounds):
        for key, inspector in inspectors.items():
            for frame in timed[r * chunk : (r + 1) * chunk]:
                t0, c0 = time.perf_counter(), time.process_time()
                result = inspector.inspect(frame)
                per_stage[key]["total"].append((time.perf_counter() - t0) * 1000)
                cpu_ms[key].append((time.process_time() - c0) * 1000)
                for stage in STAGES[:-1]:
                    per_stage[key][stage].append(result.latency_ms[stage])
                bar.update()
    bar.close()
    return {
        key: {
            "backend": inspectors[key].backend_name,
            "backend_reason": inspectors[key].backend_reason,
            "backends_probed": probe(inspectors[key].bundle),  # each backend here: None, or why it cannot run
            "threads": getattr(inspectors[key].backend, "threads", None),
            "memory_bank_size": int(len(inspectors[key].memory_bank)),
            "frames_per_second": round(1000.0 / float(np.mean(per_stage[key]["total"])), 2),
            "latency_ms": {s: percentiles(v) for s, v in per_stage[key].items()},
            "cpu_ms_per_frame": percentiles(cpu_ms[key]),
        }
        for key in inspectors
    }


def streaming_fps(inspector, frames: Sequence[np.ndarray], pipelined: bool | None = None) -> float:
    """Frames/s through the stream runner (capture thread, bounded queue, gate), as a file source feeds it;
    ``pipelined``: frame t+1 encoded while frame t is decoded (None: the stream's default for the backend)."""
    from .sources import IterableSource

    runner = inspector.stream(IterableSource(list(frames)), provider=None, pipelined=pipelined)
    return round(runner.run().fps, 2)


def peak_rss_mb() -> float:
    """This process's peak resident memory so far (Linux reports KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def frames_held_mb(frames: Sequence[np.ndarray]) -> float:
    """Memory of the distinct frames the bench holds for its run: part of ``runtime_peak_rss_mb`` that a
    camera stream, holding a few frames at a time, does not have (a long video source holds every frame)."""
    distinct = {id(frame): frame.nbytes for frame in frames}
    return round(sum(distinct.values()) / 2**20, 1)


def default_frames(inspector, count: int, seed: int = 0) -> list[np.ndarray]:
    """The bundle's own normal shots (BGR, as a camera gives them), one in ten with a synthetic defect: no
    camera and no data set needed to measure speed."""
    import cv2

    from edge_anomaly import bundle_format as fmt
    from edge_anomaly.images import read_image
    from edge_anomaly.synthetic import DRAWN_DEFECTS, add_defect

    rng = np.random.default_rng(seed)
    shots = [read_image(p) for p in inspector.bundle.files_of(fmt.ROLE_SHOT)]
    distinct = [
        add_defect(shots[i % len(shots)], DRAWN_DEFECTS[i % len(DRAWN_DEFECTS)], rng)[0]
        if i % DEFECT_SHARE == 0
        else shots[i % len(shots)]
        for i in range(2 * DEFECT_SHARE)
    ]
    # The distinct frames are converted once and cycled: 300 copies added 56 MB of the bench's own
    # frames to the runtime's peak RSS (a stream holds a few frames at a time, not the whole run).
    distinct = [cv2.cvtColor(frame, cv2.COLOR_RGB2BGR) for frame in distinct]
    return [distinct[i % len(distinct)] for i in range(count)]


def frames_from(source, count: int) -> list[np.ndarray]:
    """``count`` frames from a camera, video or folder (``sources.open_source``); a short source is cycled."""
    from edge_anomaly.errors import InputError

    from .sources import open_source

    opened = open_source(source, max_attempts=3)
    frames = []
    try:
        while len(frames) < count:
            frame = opened.read()
            if frame is None:
                break
            if frame.image is not None:
                frames.append(frame.image)
    finally:
        opened.close()
    if not frames:
        raise InputError(f"source {source} gave no readable frame")
    return [frames[i % len(frames)] for i in range(count)]


def bench(inspector, frames: Sequence[np.ndarray], warmup: int = 20, progress: bool = False) -> dict:
    """One bundle on this box: the run entry of a ``benchmarks/latency.py`` report, plus streaming frames/s."""
    run = time_inspect({"bundle": inspector}, frames, warmup, rounds=1, progress=progress)["bundle"]
    manifest = inspector.bundle.manifest
    pipelined = pipelines_by_default(inspector)
    streaming = {mode: streaming_fps(inspector, frames[warmup:], pipelined=mode) for mode in (True, False)}
    return {
        "image_size": inspector.bundle.input_size,
        "shots": manifest.memory_bank.shots,
        "encoder_precision": manifest.encoder.precision,
        "text_free_head": as_json(manifest.decoder.text_free_head),
        **run,
        "streaming_pipelined": pipelined,
        "streaming_frames_per_second": streaming[pipelined],
        "streaming_pipelined_frames_per_second": streaming[True],
        "streaming_serial_frames_per_second": streaming[False],
        "runtime_peak_rss_mb": peak_rss_mb(),
        "frames_held_mb": frames_held_mb(frames),
    }


def plot_stages(report: dict, out) -> None:
    """A PNG: each run's p50 per stage, stacked, with the p99 of the whole frame marked."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        from edge_anomaly.errors import InputError

        raise InputError("--plot needs matplotlib: pip install matplotlib") from None
    runs = report["runs"]
    labels = [f"{r['image_size']} px, {r['shots']} shot{'s' if r['shots'] != 1 else ''}\n{r['backend']}" for r in runs]
    fig, ax = plt.subplots(figsize=(max(4, 2.2 * len(runs)), 4.5))
    bottom = np.zeros(len(runs))
    for stage in STAGES[:-1]:
        values = np.array([r["latency_ms"][stage]["p50"] for r in runs])
        ax.bar(labels, values, bottom=bottom, label=stage)
        bottom += values
    ax.scatter(labels, [r["latency_ms"]["total"]["p99"] for r in runs], marker="_", s=400, c="k", label="total p99")
    ax.set_ylabel("ms per frame (p50 per stage)")
    box = report["machine"]
    ax.set_title(f"{box['cpu_model'] or box['processor']}, {box['cpus']} cores")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith(("model name", "Model", "Hardware")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None
