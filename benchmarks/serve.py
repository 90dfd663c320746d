"""Many camera controllers against one ``edge-anomaly serve``: frames/s and latency, batching on and off.

    python -m edge_anomaly.benchmarks.serve --json benchmarks/results/serve-cpu.json

A 1-shot 256 px fabric bundle is served by a real Triton Inference Server on
127.0.0.1 (the numpy-1 serve environment, ``make serve-env``), once with
Triton's dynamic batcher (``--max-batch``, ``--queue-delay-us``) and once
with ``--no-batching``. For each client count, that many threads, each its own
controller (``Inspector`` on the ``triton`` backend over HTTP), send frames as
fast as they are answered. Reported per run: total frames/s, per-frame latency
p50/p95/p99 as a controller sees it (``inspect``, preprocessing and findings
included), and Triton's own count of requests against executions (how many
requests each batch held). The same frames inspected locally, one process on
the same backend, give the baseline.
"""

from __future__ import annotations

import argparse
import re
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from edge_anomaly.benchmarks.report import command_line, percentiles, write_report


def run_clients(bundle: Path, url: str, frames: list[np.ndarray], clients: int, per_client: int) -> dict:
    """``clients`` threads, each its own controller, ``per_client`` frames each; all start together."""
    from edge_anomaly import Inspector

    inspectors = [Inspector.load(bundle, backend=url, llm="none") for _ in range(clients)]
    latencies: list[list[float]] = [[] for _ in range(clients)]
    start = threading.Barrier(clients + 1)

    def camera(k: int) -> None:
        start.wait()
        for i in range(per_client):
            t0 = time.perf_counter()
            inspectors[k].inspect(frames[(k + i) % len(frames)])
            latencies[k].append((time.perf_counter() - t0) * 1000.0)

    threads = [threading.Thread(target=camera, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    for inspector in inspectors:
        inspector.close()
    every = [x for lat in latencies for x in lat]
    return {"clients": clients, "frames": len(every), "fps": len(every) / elapsed, "latency_ms": percentiles(every)}


def triton_counts(metrics: str, model: str) -> dict[str, float]:
    """Requests and executions of ``model`` from Triton's Prometheus text: their ratio is the mean batch."""
    counts = {}
    for name in ("nv_inference_request_success", "nv_inference_exec_count", "nv_inference_count"):
        m = re.search(rf'^{name}{{model="{re.escape(model)}",version="1"}} (\S+)$', metrics, re.M)
        counts[name] = float(m.group(1)) if m else float("nan")
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--frames", type=int, default=60, help="frames per client and run")
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--queue-delay-us", type=int, default=2000)
    parser.add_argument("--backend", default="onnxruntime-cpu", help="the server's backend (and the local one)")
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/serve-cpu.json"))
    args = parser.parse_args(argv)

    from edge_anomaly import Inspector
    from edge_anomaly.export.build_bundle import build_bundle
    from edge_anomaly.runtime.bench import machine, time_inspect
    from edge_anomaly.runtime.serve_process import ServeProcess
    from edge_anomaly.synthetic import defect_line, generate_category

    frames = defect_line(32, lambda i: i % 10 == 3, seed=5, size=256)
    runs = []
    with tempfile.TemporaryDirectory(prefix="edge-anomaly-serve-") as work:
        data = generate_category(Path(work) / "data", "fabric", 256, n_train=1, n_good=0, n_defect=0)
        normal = data / "train" / "good"
        bundle = build_bundle(normal, Path(work) / "fabric", object_name="fabric panel")
        with Inspector.load(bundle.root, backend=args.backend, llm="none") as local:
            timed = [frames[i % len(frames)] for i in range(5 + args.frames)]
            local_run = time_inspect({"local": local}, timed, warmup=5, rounds=1)["local"]
            baseline = {"fps": local_run["frames_per_second"], "latency_ms": local_run["latency_ms"]["total"]}
        batching_on = ["--max-batch", str(args.max_batch), "--queue-delay-us", str(args.queue_delay_us)]
        for batching, options in (("dynamic", batching_on), ("off", ["--no-batching"])):
            log = Path(work) / f"serve-{batching}.log"
            server = ServeProcess([bundle.root], log, ["--backend", args.backend, *options])
            server.start()
            try:
                url = server.url("fabric")
                run_clients(bundle.root, url, frames, 1, 5)  # warm-up
                for clients in args.clients:
                    before = triton_counts(server.metrics(), "fabric")
                    row = run_clients(bundle.root, url, frames, clients, args.frames)
                    after = triton_counts(server.metrics(), "fabric")
                    requests = after["nv_inference_request_success"] - before["nv_inference_request_success"]
                    executions = after["nv_inference_exec_count"] - before["nv_inference_exec_count"]
                    row |= {"batching": batching, "requests": requests, "executions": executions,
                            "mean_batch": requests / executions if executions else float("nan")}  # fmt: skip
                    runs.append(row)
                    print(f"{batching:8s} {clients} clients: {row['fps']:.1f} frames/s, p50 "
                          f"{row['latency_ms']['p50']:.1f} ms, p99 {row['latency_ms']['p99']:.1f} ms, "
                          f"mean batch {row['mean_batch']:.2f}", flush=True)  # fmt: skip
            finally:
                server.stop()
    report = {
        "command": command_line("edge_anomaly.benchmarks.serve", argv),
        "machine": machine(),
        "setup": {"image_size": 256, "shots": 1, "server_backend": args.backend, "protocol": "http",
                  "max_batch": args.max_batch, "queue_delay_us": args.queue_delay_us,
                  "note": "server and clients share this machine's cores"},  # fmt: skip
        "local_one_process": baseline,
        "runs": runs,
    }
    write_report(args.json, report, echo=False)
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
