"""``edge-anomaly serve``: bundles on a Triton Inference Server, for many camera controllers at once."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from edge_anomaly.errors import InputError

from .parsing import add_backend_argument, add_trusted_key_argument, at_least, port


def add_commands(sub) -> None:
    p = sub.add_parser("serve", help="host bundles on a Triton Inference Server for many camera controllers")
    p.add_argument("bundles", type=Path, nargs="+", help="bundle directories or tars; each is a model named after it")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    p.add_argument("--http-port", type=port, default=8000)
    p.add_argument("--grpc-port", type=port, default=8001)
    p.add_argument("--metrics-port", type=port, default=8002, help="Prometheus metrics (/metrics)")
    p.add_argument("--max-batch", type=at_least(1), default=8, help="largest batch Triton forms from requests")
    p.add_argument(
        "--queue-delay-us", type=at_least(0), default=2000, help="how long a request waits for others to batch with"
    )
    p.add_argument("--no-batching", action="store_true", help="run each request as it comes (no dynamic batcher)")
    add_backend_argument(p, help="as for inspect, without triton://")
    p.add_argument("--threads", type=at_least(0), default=0, help="inference threads (0: the cores this process has)")
    add_trusted_key_argument(p)
    p.set_defaults(run=serve)


def serve(args: argparse.Namespace) -> int:
    _in_the_serve_environment(args)
    from edge_anomaly.runtime.triton_server import ServeOptions, load_bundles
    from edge_anomaly.runtime.triton_server import serve as run_server

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
        run_server(served, options, ready)
    finally:
        for s in served:
            s.backend.close()
            s.bundle.close()
    print("server stopped", flush=True)
    return 0


def _in_the_serve_environment(args: argparse.Namespace) -> None:
    """PyTriton is numpy 1 only, so it lives in an environment of its own (``make serve-env``): re-executed
    there when this one lacks it, so Ctrl-C still reaches the server."""
    try:
        import pytriton  # noqa: F401
    except ImportError:
        from edge_anomaly.runtime.serve_process import SERVE_PYTHON as python

        if python.is_file() and Path(sys.prefix).resolve() != python.parent.parent.resolve():  # not this venv
            argv = args.argv if args.argv is not None else sys.argv[1:]
            os.execv(str(python), [str(python), "-m", "edge_anomaly.cli", *argv])
        raise InputError(
            "serve needs Triton (nvidia-pytriton, numpy 1): run `make serve-env` in the checkout, or "
            "pip install 'edge-anomaly[serve]' into an environment of its own"
        ) from None
