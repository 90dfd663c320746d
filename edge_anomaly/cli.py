"""``edge-anomaly``: export, inspect, eval and demo from the command line.

Export and eval need the build-host extra (torch); inspect runs on the edge
runtime alone. Errors the user can fix (bad image, bad bundle) print one line
and exit with status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

from .bundle_format import DEFAULT_FEATURE_NORM, FEATURE_NORMS
from .errors import EdgeAnomalyError, InputError
from .placement import DEFAULT_LAYOUT, LAYOUTS
from .settling import MIN_SETTLE_FRAMES
from .shot_views import AUGMENTATIONS, DEFAULT_AUGMENTATION

AUGMENT_HELP = "views of each normal shot put into the bank: 'dihedral' adds quarter turns and mirror images"
LAYOUT_HELP = (
    "where a patch may find its normal match: 'aligned' (fixtured parts, near its own place; 2+ shots, no views), "
    "'free' (anywhere) or 'auto' (aligned when the shots show it)"
)
FEATURE_NORM_HELP = "'stage': each stage's features L2-normalised (the default); 'none': as PatchCore keeps them"
HEAD_HELP = "share of the trained text-free head's map in the decoder (0: memory bank only; default 0.25 with lite0)"

BACKEND_HELP = (
    "auto, tensorrt, onnxruntime, onnxruntime-cpu, onnxruntime-cuda, openvino, or triton://host:8000/MODEL "
    "(the graphs on an edge-anomaly serve server; triton+grpc://host:8001/MODEL for gRPC)"
)

EXIT_USAGE = 2


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    args.argv = argv
    try:
        return args.run(args)
    except BrokenPipeError:
        _close_stdout()
        print(f"edge-anomaly {args.command}: output closed early (broken pipe); stopped", file=sys.stderr)
        return EXIT_USAGE
    except (EdgeAnomalyError, FileExistsError, FileNotFoundError) as exc:
        print(f"edge-anomaly {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:  # a read-only or full disk, a folder where a file was expected, ...
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"edge-anomaly {args.command}: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return EXIT_USAGE


def _close_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's last flush cannot raise a second BrokenPipeError."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


class _Parser(argparse.ArgumentParser):
    """Usage mistakes end in one line and exit 2, as every other mistake does."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _at_least(low: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value

    return parse


def _image_size(text: str) -> int:
    value = _at_least(64)(text)
    if value % 16:
        raise argparse.ArgumentTypeError(f"must be a multiple of 16, got {value}")
    return value


def _port(text: str) -> int:
    value = _at_least(1)(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"must be a port number up to 65535, got {value}")
    return value


