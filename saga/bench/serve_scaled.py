"""Run the SAGA service with its clock sped up by the benchmark's time-scale factor.

    python -m saga.bench.serve_scaled --config FILE --time-scale K

Exactly ``saga serve --config FILE`` except that the scheduler engine's clock is
``MonotonicClock(K)``: with emulated replicas running ``K`` times faster than the wall clock,
SAGA's time-based decisions (tool-gap TTLs, deadlines, stealing epochs measured on its clock)
see model seconds, like every other part of the run. Prints the same readiness line as
``saga serve``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys

from saga.clock import MonotonicClock
from saga.service.config import ConfigError, load_file


async def _run(config_path: str, scale: float) -> int:
    from saga.service.app import Service

    svc = Service(load_file(config_path), clock=MonotonicClock(scale))
    await svc.start()
    print(
        f"saga serve: gRPC on port {svc.grpc_port}, OpenAI endpoint on http port {svc.http_port}, "
        f"metrics on port {svc.metrics_port} (clock x{scale:g})",
        flush=True,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await svc.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m saga.bench.serve_scaled")
    p.add_argument("--config", required=True)
    p.add_argument("--time-scale", type=float, default=1.0)
    p.add_argument("--log-level", default="WARNING")
    a = p.parse_args(argv)
    if not a.time_scale > 0:
        print("--time-scale must be > 0", file=sys.stderr)
        return 2
    logging.basicConfig(level=a.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        load_file(a.config)
    except ConfigError as e:
        print(f"serve_scaled: {e}", file=sys.stderr)
        return 2
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    return asyncio.run(_run(a.config, a.time_scale))


if __name__ == "__main__":
    sys.exit(main())
