"""What the commands print: one JSON line per record, or one readable line; the same for every command."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from edge_anomaly.bundle import Bundle
from edge_anomaly.result import InspectionResult


def print_json(record: dict) -> None:
    """One JSON line; a NaN or infinity never reaches it (it would not be JSON)."""
    print(json.dumps(record, allow_nan=False), flush=True)


def close_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's last flush cannot raise a second BrokenPipeError."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def decision_line(name: str, result: InspectionResult, verdict: str | None = None) -> str:
    """``name: ANOMALY score 0.912 / 0.640  top left  The ... reject it.`` (``inspect`` and ``demo``)."""
    decision = "ANOMALY" if result.is_anomalous else "ok"
    said = f"  {verdict}" if verdict is not None else ""
    return f"{name}: {decision:7s} score {result.score:.3f} / {result.threshold:.3f}  {result.location}{said}"


def overlay_names(paths: list[Path]) -> list[str]:
    """A distinct overlay name per image: the file name, with its parent folders in front where two images
    share a name (MVTec-layout folders all hold a ``000.png``)."""
    names = [p.stem for p in paths]
    for depth in range(1, 8):
        clashing = {n for n in names if names.count(n) > 1}
        if not clashing:
            return names
        names = [
            "_".join([*p.resolve().parent.parts[-depth:], p.stem]) if n in clashing else n for p, n in zip(paths, names)
        ]
    seen: dict[str, int] = {}
    unique = []
    for n in names:  # the same file given twice
        seen[n] = seen.get(n, 0) + 1
        unique.append(n if seen[n] == 1 else f"{n}_{seen[n]}")
    return unique


def print_fitted(bundle: Bundle) -> None:
    bank, t = bundle.manifest.memory_bank, bundle.manifest.threshold
    own = "" if t.map_value is None else f", the map's regions at {t.map_value:.4f}"
    print(
        f"bundle {bundle.root}: {bank.shots} shots, memory bank {bank.size} patches, {bank.layout} layout, "
        f"threshold {t.value:.4f}{own} ({t.method})"
    )
    encoder = bundle.manifest.encoder
    if encoder.quantization:
        print(f"encoder {encoder.precision}: {encoder.quantization}")


def print_engines(bundle: Bundle) -> None:
    for e in bundle.manifest.engines:
        print(
            f"engine {e.file}: {e.flavour} TensorRT {e.tensorrt_version} {e.precision}, "
            f"{e.bytes / 2**20:.1f} MiB, built in {e.build_seconds:.2f} s, "
            f"runs on compute capability {', '.join(e.compute_capabilities)}"
        )


def print_bench(report: dict) -> None:
    run, box = report["runs"][0], report["machine"]
    gpu = f", GPU {box['gpu']['name']}" if box["gpu"] else ", no GPU"
    print(
        f"{box['cpu_model'] or box['processor']}, {box['cpus']} cores{gpu}; {run['backend']}, {run['threads']} threads"
    )
    print(
        f"bundle: {run['image_size']} px, {run['shots']} shots, memory bank {run['memory_bank_size']} patches, "
        f"{run['encoder_precision']} encoder"
    )
    print(f"{'stage':12s} {'p50 ms':>8s} {'p95 ms':>8s} {'p99 ms':>8s}")
    for stage, values in run["latency_ms"].items():
        print(f"{stage:12s} {values['p50']:8.2f} {values['p95']:8.2f} {values['p99']:8.2f}")
    mode = "pipelined" if run["streaming_pipelined"] else "serial"
    print(f"batch-1 {run['frames_per_second']:.1f} frames/s; streaming {run['streaming_frames_per_second']:.1f} "
          f"frames/s ({mode}, the stream's default here; {run['streaming_pipelined_frames_per_second']:.1f} "
          f"pipelined, {run['streaming_serial_frames_per_second']:.1f} serial); "
          f"peak RSS {run['runtime_peak_rss_mb']:.0f} MB "
          f"({run['frames_held_mb']:.0f} MB of it the frames the bench holds)")  # fmt: skip
    if run["backend"] == "triton":
        print("triton: 'encoder' is the whole round trip to the server (both graphs there); 'decoder' unpacks it")
    if "baseline" in run:
        baseline_ms = run["baseline"]["latency_ms"]["p50"]
        print(f"PatchCore-WRN50 p50 {baseline_ms:.1f} ms: this bundle is {run['speedup_vs_baseline']}x faster")


def metric_row(name: str, r: dict) -> str:
    columns = (("image_auroc", 9), ("pixel_auroc", 9), ("pro", 6), ("accuracy", 6), ("f1", 6))
    values = " ".join(f"{r[k]:{w}.3f}" for k, w in columns)
    return f"{name:16s} {values}"