def _threshold(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number of at least 0, got {text}")
    return value


def _print_json(record: dict) -> None:
    """One JSON line; a NaN or infinity never reaches it (it would not be JSON)."""
    print(json.dumps(record, allow_nan=False), flush=True)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="edge-anomaly", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("export", help="normal images -> bundle (ONNX graphs, memory bank, calibrated threshold)")
    p.add_argument("--normal", type=Path, required=True, help="folder of normal images")
    p.add_argument("--shots", type=_at_least(1), default=None, help="how many normal images to use (default: all)")
    p.add_argument("--image-size", type=_image_size, default=256, help="encoder input side, a multiple of 16")
    p.add_argument("--object", default="part", help='what is inspected, in words ("bottle"; one line, 64 characters)')
    p.add_argument("--encoder", default="lite0", help="lite0, lite1, lite2 or a .pth checkpoint")
    p.add_argument("--seed", type=int, default=0, help="seed for choosing shots")
    p.add_argument("--augment", choices=AUGMENTATIONS, default=DEFAULT_AUGMENTATION, help=AUGMENT_HELP)
    p.add_argument("--layout", choices=LAYOUTS, default=DEFAULT_LAYOUT, help=LAYOUT_HELP)
    p.add_argument("--head-weight", type=float, default=None, help=HEAD_HELP)
    p.add_argument("--feature-norm", choices=FEATURE_NORMS, default=DEFAULT_FEATURE_NORM, help=FEATURE_NORM_HELP)
    p.add_argument("--out", type=Path, required=True, help="bundle directory to create")
    p.add_argument("--tar", action="store_true", help="also write OUT.tar.gz")
    p.add_argument("--sign", type=Path, metavar="KEY", help="sign the manifest with this Ed25519 private key (PEM)")
    p.add_argument("--engine", choices=["rtx"], help="also build TensorRT-RTX engines here (no GPU needed)")
    p.add_argument(
        "--triton-repo",
        type=Path,
        metavar="DIR",
        help="also write a native Triton model repository (encoder, decoder with the bank, ensemble) into DIR",
    )
    p.add_argument("--precision", choices=["fp32", "fp16", "int8"], default="fp16", help="engine precision")
    p.add_argument(
        "--llm",
        default="none",
        metavar="SPEC",
        help="verdict model: a Hugging Face model folder, a .gguf, 'default' (Gemma 3 270M with the project's "
        "verdict adapter), 'default-base' (without it) or 'none'",
    )
    p.add_argument(
        "--llm-quant", default="q4_k_m", help="quantization for a converted model (q4_k_m, q5_k_m, q8_0, f16)"
    )
    p.set_defaults(run=_export)

    p = sub.add_parser("keygen", help="make an Ed25519 key pair for signing bundles (STEM.key, STEM.pub)")
    p.add_argument("stem", type=Path, help="path and name of the two key files, without suffix")
    p.set_defaults(run=_keygen)

    p = sub.add_parser("build-engine", help="build TensorRT engines into a bundle (on the target for full TensorRT)")
    p.add_argument("bundle", type=Path, help="a bundle directory")
    p.add_argument(
        "--flavour", choices=["full", "rtx"], default="full", help="full TensorRT (Jetson, data center) or RTX"
    )
    p.add_argument("--precision", choices=["fp32", "fp16", "int8"], default="fp16")
    p.add_argument("--calib-dir", type=Path, help="normal images for INT8 calibration (default: the bundle's shots)")
    p.add_argument("--calib-samples", type=int, default=500, help="at most this many calibration images")
    p.add_argument("--calib-cache", type=Path, help="keep (and reuse) the calibrated INT8 graph here")
    p.add_argument("--workspace", type=float, default=None, metavar="GiB", help="builder workspace limit")
    p.add_argument("--timing-cache", type=Path, help="TensorRT timing cache file, read and updated")
    p.add_argument("--max-batch", type=int, default=8, help="largest batch the engines accept")
    p.set_defaults(run=_build_engine)

    p = sub.add_parser("inspect", help="inspect images with a bundle")
    p.add_argument("bundle", type=Path)
    p.add_argument("images", type=Path, nargs="+")
    p.add_argument("--json", action="store_true", help="one JSON object per image on stdout")
    p.add_argument("--save-overlay", type=Path, metavar="DIR", help="write heatmap overlays here")
    p.add_argument("--backend", default="auto", help=BACKEND_HELP)
    p.add_argument("--threshold", type=_threshold, default=None, help="override the calibrated threshold")
    p.add_argument("--verdict", action="store_true", help="add a one-sentence verdict (the bundle's model, checked)")
    _trusted_key_option(p)
    p.set_defaults(run=_inspect)

    p = sub.add_parser("chat", help="inspect one image, then answer follow-up questions about it")
    p.add_argument("bundle", type=Path)
    p.add_argument("image", type=Path)
    p.add_argument("--llm", default="auto", help="'auto' (the bundle's model), 'none', or a .gguf path")
    p.set_defaults(run=_chat)

    p = sub.add_parser("run", help="watch a camera, stream, video or folder; log events and verdicts")
    p.add_argument("bundle", type=Path)
    p.add_argument(
        "--source",
        required=True,
        help="camera index, /dev/videoN, rtsp://..., GStreamer pipeline, video, folder or glob",
    )
    p.add_argument("--events", type=Path, help="JSONL event log (appended, fsync per record)")
    p.add_argument("--save-overlays", type=Path, metavar="DIR", help="a JPEG per event")
    p.add_argument("--speak", action="store_true", help="speak verdicts with espeak-ng, if installed")
    p.add_argument(
        "--mqtt",
        metavar="URL",
        help="publish events to a broker: mqtt[s]://[user:pass@]host[:port]/topic/prefix (needs --events, the spool)",
    )
    p.add_argument("--mqtt-ca", type=Path, metavar="PEM", help="with mqtts://: the CA that signed the broker")
    p.add_argument("--mqtt-cert", type=Path, metavar="PEM", help="with mqtts://: this box's client certificate")
    p.add_argument("--mqtt-key", type=Path, metavar="PEM", help="with mqtts://: the client certificate's key")
    p.add_argument("--heartbeat", type=float, default=10.0, metavar="S", help="seconds between MQTT heartbeats")
    p.add_argument(
        "--http",
        metavar="HOST:PORT",
        help="serve the live operator page there (127.0.0.1:8080: this box only; other addresses need --http-token)",
    )
    p.add_argument("--http-token", metavar="TOKEN", help="a token the page and its JSON ask for (?token=...)")
    p.add_argument("--max-frames", type=_at_least(1), default=None)
    p.add_argument("--backend", default="auto", help=BACKEND_HELP)
    _trusted_key_option(p)
    p.add_argument("--quiet", action="store_true", help="no live status line")
    p.add_argument(
        "--zero-shot",
        action="store_true",
        help="a new product: ignore the bundle's shots, learn normal from the line (the most typical of the "
        "first unflagged frames become the shots)",
    )
    p.add_argument(
        "--settle",
        type=_at_least(MIN_SETTLE_FRAMES),
        metavar="N",
        help="presume the first N frames of the line normal and raise the threshold to a robust bound of their "
        "scores: far fewer false alarms, fewer defects found (docs/accuracy.md, 'On a line')",
    )
    p.add_argument(
        "--save-bundle", type=Path, metavar="DIR", help="with --zero-shot or --settle: save the result there"
    )
    p.set_defaults(run=_run)

    p = sub.add_parser("bench", help="how fast a bundle runs on this box: per-stage latency, frames/s, memory")
    p.add_argument("bundle", type=Path)
    p.add_argument("--source", help="frames from a camera, video or folder (default: the bundle's shots, 1 in 10 "
                   "with a synthetic defect)")  # fmt: skip
    p.add_argument("--frames", type=_at_least(10), default=200, help="frames timed, after the warm-up")
    p.add_argument("--warmup", type=_at_least(0), default=20)
    p.add_argument("--backend", default="auto", help=BACKEND_HELP)
    p.add_argument("--threads", type=_at_least(0), default=0, help="inference threads (0: the cores this process has)")
    p.add_argument("--json", type=Path, metavar="OUT", help="write the report (the schema of benchmarks/latency.py)")
    p.add_argument("--plot", type=Path, metavar="PNG", help="write a latency breakdown chart")
    p.add_argument(
        "--baseline",
        choices=["patchcore"],
        help="also time PatchCore-WRN50 (torch eager fp32) on the same frames and print the ratio (export extra)",
    )
    p.add_argument("--baseline-frames", type=_at_least(3), default=20)
    _trusted_key_option(p)
    p.set_defaults(run=_bench)

    p = sub.add_parser("serve", help="host bundles on a Triton Inference Server for many camera controllers")
    p.add_argument("bundles", type=Path, nargs="+", help="bundle directories or tars; each is a model named after it")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    p.add_argument("--http-port", type=_port, default=8000)
    p.add_argument("--grpc-port", type=_port, default=8001)
    p.add_argument("--metrics-port", type=_port, default=8002, help="Prometheus metrics (/metrics)")
    p.add_argument("--max-batch", type=_at_least(1), default=8, help="largest batch Triton forms from requests")
    p.add_argument(
        "--queue-delay-us", type=_at_least(0), default=2000, help="how long a request waits for others to batch with"
    )
    p.add_argument("--no-batching", action="store_true", help="run each request as it comes (no dynamic batcher)")
    p.add_argument("--backend", default="auto", help="as for inspect, without triton://")
    p.add_argument("--threads", type=_at_least(0), default=0, help="inference threads (0: the cores this process has)")
    _trusted_key_option(p)
    p.set_defaults(run=_serve)

    p = sub.add_parser("eval", help="few-shot accuracy on an MVTec-layout category (or a root of categories)")
    p.add_argument("path", type=Path, help="a category folder (train/good, test/*, ground_truth/*) or a root of them")
    p.add_argument("--shots", type=_at_least(0), default=1, help="normal shots (0: zero-shot)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--image-size", type=_image_size, default=256)
    p.add_argument("--encoder", default="lite0")
    p.add_argument("--augment", choices=AUGMENTATIONS, default=DEFAULT_AUGMENTATION, help=AUGMENT_HELP)
    p.add_argument("--layout", choices=LAYOUTS, default=DEFAULT_LAYOUT, help=LAYOUT_HELP)
    p.add_argument("--head-weight", type=float, default=None, help=HEAD_HELP)
    p.add_argument("--feature-norm", choices=FEATURE_NORMS, default=DEFAULT_FEATURE_NORM, help=FEATURE_NORM_HELP)
    p.add_argument("--backend", default="auto")
    p.add_argument("--json", type=Path, metavar="OUT", help="write the report here")
    p.set_defaults(run=_eval)

    p = sub.add_parser("demo", help="build a bundle from the bundled samples and inspect the bundled test images")
    p.add_argument("--out", type=Path, default=Path("demo-output"), help="where the bundle and overlays go")
    p.add_argument("--llm", default="default", help="verdict model as for export; 'none' for template sentences")
    p.set_defaults(run=_demo)
    return parser


def _serve(args: argparse.Namespace) -> int:
    try:
        import pytriton  # noqa: F401  numpy 1 only: it lives in an environment of its own
    except ImportError:
        from edge_anomaly.runtime.serve_process import SERVE_PYTHON as python

        if python.is_file() and Path(sys.prefix).resolve() != python.parent.parent.resolve():  # not this venv
            argv = args.argv if args.argv is not None else sys.argv[1:]
            os.execv(str(python), [str(python), "-m", "edge_anomaly.cli", *argv])  # Ctrl-C reaches the server
        raise InputError(
            "serve needs Triton (nvidia-pytriton, numpy 1): run `make serve-env` in the checkout, or "
            "pip install 'edge-anomaly[serve]' into an environment of its own"
        ) from None
    from edge_anomaly.runtime.triton_server import ServeOptions, load_bundles, serve

    options = ServeOptions(
        host=args.host,
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        metrics_port=args.metrics_port,
        max_batch=args.max_batch,
        queue_delay_us=args.queue_delay_us,
        batching=not args.no_batching,
        backend=args.backend,
        threads=args.threads,
        trusted_keys=tuple(args.trusted_key or ()),
    )
    served = load_bundles(args.bundles, options)
    for s in served:
        print(f"model {s.name}: {s.bundle.root} ({s.bundle.object_name}), manifest sha256 {s.digest[:12]}..., "
              f"{s.backend.name} ({s.backend_reason})")  # fmt: skip
    batching = f"dynamic batching up to {options.max_batch}, {options.queue_delay_us} us" if options.batching else (
        "no batching")  # fmt: skip

    def ready() -> None:
        print(
            f"serving on http://{options.host}:{options.http_port} and grpc {options.host}:{options.grpc_port} "
            f"({batching}); metrics http://{options.host}:{options.metrics_port}/metrics; Ctrl-C stops",
            flush=True,
        )

    try:
        serve(served, options, ready)
    finally:
        for s in served:
            s.bundle.close()
    print("server stopped", flush=True)
    return 0


def _trusted_key_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--trusted-key",
        type=Path,
        action="append",
        metavar="PUB",
        help="Ed25519 public key (PEM); repeatable. Then only a bundle signed by one of them is opened",
    )


