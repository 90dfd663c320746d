"""``edge-anomaly``: export, inspect, run, serve, bench, eval and demo from the command line.

One error contract for every command: a mistake the user can fix (a bad
image, a bad bundle, a wrong flag, a full disk) prints one line and exits with
status 2, never a traceback. Export and eval need the build-host extra
(torch); the edge commands run on the runtime alone.

Layout: ``parsing`` (shared value parsers and option groups), ``output``
(what is printed), and one module per kind of command: ``build_host``,
``edge``, ``line`` (``run``), ``serve`` and ``evaluation``.
"""

from __future__ import annotations

import sys

from edge_anomaly.errors import EdgeAnomalyError

from . import build_host, edge, evaluation, line, serve
from .output import close_stdout
from .parsing import EXIT_USAGE, Parser

COMMAND_MODULES = (build_host, edge, line, serve, evaluation)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    args.argv = argv
    try:
        return args.run(args)
    except BrokenPipeError:
        close_stdout()
        print(f"edge-anomaly {args.command}: output closed early (broken pipe); stopped", file=sys.stderr)
        return EXIT_USAGE
    except (EdgeAnomalyError, FileExistsError, FileNotFoundError) as exc:
        print(f"edge-anomaly {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:  # a read-only or full disk, a folder where a file was expected, ...
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"edge-anomaly {args.command}: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return EXIT_USAGE


def parser() -> Parser:
    top = Parser(prog="edge-anomaly", description=__doc__.splitlines()[0])
    sub = top.add_subparsers(dest="command", required=True, parser_class=Parser)
    for module in COMMAND_MODULES:
        module.add_commands(sub)
    return top
