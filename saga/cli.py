"""The ``saga`` command.

Each subcommand lives next to the code it drives, in a module exposing
``register(subparsers)``; this file only lists them. A module that is not part of this
installation (``find_spec`` is ``None``) is left out of the help rather than failing.
Handlers find the command line they were called with, as a rerunnable string, in
``args.invocation`` (``saga simulate ...``), whether the call came from the shell or from
``main([...])``.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import shlex
import sys
from collections.abc import Sequence

# (module, one-line purpose); order is the order in ``saga --help``.
_COMMAND_MODULES: tuple[str, ...] = (
    "saga.demo",  # saga run
    "saga.emulator.cli",  # saga emulate
    "saga.graphs.cli",  # saga graphs build|show|eval
    "saga.scheduler.cli",  # saga simulate
    "saga.service.cli",  # saga serve
    "saga.bench.cli",  # saga bench e2e
    "saga.operator.cli",  # saga operator
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="saga", description="SAGA: program-level scheduling for agentic LLM inference."
    )
    parser.add_argument("--version", action="version", version=f"saga {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMAND_MODULES:
        if not _available(name):
            continue
        module = importlib.import_module(name)
        module.register(sub)
    return parser


def _available(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:  # a parent package is not installed
        return False


def _version() -> str:
    from saga import __version__

    return __version__


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    words = list(argv) if argv is not None else sys.argv[1:]
    args = parser.parse_args(words)
    args.invocation = shlex.join(["saga", *words])
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    result = handler(args)
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