def _export(args: argparse.Namespace) -> int:
    from edge_anomaly.export.build_bundle import build_bundle

    from .bundle import write_tar

    if args.sign:
        from .signing import load_private_key

        load_private_key(args.sign)  # a key that cannot sign must stop the export before it starts

    bundle = build_bundle(
        args.normal,
        args.out,
        args.shots,
        args.image_size,
        args.object,
        args.encoder,
        seed=args.seed,
        augmentation=args.augment,
        head_weight=args.head_weight,
        layout=args.layout,
        feature_norm=args.feature_norm,
    )
    t, bank = bundle.manifest["threshold"], bundle.manifest["memory_bank"]
    print(
        f"bundle {bundle.root}: {bank['shots']} shots, memory bank {bank['size']} patches, {bank['layout']} layout, "
        f"threshold {t['value']:.4f} ({t['method']})"
    )
    if args.llm != "none":
        from edge_anomaly.export.llm_export import add_llm

        bundle = add_llm(bundle.root, args.llm, args.llm_quant)
        llm = bundle.manifest["llm"]
        print(
            f"language model {llm['file']}: {llm['architecture']}, {llm['quantization']}, "
            f"{bundle.manifest['files'][llm['file']]['bytes'] / 2**20:.1f} MiB"
        )
    if args.engine:
        from edge_anomaly.runtime.tensorrt_engines import EngineOptions, build_engines

        bundle = build_engines(bundle.root, args.engine, EngineOptions(precision=args.precision))
        _print_engines(bundle)
    if args.sign:
        from .bundle import sign_bundle

        print(f"signed: {sign_bundle(bundle.root, args.sign)}")
    if args.triton_repo:
        from edge_anomaly.export.triton_repo import write_triton_repo

        folders = write_triton_repo(bundle, args.triton_repo)
        print(f"triton model repository {args.triton_repo}: {', '.join(f.name for f in folders)} "
              f"(tritonserver --model-repository {args.triton_repo}; docs/scale-out.md)")  # fmt: skip
    if args.tar:
        print(f"packed {write_tar(bundle, args.out.with_name(args.out.name + '.tar.gz'))}")
    return 0


