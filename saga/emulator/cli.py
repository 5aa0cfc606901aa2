"""``saga emulate``: start N emulated SGLang replicas on consecutive ports.

    saga emulate --replicas 4 --port 30000 [--host 127.0.0.1] [--time-scale 1]
                 [--page-size 1] [--kv-capacity-tokens N] [--max-running-requests N]
                 [--chunked-prefill-size N] [--context-length N] [--enable-priority-scheduling]
                 [--enable-session-radix-cache]
                 [--failure-rate P] [--added-latency-s S] [--unhealthy] [--crash-after-requests N]
                 [--kv-events-config '{"publisher": "zmq", "endpoint": "tcp://*:5557"}']

Replica ``i`` listens on ``port + i``. Fault knobs apply to every replica (change one replica's
knobs at run time with ``POST /admin/faults``). ``--kv-events-config`` takes SGLang's JSON and
publishes each replica's KV cache events over ZMQ as SGLang does (replica ``i`` on the
endpoint's port + ``i``; see ``saga/emulator/kv_publisher.py``). ``--enable-session-radix-cache``
is off by default, as in SGLang; pass it to stand for replicas SAGA's operator starts (it always
does), or SAGA warns that the replica cannot keep sessions' KV and pins nothing there.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import signal
import sys
from typing import Any

from saga.emulator.core import ReplicaConfig
from saga.emulator.faults import FaultConfig, FaultConfigError
from saga.kv_events import KvEventsConfig


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "emulate",
        help="start emulated SGLang replicas (HTTP, SGLang 0.5 API subset)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    defaults = ReplicaConfig()
    p.add_argument("--replicas", type=int, default=1, help="number of replicas (default 1)")
    p.add_argument("--port", type=int, default=30000, help="port of replica 0; replica i gets port+i")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument(
        "--time-scale", type=float, default=1.0, help="model seconds per wall second (default 1: real time)"
    )
    p.add_argument("--page-size", type=int, default=defaults.page_size)
    p.add_argument("--kv-capacity-tokens", type=int, default=defaults.kv_capacity_tokens)
    p.add_argument("--max-running-requests", type=int, default=defaults.max_running_requests)
    p.add_argument("--chunked-prefill-size", type=int, default=defaults.chunked_prefill_size)
    p.add_argument("--context-length", type=int, default=defaults.context_length)
    p.add_argument("--enable-priority-scheduling", action="store_true")
    p.add_argument("--schedule-low-priority-values-first", action="store_true")
    p.add_argument(
        "--enable-session-radix-cache",
        action="store_true",
        help="a top-level session_id keeps the session's KV, evicted last (SGLang's flag; default off)",
    )
    p.add_argument("--model-name", default=defaults.model_name)
    p.add_argument(
        "--failure-rate", type=float, default=0.0, help="probability a generation request fails (500)"
    )
    p.add_argument("--added-latency-s", type=float, default=0.0, help="wall seconds added to each generation")
    p.add_argument("--unhealthy", action="store_true", help="start with /health answering 503")
    p.add_argument("--crash-after-requests", type=int, default=None, help="crash after N generation requests")
    p.add_argument("--fault-seed", type=int, default=0)
    p.add_argument(
        "--kv-events-config",
        default=None,
        help='SGLang\'s KV events JSON, e.g. \'{"publisher": "zmq", "endpoint": "tcp://*:5557"}\'',
    )
    p.add_argument(
        "--kv-events-wire",
        choices=("map", "array"),
        default="map",
        help="event encoding: map (SGLang 0.5.20 on, default) or array (up to 0.5.19)",
    )
    p.set_defaults(handler=run_emulate)


def config_from_args(args: argparse.Namespace) -> ReplicaConfig:
    return ReplicaConfig(
        page_size=args.page_size,
        kv_capacity_tokens=args.kv_capacity_tokens,
        max_running_requests=args.max_running_requests,
        chunked_prefill_size=args.chunked_prefill_size,
        context_length=args.context_length,
        enable_priority_scheduling=args.enable_priority_scheduling,
        schedule_low_priority_values_first=args.schedule_low_priority_values_first,
        enable_session_radix_cache=args.enable_session_radix_cache,
        model_name=args.model_name,
    )


def run_emulate(args: argparse.Namespace) -> int:
    if args.replicas < 1:
        print("saga emulate: --replicas must be >= 1", file=sys.stderr)
        return 2
    try:
        config = config_from_args(args)
        faults = FaultConfig(
            failure_rate=args.failure_rate,
            added_latency_s=args.added_latency_s,
            healthy=not args.unhealthy,
            crash_after_requests=args.crash_after_requests,
            seed=args.fault_seed,
        )
        kv = KvEventsConfig.from_json(args.kv_events_config) if args.kv_events_config else None
        if kv is not None:
            kv = dataclasses.replace(kv, wire=args.kv_events_wire)
    except (ValueError, FaultConfigError) as e:
        print(f"saga emulate: {e}", file=sys.stderr)
        return 2
    _install_uvloop()
    try:
        asyncio.run(_serve(args.replicas, config, args.host, args.port, args.time_scale, faults, kv))
    except KeyboardInterrupt:
        pass
    except OSError as e:
        print(f"saga emulate: {e}", file=sys.stderr)
        return 1
    return 0


def _install_uvloop() -> None:
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


async def _serve(
    n: int,
    config: ReplicaConfig,
    host: str,
    port: int,
    time_scale: float,
    faults: FaultConfig,
    kv_events: KvEventsConfig | None = None,
) -> None:
    from saga.emulator.server import start_cluster, stop_cluster

    replicas = await start_cluster(
        n, config, host, port, time_scale=time_scale, faults=faults, kv_events=kv_events
    )
    for rep in replicas:
        print(f"replica {rep.runtime.replica_id} listening on {rep.url}", flush=True)
        if rep.kv_publisher is not None:
            pub = rep.kv_publisher
            replay = f" (replay {pub.bound_replay_endpoint})" if pub.bound_replay_endpoint else ""
            print(f"replica {rep.runtime.replica_id} kv events on {pub.bound_endpoint}{replay}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await stop_cluster(replicas)
