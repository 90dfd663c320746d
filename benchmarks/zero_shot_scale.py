"""Zero-shot at test-set scale: how long ``eval --shots 0`` takes on a large batch, bounded and in full.

    python -m edge_anomaly.benchmarks.zero_shot_scale --images 500 \\
        --json benchmarks/results/zero-shot-scale-cpu.json

A synthetic fabric category with ``--images`` test images (10% defective) is
scored zero-shot with each image against ``--references`` others drawn at
random (``zero_shot.MAX_REFERENCES`` by default). ``--full-up-to N`` also
times the unbounded, quadratic version on the first N images, so the growth of
both is on record; the full version at 500 images takes hours on 2 cores,
which is why the bound exists. Reported: wall seconds, seconds per image, and
image and pixel AUROC of each run.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from edge_anomaly.benchmarks.report import command_line, write_report


def main(argv: list[str] | None = None) -> int:
    from edge_anomaly.zero_shot import MAX_REFERENCES

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--references", type=int, default=MAX_REFERENCES)
    parser.add_argument("--full-up-to", type=int, default=80, help="also time the unbounded version on this many")
    parser.add_argument("--image-size", type=int, default=256, help="the bundle's input (images are twice that)")
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/zero-shot-scale-cpu.json"))
    args = parser.parse_args(argv)

    from edge_anomaly.evaluation import evaluate_category
    from edge_anomaly.fit_options import FitOptions
    from edge_anomaly.runtime.bench import machine
    from edge_anomaly.synthetic import generate_category

    runs = []
    with tempfile.TemporaryDirectory(prefix="edge-anomaly-zero-scale-") as work:
        sizes = sorted({args.images, *([args.full_up_to] if args.full_up_to else [])})
        for count in sizes:
            defects = max(1, count // 10)
            size = args.image_size
            category = generate_category(Path(work) / str(count), "fabric", 2 * size, 4, count - defects, defects, 3)
            modes = [("bounded", args.references)] + ([("full", None)] if count <= args.full_up_to else [])
            for mode, references in modes:
                start = time.perf_counter()
                report = evaluate_category(
                    category, 0, FitOptions(image_size=size), progress=False, zero_shot_references=references
                )
                seconds = time.perf_counter() - start
                runs.append({"images": count, "mode": mode, "references": references, "seconds": round(seconds, 1),
                             "seconds_per_image": round(seconds / count, 3), "image_auroc": report["image_auroc"],
                             "pixel_auroc": report["pixel_auroc"], "accuracy": report["accuracy"]})  # fmt: skip
                print(runs[-1], flush=True)
    report = {"command": command_line("edge_anomaly.benchmarks.zero_shot_scale", argv), "machine": machine(),
              "runs": runs}  # fmt: skip
    write_report(args.json, report)
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