def _keygen(args: argparse.Namespace) -> int:
    from .signing import write_key_pair

    private, public = write_key_pair(args.stem)
    print(f"private key {private} (keep it on the build host: export --sign {private})")
    print(f"public key {public} (give it to the edge boxes: --trusted-key {public})")
    return 0


def _build_engine(args: argparse.Namespace) -> int:
    from edge_anomaly.runtime.tensorrt_engines import EngineOptions, build_engines

    from .images import list_images

    calibration = tuple(list_images(args.calib_dir)[: args.calib_samples]) if args.calib_dir else ()
    options = EngineOptions(
        args.precision,
        args.max_batch,
        workspace_gib=args.workspace,
        timing_cache=args.timing_cache,
        calibration_images=calibration,
        calibration_cache=args.calib_cache,
    )
    _print_engines(build_engines(args.bundle, args.flavour, options))
    return 0


def _print_engines(bundle) -> None:
    for e in bundle.manifest["engines"]:
        print(
            f"engine {e['file']}: {e['flavour']} TensorRT {e['tensorrt_version']} {e['precision']}, "
            f"{e['bytes'] / 2**20:.1f} MiB, built in {e['build_seconds']:.2f} s, "
            f"runs on compute capability {', '.join(e['compute_capabilities'])}"
        )


