"""Per-stage latency of ``Inspector.inspect`` on this machine, written as JSON.

    python -m edge_anomaly.benchmarks.latency --json benchmarks/results/latency-cpu.json

Builds a bundle from synthetic normal images (or ``--normal DIR``) for each
shot count, inspects ``--frames`` frames one at a time after ``--warmup``
frames, and reports p50/p95/p99 per stage, frames/s, and the peak RSS of a
fresh process that loads that one bundle and inspects frames (what an edge box
pays; the process is checked to hold no torch).
PatchCore with WideResNet-50 runs on the same frames afterwards, torch eager
fp32 as its authors run it, and every configuration gets ``speedup_vs_baseline``
(ratios travel between shared machines better than milliseconds).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from edge_anomaly.benchmarks.report import command_line, percentiles, write_report
from edge_anomaly.manifest import as_json
from edge_anomaly.runtime.bench import machine, time_inspect

DISTINCT_FRAMES = 20  # 10% of them carry a defect


def build(normal: Path, out: Path, shots: int, size: int, head_weight: float | None) -> None:
    """Export in a child process (torch loads there, not here); ``head_weight`` None: the default."""
    cmd = [
        sys.executable,
        "-m",
        "edge_anomaly.cli",
        "export",
        "--normal",
        str(normal),
        "--shots",
        str(shots),
        "--image-size",
        str(size),
        "--out",
        str(out),
        *(["--head-weight", str(head_weight)] if head_weight is not None else []),
    ]
    subprocess.run(cmd, check=True, capture_output=True, text=True)


RSS_SCRIPT = """
import resource, sys, numpy as np
from edge_anomaly import Inspector
insp = Inspector.load(sys.argv[1], backend=sys.argv[2], llm="none")
frame = np.random.default_rng(0).integers(0, 255, (int(sys.argv[3]), int(sys.argv[3]), 3), dtype=np.uint8)
for _ in range(30):
    insp.inspect(frame)
heavy = [m for m in ("torch", "transformers") if m in sys.modules]
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, ",".join(heavy))
"""


def runtime_rss_mb(bundle: Path, backend: str, frame_size: int) -> float:
    """Peak RSS of a fresh process that loads one bundle and inspects frames: what an edge box pays."""
    out = subprocess.run(
        [sys.executable, "-c", RSS_SCRIPT, str(bundle), backend, str(frame_size)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    if len(out) > 1:
        raise RuntimeError(f"the runtime imported {out[1]}")
    return round(float(out[0]), 1)


def time_baseline(image_size: int, shots: int, frames: list[np.ndarray], warmup: int = 2) -> dict:
    """PatchCore-WRN50, torch eager fp32, same frames and preprocessing, batch 1."""
    import torch

    from edge_anomaly.benchmarks.patchcore_baseline import PatchCoreBaseline, bank_for
    from edge_anomaly.images import preprocess, to_rgb_uint8

    torch.set_num_threads(len(os.sched_getaffinity(0)))
    model, bank = PatchCoreBaseline(image_size).eval(), bank_for(image_size, shots)
    times = []
    with torch.no_grad():
        for i, frame in enumerate(frames):
            t0 = time.perf_counter()
            x = torch.from_numpy(
                preprocess(to_rgb_uint8(frame), image_size, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
            )
            model(x[None], bank)
            if i >= warmup:
                times.append((time.perf_counter() - t0) * 1000)
    return {
        "model": "PatchCore WideResNet-50-2 (random weights), torch eager fp32",
        "memory_bank_size": len(bank),
        "latency_ms": percentiles(times),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--normal", type=Path, help="folder of normal images (default: synthetic fabric)")
    parser.add_argument("--image-size", type=int, nargs="+", default=[256])
    parser.add_argument("--shots", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--frame-size", type=int, default=480, help="camera frame side before resizing")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--head-weights",
        type=float,
        nargs="+",
        default=[None],
        help="text-free head shares to compare (default: the export's)",
    )
    parser.add_argument("--engine", choices=["full", "rtx"], help="build TensorRT engines into each bundle first")
    parser.add_argument("--precision", choices=["fp32", "fp16", "int8"], default="fp16")
    parser.add_argument("--baseline-frames", type=int, default=20, help="frames for PatchCore-WRN50 (0: skip it)")
    args = parser.parse_args(argv)

    from edge_anomaly.synthetic import add_defect, generate_category, normal_image, texture_source

    rng = np.random.default_rng(0)
    source = texture_source("fabric")
    distinct = [normal_image(source, args.frame_size, rng) for _ in range(DISTINCT_FRAMES)]
    distinct = [add_defect(f, "cut", rng)[0] if i % 10 == 0 else f for i, f in enumerate(distinct)]
    frames = [
        distinct[i % DISTINCT_FRAMES] for i in range(args.frames + args.warmup)
    ]  # cycled: RSS stays the runtime's
    from edge_anomaly import Inspector

    with tempfile.TemporaryDirectory(prefix="edge-anomaly-bench-") as work:
        normal = args.normal or (
            generate_category(Path(work), "fabric", 256, n_train=max(args.shots), n_good=0, n_defect=0)
            / "train"
            / "good"
        )
        inspectors, rss = {}, {}
        for size in args.image_size:
            for shots, head in itertools.product(args.shots, args.head_weights):
                key = (size, shots, head)
                bundle = Path(work) / f"bundle-{size}-{shots}-{head}"
                build(normal, bundle, shots, size, head)
                if args.engine:
                    from edge_anomaly.runtime.tensorrt_engines import EngineOptions, build_engines

                    build_engines(bundle, args.engine, EngineOptions(precision=args.precision))
                inspectors[key] = Inspector.load(bundle, backend=args.backend)
                rss[key] = runtime_rss_mb(bundle, args.backend, args.frame_size)
        timings = time_inspect(inspectors, frames, args.warmup, args.rounds)
    runs = [
        {
            "image_size": size,
            "shots": shots,
            "text_free_head": as_json(inspectors[(size, shots, head)].bundle.manifest.decoder.text_free_head),
            "runtime_peak_rss_mb": rss[(size, shots, head)],
            **timings[(size, shots, head)],
        }
        for size, shots, head in inspectors
    ]
    if args.baseline_frames:
        for run in runs:
            run["baseline"] = time_baseline(run["image_size"], run["shots"], frames[: args.baseline_frames + 2])
            run["speedup_vs_baseline"] = round(
                run["baseline"]["latency_ms"]["p50"] / run["latency_ms"]["total"]["p50"], 2
            )
    for run in runs:
        print(
            json.dumps(
                {"size": run["image_size"], "shots": run["shots"], "head": bool(run["text_free_head"])}
                | {"fps": run["frames_per_second"]}
                | run["latency_ms"]["total"]
            )
        )
    report = {
        "machine": machine(),
        "command": command_line("edge_anomaly.benchmarks.latency", argv),
        "frame_size": args.frame_size,
        "frames": args.frames,
        "warmup": args.warmup,
        "rounds": args.rounds,
        "runs": runs,
    }
    write_report(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
