"""``edge-anomaly run``: watch a line (camera, stream, video or folder), log events, feed the broker and page."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path

from edge_anomaly.errors import EdgeAnomalyError, InputError
from edge_anomaly.settling import MIN_SETTLE_FRAMES

from .output import close_stdout
from .parsing import EXIT_USAGE, add_backend_argument, add_trusted_key_argument, at_least


def add_commands(sub) -> None:
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
    p.add_argument("--max-frames", type=at_least(1), default=None)
    add_backend_argument(p)
    add_trusted_key_argument(p)
    p.add_argument("--quiet", action="store_true", help="no live status line")
    p.add_argument(
        "--zero-shot",
        action="store_true",
        help="a new product: ignore the bundle's shots, learn normal from the line (the most typical of the "
        "first unflagged frames become the shots)",
    )
    p.add_argument(
        "--settle",
        type=at_least(MIN_SETTLE_FRAMES),
        metavar="N",
        help="presume the first N frames of the line normal and raise the threshold to a robust bound of their "
        "scores: far fewer false alarms, fewer defects found (docs/accuracy.md, 'On a line')",
    )
    p.add_argument(
        "--save-bundle", type=Path, metavar="DIR", help="with --zero-shot or --settle: save the result there"
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from edge_anomaly.inspector import Inspector

    _check_options(args)
    loaded = Inspector.load(args.bundle, args.backend, trusted_keys=args.trusted_key)
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

    inspector = loaded
    if args.zero_shot:
        from edge_anomaly.zero_shot import ZeroShotInspector

        inspector = ZeroShotInspector(loaded, on_bootstrap=saved)
    elif args.settle is not None:
        from edge_anomaly.settling import SettlingInspector

        inspector = SettlingInspector(loaded, args.settle, on_settled=saved)
    with loaded:
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
        stdout_open = _deliver(runner, quiet=args.quiet)
    return _outcome(args, runner, stdout_open, outcome)


def _check_options(args: argparse.Namespace) -> None:
    if args.zero_shot and args.settle is not None:
        raise InputError("--settle is for given shots; --zero-shot sets its threshold from the line by itself")
    if args.save_bundle is not None and not (args.zero_shot or args.settle is not None):
        raise InputError("--save-bundle goes with --zero-shot or --settle: otherwise nothing changes")
    if args.save_bundle is not None and args.save_bundle.exists():
        raise InputError(f"{args.save_bundle} exists; --save-bundle writes a new bundle")
    if args.mqtt and args.events is None:
        raise InputError("--mqtt needs --events: the event log is the spool the broker is fed from")


def _integration_sinks(args: argparse.Namespace) -> list:
    """The broker and the live page, when asked for; both fail here, before the line starts, if misconfigured."""
    sinks = []
    if args.mqtt:
        from edge_anomaly.runtime.mqtt_sink import MqttSink, TlsFiles

        tls = TlsFiles(args.mqtt_ca, args.mqtt_cert, args.mqtt_key)
        sinks.append(MqttSink(args.mqtt, args.events, tls, heartbeat_s=args.heartbeat))
    if args.http:
        from edge_anomaly.runtime.live_page import LivePage

        sinks.append(LivePage.at(args.http, token=args.http_token))
        print(f"live page: {sinks[-1].url}", file=sys.stderr, flush=True)
    return sinks


def _deliver(runner, quiet: bool) -> bool:
    """Print each record after every sink (the event log first) has it: an acknowledgement. Returns whether
    stdout stayed open; a closed one stops the run cleanly (open event closed, verdicts drained, stream_end
    logged)."""
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

    if not quiet:
        threading.Thread(target=status, name="status", daemon=True).start()
    stdout_open = True
    try:
        for event in runner:
            if not stdout_open:
                continue
            try:
                print(f"{event.kind} {json.dumps(event.record, allow_nan=False)}", flush=True)
            except BrokenPipeError:
                stdout_open = False
                close_stdout()
                runner.stop()
    finally:
        done.set()
    if not quiet:
        print(file=sys.stderr)  # end the status line
    return stdout_open


def _outcome(args: argparse.Namespace, runner, stdout_open: bool, outcome: dict) -> int:
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
