"""``saga serve``: run the scheduler service (gRPC API, OpenAI endpoint, metrics).

``saga serve`` runs the embedded default (loopback, in-memory state, one replica at
http://127.0.0.1:30000); ``saga serve --config FILE`` a ``SchedulerConfig`` document
(``docs/config.md``); ``saga serve --check --config FILE`` only validates it (exit 2 and every
problem with its path when invalid); ``--print-default`` prints the embedded default.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from typing import Any

from saga.clock import MonotonicClock
from saga.service.config import EMBEDDED_DEFAULT, ConfigError, SchedulerConfig, embedded_default, load_file


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "serve", help="run the SAGA scheduler service (gRPC + OpenAI endpoint + metrics)"
    )
    p.add_argument("--config", help="SchedulerConfig YAML file (default: the embedded default)")
    p.add_argument("--check", action="store_true", help="validate the config and exit")
    p.add_argument("--print-default", action="store_true", help="print the embedded default config and exit")
    p.add_argument(
        "--replica", action="append", default=[], help="replica URL (overrides spec.replicas.static)"
    )
    p.add_argument(
        "--time-scale",
        type=float,
        default=1.0,
        help="run the scheduler's clock K times faster than the wall clock (benchmarks against "
        "emulated replicas started with the same --time-scale; default 1: real time)",
    )
    p.add_argument("--log-level", default="INFO")
    p.set_defaults(handler=_serve)


def _load(args: argparse.Namespace) -> SchedulerConfig:
    cfg = load_file(args.config) if args.config else embedded_default()
    if args.replica:
        cfg.spec.replicas.static = list(args.replica)
        cfg.spec.replicas.kubernetes = None
        from saga.service.config import validate

        validate(cfg, "--replica")
    return cfg


def _serve(args: argparse.Namespace) -> int:
    if args.print_default:
        sys.stdout.write(EMBEDDED_DEFAULT)
        return 0
    if not args.time_scale > 0:
        print("saga serve: --time-scale must be > 0", file=sys.stderr)
        return 2
    try:
        cfg = _load(args)
    except ConfigError as exc:
        print(f"saga serve: {exc}", file=sys.stderr)
        return 2
    if args.check:
        print(f"{args.config or '<embedded default>'}: valid")
        return 0
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    try:
        return asyncio.run(run(cfg, time_scale=args.time_scale))
    except ConfigError as exc:  # what only start-up can see (e.g. an unset key variable)
        print(f"saga serve: {exc}", file=sys.stderr)
        return 2


async def run(cfg: SchedulerConfig, ready: asyncio.Event | None = None, time_scale: float = 1.0) -> int:
    from saga.service.app import Service

    svc = Service(cfg, clock=MonotonicClock(time_scale))
    await svc.start()
    print(
        f"saga serve: gRPC on port {svc.grpc_port}, OpenAI endpoint on http port {svc.http_port}, "
        f"metrics on port {svc.metrics_port}" + (f" (clock x{time_scale:g})" if time_scale != 1.0 else ""),
        flush=True,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    if ready is not None:
        ready.set()
    try:
        await stop.wait()
    finally:
        await svc.stop()
    return 0