def _inspect(args: argparse.Namespace) -> int:
    from .images import read_image
    from .inspector import Inspector
    from .overlay import save_overlay

    inspector = Inspector.load(args.bundle, args.backend, args.threshold, trusted_keys=args.trusted_key)
    if not args.json:
        print(f"backend: {inspector.backend_name} ({inspector.backend_reason})")
    failures = 0
    for path, overlay_name in zip(args.images, overlay_names(args.images)):
        try:
            rgb = read_image(path)
            result = inspector.inspect(rgb, color_order="rgb")
        except EdgeAnomalyError as exc:
            failures += 1
            if args.json:
                _print_json({"image": str(path), "error": str(exc)})
            else:
                print(f"{path}: error: {exc}")
            continue
        record = {**result.to_dict(), "image": str(path)}
        if args.verdict:
            told = result.narrated_verdict()
            record |= {"verdict": told.text, "verdict_source": told.source, "fallback_reason": told.fallback_reason}
        if args.save_overlay:
            record["overlay"] = str(save_overlay(rgb, result, args.save_overlay, overlay_name, color_order="rgb"))
        if args.json:
            _print_json(record)
        else:
            decision = "ANOMALY" if result.is_anomalous else "ok"
            verdict = f"  {record['verdict']}" if args.verdict else ""
            print(
                f"{path}: {decision:7s} score {result.score:.3f} / {result.threshold:.3f}  {result.location}{verdict}"
            )
    return 1 if failures else 0


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


