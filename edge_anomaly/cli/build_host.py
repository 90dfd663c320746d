"""Commands of the build host: ``export``, ``keygen``, ``build-engine`` and ``demo`` (they need torch)."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from edge_anomaly.errors import EdgeAnomalyError

from .output import decision_line, print_engines, print_fitted
from .parsing import add_fit_arguments, at_least, fit_options

LLM_HELP = (
    "verdict model: a Hugging Face model folder, a .gguf, 'default' (Gemma 3 270M with the project's verdict "
    "adapter), 'default-base' (without it) or 'none'"
)


def add_commands(sub) -> None:
    p = sub.add_parser("export", help="normal images -> bundle (ONNX graphs, memory bank, calibrated threshold)")
    p.add_argument("--normal", type=Path, required=True, help="folder of normal images")
    p.add_argument("--shots", type=at_least(1), default=None, help="how many normal images to use (default: all)")
    p.add_argument("--object", default="part", help='what is inspected, in words ("bottle"; one line, 64 characters)')
    add_fit_arguments(p)
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
    p.add_argument(
        "--precision", choices=["fp32", "fp16", "int8"], default="fp16",
        help="engine precision; int8 also quantizes the bundle's ONNX encoder and fits the bank through it (as "
        "--encoder-precision int8), engines or not",
    )  # fmt: skip
    p.add_argument("--llm", default="none", metavar="SPEC", help=LLM_HELP)
    p.add_argument(
        "--llm-quant", default="q4_k_m", help="quantization for a converted model (q4_k_m, q5_k_m, q8_0, f16)"
    )
    p.set_defaults(run=export)

    p = sub.add_parser("keygen", help="make an Ed25519 key pair for signing bundles (STEM.key, STEM.pub)")
    p.add_argument("stem", type=Path, help="path and name of the two key files, without suffix")
    p.set_defaults(run=keygen)

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
    p.set_defaults(run=build_engine)

    p = sub.add_parser("demo", help="build a bundle from the bundled samples and inspect the bundled test images")
    p.add_argument("--out", type=Path, default=Path("demo-output"), help="where the bundle and overlays go")
    p.add_argument("--llm", default="default", help="verdict model as for export; 'none' for template sentences")
    p.set_defaults(run=demo)


def export(args: argparse.Namespace) -> int:
    from edge_anomaly.bundle import sign_bundle, write_tar
    from edge_anomaly.export.build_bundle import build_bundle

    options = fit_options(args)  # a mistaken option stops here, before any work
    if args.precision == "int8":
        options = replace(options, encoder_precision="int8")
    if args.sign:
        from edge_anomaly.signing import load_private_key

        load_private_key(args.sign)  # a key that cannot sign must stop the export before it starts
    bundle = build_bundle(args.normal, args.out, args.shots, args.object, options)
    print_fitted(bundle)
    if args.llm != "none":
        from edge_anomaly.export.llm_export import add_llm

        bundle = add_llm(bundle.root, args.llm, args.llm_quant)
        llm = bundle.manifest.llm
        size = bundle.manifest.files[llm.file].bytes / 2**20
        print(f"language model {llm.file}: {llm.architecture}, {llm.quantization}, {size:.1f} MiB")
    if args.engine:
        from edge_anomaly.runtime.tensorrt_engines import EngineOptions, build_engines

        bundle = build_engines(bundle.root, args.engine, EngineOptions(precision=args.precision))
        print_engines(bundle)
    if args.sign:
        print(f"signed: {sign_bundle(bundle.root, args.sign)}")
    if args.triton_repo:
        from edge_anomaly.export.triton_repo import write_triton_repo

        folders = write_triton_repo(bundle, args.triton_repo)
        print(f"triton model repository {args.triton_repo}: {', '.join(f.name for f in folders)} "
              f"(tritonserver --model-repository {args.triton_repo}; docs/scale-out.md)")  # fmt: skip
    if args.tar:
        print(f"packed {write_tar(bundle, args.out.with_name(args.out.name + '.tar.gz'))}")
    return 0


def keygen(args: argparse.Namespace) -> int:
    from edge_anomaly.signing import write_key_pair

    private, public = write_key_pair(args.stem)
    print(f"private key {private} (keep it on the build host: export --sign {private})")
    print(f"public key {public} (give it to the edge boxes: --trusted-key {public})")
    return 0


def build_engine(args: argparse.Namespace) -> int:
    from edge_anomaly.images import list_images
    from edge_anomaly.runtime.tensorrt_engines import EngineOptions, build_engines

    calibration = tuple(list_images(args.calib_dir)[: args.calib_samples]) if args.calib_dir else ()
    options = EngineOptions(
        args.precision,
        args.max_batch,
        workspace_gib=args.workspace,
        timing_cache=args.timing_cache,
        calibration_images=calibration,
        calibration_cache=args.calib_cache,
    )
    print_engines(build_engines(args.bundle, args.flavour, options))
    return 0


def demo(args: argparse.Namespace) -> int:
    from edge_anomaly.export.build_bundle import build_bundle
    from edge_anomaly.images import list_images, read_image
    from edge_anomaly.inspector import Inspector
    from edge_anomaly.overlay import save_overlay
    from edge_anomaly.samples import SAMPLES_DIR

    bundle_dir = args.out / "bundle"
    if bundle_dir.exists():
        raise FileExistsError(f"{bundle_dir} exists: remove it or pass another --out")
    print(f"building a bundle from the bundled normal samples in {SAMPLES_DIR / 'train'} ...")
    bundle = build_bundle(list_images(SAMPLES_DIR / "train"), bundle_dir, object_name="surface")
    if args.llm != "none":
        from edge_anomaly.export.llm_export import add_llm

        try:
            bundle = add_llm(bundle.root, args.llm)
            print(f"verdicts: language model '{args.llm}' ({bundle.manifest.llm.prompt} prompt), checked")
        except EdgeAnomalyError as exc:
            print(f"verdicts: template sentences (no language model: {exc})")
    with Inspector(bundle) as inspector:
        print(
            f"backend: {inspector.backend_name} ({inspector.backend_reason}); "
            f"threshold {inspector.threshold:.3f} ({bundle.manifest.threshold.method})"
        )
        correct = 0
        images = list_images(SAMPLES_DIR / "test")
        for path in images:
            rgb = read_image(path)
            result = inspector.inspect(rgb, color_order="rgb")
            truth = "good" if path.name.startswith("good") else "defect"
            correct += (truth == "defect") == result.is_anomalous
            save_overlay(rgb, result, args.out / "overlays", path.name, color_order="rgb")
            print(decision_line(f"{path.name} ({truth})", result, inspector.verdict(result)))
    print(f"{correct}/{len(images)} decisions match the truth; overlays in {args.out / 'overlays'}")
    return 0
