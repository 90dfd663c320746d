"""Commands of the edge box on single frames: ``inspect``, ``chat`` and ``bench`` (runtime only, no torch)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from edge_anomaly.errors import EdgeAnomalyError

from .output import decision_line, overlay_names, print_bench, print_json
from .parsing import add_backend_argument, add_trusted_key_argument, at_least, non_negative


def add_commands(sub) -> None:
    p = sub.add_parser("inspect", help="inspect images with a bundle (exit 1 when some could not be inspected)")
    p.add_argument("bundle", type=Path)
    p.add_argument("images", type=Path, nargs="+")
    p.add_argument("--json", action="store_true", help="one JSON object per image on stdout")
    p.add_argument(
        "--save-overlays", "--save-overlay", dest="save_overlays", type=Path, metavar="DIR",
        help="write heatmap overlays here",
    )  # fmt: skip
    add_backend_argument(p)
    p.add_argument("--threshold", type=non_negative, default=None, help="override the calibrated threshold")
    p.add_argument("--verdict", action="store_true", help="add a one-sentence verdict (the bundle's model, checked)")
    add_trusted_key_argument(p)
    p.set_defaults(run=inspect)

    p = sub.add_parser("chat", help="inspect one image, then answer follow-up questions about it")
    p.add_argument("bundle", type=Path)
    p.add_argument("image", type=Path)
    p.add_argument("--llm", default="auto", help="'auto' (the bundle's model), 'none', or a .gguf path")
    p.set_defaults(run=chat)

    p = sub.add_parser("bench", help="how fast a bundle runs on this box: per-stage latency, frames/s, memory")
    p.add_argument("bundle", type=Path)
    p.add_argument("--source", help="frames from a camera, video or folder (default: the bundle's shots, 1 in 10 "
                   "with a synthetic defect)")  # fmt: skip
    p.add_argument("--frames", type=at_least(10), default=200, help="frames timed, after the warm-up")
    p.add_argument("--warmup", type=at_least(0), default=20)
    add_backend_argument(p)
    p.add_argument("--threads", type=at_least(0), default=0, help="inference threads (0: the cores this process has)")
    p.add_argument("--json", type=Path, metavar="OUT", help="write the report (the schema of benchmarks/latency.py)")
    p.add_argument("--plot", type=Path, metavar="PNG", help="write a latency breakdown chart")
    p.add_argument(
        "--baseline",
        choices=["patchcore"],
        help="also time PatchCore-WRN50 (torch eager fp32) on the same frames and print the ratio (export extra)",
    )
    p.add_argument("--baseline-frames", type=at_least(3), default=20)
    add_trusted_key_argument(p)
    p.set_defaults(run=bench)


def inspect(args: argparse.Namespace) -> int:
    from edge_anomaly.images import read_image
    from edge_anomaly.inspector import Inspector
    from edge_anomaly.overlay import save_overlay

    failures = 0
    with Inspector.load(args.bundle, args.backend, args.threshold, trusted_keys=args.trusted_key) as inspector:
        if not args.json:
            print(f"backend: {inspector.backend_name} ({inspector.backend_reason})")
        for path, overlay_name in zip(args.images, overlay_names(args.images)):
            try:
                rgb = read_image(path)
                result = inspector.inspect(rgb, color_order="rgb")
            except EdgeAnomalyError as exc:
                failures += 1
                if args.json:
                    print_json({"image": str(path), "error": str(exc)})
                else:
                    print(f"{path}: error: {exc}")
                continue
            record = {**result.to_dict(), "image": str(path)}
            if args.verdict:
                told = inspector.narrated_verdict(result)
                record |= {"verdict": told.text, "verdict_source": told.source, "fallback_reason": told.fallback_reason}
            if args.save_overlays:
                record["overlay"] = str(save_overlay(rgb, result, args.save_overlays, overlay_name, color_order="rgb"))
            if args.json:
                print_json(record)
            else:
                print(decision_line(str(path), result, record.get("verdict")))
    return 1 if failures else 0


def chat(args: argparse.Namespace) -> int:
    from edge_anomaly.inspector import Inspector

    with Inspector.load(args.bundle, llm=args.llm) as inspector:
        conversation = inspector.chat(inspector.inspect(args.image))
        print(conversation.verdict().text)
        interactive = sys.stdin.isatty()
        while True:
            try:
                question = input("> " if interactive else "")
            except EOFError:
                return 0
            if question.strip().lower() in ("quit", "exit"):
                return 0
            if question.strip():
                print(conversation.ask(question), flush=True)


def bench(args: argparse.Namespace) -> int:
    from edge_anomaly.inspector import Inspector
    from edge_anomaly.runtime.bench import bench as run_bench
    from edge_anomaly.runtime.bench import default_frames, frames_from, machine, plot_stages

    with Inspector.load(
        args.bundle, args.backend, threads=args.threads, llm="none", trusted_keys=args.trusted_key
    ) as inspector:
        count = args.frames + args.warmup
        frames = frames_from(args.source, count) if args.source else default_frames(inspector, count)
        print(f"backend: {inspector.backend_name} ({inspector.backend_reason}); {len(frames)} frames", file=sys.stderr)
        run = run_bench(inspector, frames, args.warmup, progress=sys.stderr.isatty())
    if args.baseline:
        from edge_anomaly.benchmarks.latency import time_baseline

        run["baseline"] = time_baseline(run["image_size"], run["shots"], frames[: args.baseline_frames + 2])
        run["speedup_vs_baseline"] = round(run["baseline"]["latency_ms"]["p50"] / run["latency_ms"]["total"]["p50"], 2)
    report = {
        "machine": machine(),
        "command": "edge-anomaly " + " ".join(sys.argv[1:]),
        "frame_size": list(frames[0].shape[:2]),
        "frames": len(frames) - args.warmup,
        "warmup": args.warmup,
        "rounds": 1,
        "source": args.source or "the bundle's shots, 1 in 10 with a synthetic defect",
        "runs": [run],
    }
    print_bench(report)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")
    if args.plot:
        plot_stages(report, args.plot)
    return 0