def _run(args: argparse.Namespace) -> int:
    import signal
    import threading

    from .inspector import Inspector

    if args.zero_shot and args.settle is not None:
        raise InputError("--settle is for given shots; --zero-shot sets its threshold from the line by itself")
    if args.save_bundle is not None and not (args.zero_shot or args.settle is not None):
        raise InputError("--save-bundle goes with --zero-shot or --settle: otherwise nothing changes")
    if args.save_bundle is not None and args.save_bundle.exists():
        raise InputError(f"{args.save_bundle} exists; --save-bundle writes a new bundle")
    inspector = Inspector.load(args.bundle, args.backend, trusted_keys=args.trusted_key)
    outcome = {"saved": False}

    def saved(fitted: Inspector) -> None:
        if args.save_bundle is None:
            return
        try:  # the line goes on whether or not the bundle could be written
            fitted.save(args.save_bundle)
            outcome["saved"] = True
            print(f"learnt from the line, saved as {args.save_bundle}", file=sys.stderr, flush=True)
        except (OSError, EdgeAnomalyError, ValueError) as exc:
            outcome["save_error"] = str(exc)
            print(f"edge-anomaly run: could not save what was learnt: {exc}", file=sys.stderr, flush=True)

    if args.zero_shot:
        from .zero_shot import ZeroShotInspector

        inspector = ZeroShotInspector(inspector, on_bootstrap=saved)
    elif args.settle is not None:
        from .settling import SettlingInspector

        inspector = SettlingInspector(inspector, args.settle, on_settled=saved)
    runner = inspector.stream(
        args.source,
        events=args.events,
        overlays=args.save_overlays,
        speak=args.speak,
        max_frames=args.max_frames,
        sinks=_integration_sinks(args),
    )
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: runner.stop())
    done = threading.Event()

    def status() -> None:
        while not done.wait(1.0):
            s = runner.stats
            unreachable = f"  {s.unreachable_frames} unreachable" if s.unreachable_frames else ""
            print(
                f"\r{s.inspected} frames  {s.fps:.1f} fps  p99 {s.p99_ms:.1f} ms  {s.events} events  "
                f"{s.dropped} dropped  {s.bad_frames} bad{unreachable}",
                end="",
                file=sys.stderr,
                flush=True,
            )

    if not args.quiet:
        threading.Thread(target=status, name="status", daemon=True).start()
    stdout_open = True
    try:
        for event in runner:
            if not stdout_open:
                continue  # the run still ends cleanly: open event closed, verdicts drained, stream_end logged
            try:
                # Printed after every sink (the event log first) has the record: an acknowledgement.
                print(f"{event.kind} {json.dumps(event.record, allow_nan=False)}", flush=True)
            except BrokenPipeError:
                stdout_open = False
                _close_stdout()
                runner.stop()
    finally:
        done.set()
    if not args.quiet:
        print(file=sys.stderr)  # end the status line
    return _run_outcome(args, runner, stdout_open, outcome)


