"""TensorRT engine build time and size per precision, on this host.

    python -m edge_anomaly.benchmarks.engines --flavour rtx --json benchmarks/results/engines-rtx-cpu.json

Builds a 4-shot bundle from the bundled samples, then fp32, fp16 and int8
engines of encoder and decoder into it, and records what the manifest says of
each (bytes, build seconds, TensorRT version, profiles).
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
from pathlib import Path

from edge_anomaly.benchmarks.report import command_line, write_report
from edge_anomaly.manifest import as_json


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flavour", choices=["rtx", "full"], default="rtx")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--precisions", nargs="+", default=["fp32", "fp16", "int8"])
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args(argv)

    from edge_anomaly.export.build_bundle import build_bundle
    from edge_anomaly.fit_options import FitOptions
    from edge_anomaly.images import list_images
    from edge_anomaly.runtime.tensorrt_engines import EngineOptions, build_engines
    from edge_anomaly.samples import SAMPLES_DIR

    with tempfile.TemporaryDirectory(prefix="edge-anomaly-engines-") as work:
        root = Path(work) / "bundle"
        build_bundle(list_images(SAMPLES_DIR / "train"), root, options=FitOptions(image_size=args.image_size))
        for precision in args.precisions:
            bundle = build_engines(root, args.flavour, EngineOptions(precision=precision))
        engines = [as_json(e) for e in bundle.manifest.engines]
    keep = ("file", "graph", "precision", "tensorrt_version", "bytes", "build_seconds", "compute_capabilities")
    report = {
        "command": command_line("edge_anomaly.benchmarks.engines", argv),
        "host": {"platform": platform.platform(), "processor": platform.processor() or platform.machine()},
        "flavour": args.flavour,
        "image_size": args.image_size,
        "engines": [{k: e[k] for k in keep} for e in engines],
    }
    write_report(args.json, report, echo=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