def _integration_sinks(args: argparse.Namespace) -> list:
    """The broker and the live page, when asked for; both fail here, before the line starts, if misconfigured."""
    sinks = []
    if args.mqtt:
        if args.events is None:
            raise InputError("--mqtt needs --events: the event log is the spool the broker is fed from")
        from edge_anomaly.runtime.mqtt_sink import MqttSink, TlsFiles

        tls = TlsFiles(args.mqtt_ca, args.mqtt_cert, args.mqtt_key)
        sinks.append(MqttSink(args.mqtt, args.events, tls, heartbeat_s=args.heartbeat))
    if args.http:
        from edge_anomaly.runtime.live_page import LivePage

        sinks.append(LivePage.at(args.http, token=args.http_token))
        print(f"live page: {sinks[-1].url}", file=sys.stderr, flush=True)
    return sinks


def _run_outcome(args: argparse.Namespace, runner, stdout_open: bool, outcome: dict) -> int:
    """Exit 0 only when the run did what was asked; otherwise one line saying what did not happen."""
    problems = []
    if runner.failure is not None:
        problems.append(f"{runner.failure}; every record before it is in the log")
    if not stdout_open:
        problems.append("output closed early (broken pipe); the run stopped cleanly, its records are in the log")
    if args.save_bundle is not None and not outcome["saved"]:
        done = runner.stats.inspected
        problems.append(
            outcome.get("save_error")
            or f"nothing saved to {args.save_bundle}: the source ended after {done} frames, before "
            + ("the zero-shot bootstrap had enough frames" if args.zero_shot else f"{args.settle} frames settled it")
        )
    for problem in problems:
        print(f"edge-anomaly run: error: {problem}", file=sys.stderr)
    return EXIT_USAGE if problems else 0


def _bench(args: argparse.Namespace) -> int:
    from edge_anomaly.runtime.bench import bench, default_frames, frames_from, machine, plot_stages

    from .inspector import Inspector

    inspector = Inspector.load(args.bundle, args.backend, threads=args.threads, llm="none",
                               trusted_keys=args.trusted_key)  # fmt: skip
    count = args.frames + args.warmup
    frames = frames_from(args.source, count) if args.source else default_frames(inspector, count)
    print(f"backend: {inspector.backend_name} ({inspector.backend_reason}); {len(frames)} frames", file=sys.stderr)
    run = bench(inspector, frames, args.warmup, progress=sys.stderr.isatty())
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
    _print_bench(report)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")
    if args.plot:
        plot_stages(report, args.plot)
    return 0


def _print_bench(report: dict) -> None:
    run, box = report["runs"][0], report["machine"]
    gpu = f", GPU {box['gpu']['name']}" if box["gpu"] else ", no GPU"
    print(
        f"{box['cpu_model'] or box['processor']}, {box['cpus']} cores{gpu}; {run['backend']}, {run['threads']} threads"
    )
    print(f"bundle: {run['image_size']} px, {run['shots']} shots, memory bank {run['memory_bank_size']} patches")
    print(f"{'stage':12s} {'p50 ms':>8s} {'p95 ms':>8s} {'p99 ms':>8s}")
    for stage, values in run["latency_ms"].items():
        print(f"{stage:12s} {values['p50']:8.2f} {values['p95']:8.2f} {values['p99']:8.2f}")
    print(f"batch-1 {run['frames_per_second']:.1f} frames/s; streaming {run['streaming_frames_per_second']:.1f} "
          f"frames/s pipelined, {run['streaming_serial_frames_per_second']:.1f} serial; "
          f"peak RSS {run['runtime_peak_rss_mb']:.0f} MB")  # fmt: skip
    if run["backend"] == "triton":
        print("triton: 'encoder' is the whole round trip to the server (both graphs there); 'decoder' unpacks it")
    if "baseline" in run:
        baseline_ms = run["baseline"]["latency_ms"]["p50"]
        print(f"PatchCore-WRN50 p50 {baseline_ms:.1f} ms: this bundle is {run['speedup_vs_baseline']}x faster")


def _chat(args: argparse.Namespace) -> int:
    from .inspector import Inspector

    result = Inspector.load(args.bundle, llm=args.llm).inspect(args.image)
    print(result.verdict())
    interactive = sys.stdin.isatty()
    while True:
        try:
            question = input("> " if interactive else "")
        except EOFError:
            return 0
        if question.strip().lower() in ("quit", "exit"):
            return 0
        if question.strip():
            print(result.ask(question), flush=True)


def _eval(args: argparse.Namespace) -> int:
    from .evaluation import evaluate_category, is_category, mean_report

    categories = [args.path] if is_category(args.path) else sorted(p for p in args.path.iterdir() if is_category(p))
    if not categories:
        raise FileNotFoundError(f"{args.path} is neither an MVTec-layout category nor a folder of them")
    fit = {
        "augmentation": args.augment,
        "head_weight": args.head_weight,
        "layout": args.layout,
        "feature_norm": args.feature_norm,
    }
    reports = [
        evaluate_category(c, args.shots, args.seed, args.image_size, args.encoder, args.backend, **fit)
        for c in categories
    ]
    print(f"{'category':16s} {'img AUROC':>9s} {'px AUROC':>9s} {'PRO':>6s} {'acc':>6s} {'F1':>6s}  threshold  layout")
    for r in reports:
        print(f"{_metric_row(r['category'], r)}  {r['threshold']:9.3f}  {r['layout']}")
    report: dict = reports[0] if len(reports) == 1 else {"categories": reports, "mean": mean_report(reports)}
    if len(reports) > 1:
        print(_metric_row("mean", report["mean"]))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


def _metric_row(name: str, r: dict) -> str:
    columns = (("image_auroc", 9), ("pixel_auroc", 9), ("pro", 6), ("accuracy", 6), ("f1", 6))
    values = " ".join(f"{r[k]:{w}.3f}" for k, w in columns)
    return f"{name:16s} {values}"


def _demo(args: argparse.Namespace) -> int:
    from edge_anomaly.export.build_bundle import build_bundle

    from .images import list_images, read_image
    from .inspector import Inspector
    from .overlay import save_overlay
    from .samples import SAMPLES_DIR

    bundle_dir = args.out / "bundle"
    if bundle_dir.exists():
        raise FileExistsError(f"{bundle_dir} exists: remove it or pass another --out")
    print(f"building a bundle from the bundled normal samples in {SAMPLES_DIR / 'train'} ...")
    bundle = build_bundle(list_images(SAMPLES_DIR / "train"), bundle_dir, object_name="surface")
    if args.llm != "none":
        from edge_anomaly.export.llm_export import add_llm

        try:
            bundle = add_llm(bundle.root, args.llm)
            print(f"verdicts: language model '{args.llm}' ({bundle.manifest['llm']['prompt']} prompt), checked")
        except EdgeAnomalyError as exc:
            print(f"verdicts: template sentences (no language model: {exc})")
    inspector = Inspector(bundle)
    print(
        f"backend: {inspector.backend_name} ({inspector.backend_reason}); "
        f"threshold {inspector.threshold:.3f} ({bundle.manifest['threshold']['method']})"
    )
    print(f"{'image':28s} {'truth':8s} {'decision':8s} {'score':>7s}  {'location':12s} verdict")
    correct = 0
    images = list_images(SAMPLES_DIR / "test")
    for path in images:
        rgb = read_image(path)
        result = inspector.inspect(rgb, color_order="rgb")
        truth = "good" if path.name.startswith("good") else "defect"
        correct += (truth == "defect") == result.is_anomalous
        save_overlay(rgb, result, args.out / "overlays", path.name, color_order="rgb")
        decision = "ANOMALY" if result.is_anomalous else "ok"
        print(f"{path.name:28s} {truth:8s} {decision:8s} {result.score:7.3f}  {result.location:12s} {result.verdict()}")
    print(f"{correct}/{len(images)} decisions match the truth; overlays in {args.out / 'overlays'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
