"""``bench/gpu/probe.py`` (the first check on a real SGLang server) passes against the emulator.

The probe is what a GPU machine runs first (docs/bench.md); this keeps it working between GPU
runs. One emulated replica publishes KV events on a free port; the probe runs as its own
process, as it does there, and must exit 0 with every check passed. A second run against a
replica that publishes no KV events must fail, so the probe can fail at all.
"""

from __future__ import annotations

import asyncio
import re
import socket
import sys
from pathlib import Path

import pytest
from aiohttp import web

from saga.emulator.core import ReplicaConfig
from saga.emulator.server import start_cluster, stop_cluster
from saga.kv_events import KvEventsConfig

pytestmark = pytest.mark.integration

PROBE = Path(__file__).resolve().parents[3] / "bench" / "gpu" / "probe.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def run_probe(*args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-P", str(PROBE), *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=120)
    return int(proc.returncode or 0), out.decode()


def config(radix: bool = True) -> ReplicaConfig:
    """A replica as SAGA's operator starts SGLang (``radix``: ``--enable-session-radix-cache``)."""
    return ReplicaConfig(
        page_size=1, kv_capacity_tokens=100_000, context_length=16_384, enable_session_radix_cache=radix
    )


async def test_probe_passes_on_an_emulated_replica() -> None:
    kv = KvEventsConfig(publisher="zmq", endpoint="tcp://127.0.0.1:*")
    reps = await start_cluster(1, config(), time_scale=50.0, kv_events=kv)
    try:
        pub = reps[0].kv_publisher
        assert pub is not None
        rc, out = await run_probe(reps[0].url, "--kv-events", pub.bound_endpoint, "--prompt-tokens", "500")
        assert rc == 0, out
        assert "probe: all checks passed" in out
        # as SGLang 0.5.17 on an H100: each turn reuses the previous prompt and all its output
        assert re.search(r"turn 1: [\d.]+ s, prompt 764, cached 564, output 64\n", out)
        assert re.search(r"turn 2: [\d.]+ s, prompt 1028, cached 828, output 64\n", out)
        assert "kv events:" in out
        assert "forced tool call: finish_reason 'tool_calls', calls ['code_execution']" in out
        assert "WARN" not in out
    finally:
        await stop_cluster(reps)


async def test_probe_fails_when_no_kv_events_arrive() -> None:
    reps = await start_cluster(1, config(), time_scale=50.0)  # publishes no KV events
    try:
        silent = f"tcp://127.0.0.1:{free_port()}"
        rc, out = await run_probe(
            reps[0].url, "--kv-events", silent, "--prompt-tokens", "300", "--turns", "1"
        )
        assert rc == 1, out
        assert "FAIL: no KV events" in out
        assert "cannot keep sessions" not in out
    finally:
        await stop_cluster(reps)


async def test_probe_fails_without_the_session_radix_cache() -> None:
    reps = await start_cluster(1, config(radix=False), time_scale=50.0)
    try:
        rc, out = await run_probe(reps[0].url, "--prompt-tokens", "300", "--turns", "1")
        assert rc == 1, out
        assert "FAIL: replica cannot keep sessions' KV: runs without --enable-session-radix-cache" in out
    finally:
        await stop_cluster(reps)


async def test_probe_reports_an_unreachable_or_unlike_sglang_server_in_one_line() -> None:
    rc, out = await run_probe(f"http://127.0.0.1:{free_port()}")
    assert rc == 2, out
    assert out.startswith("probe: cannot check http://127.0.0.1:")
    assert "Traceback" not in out

    async def server_info(_: web.Request) -> web.Response:
        return web.json_response({"version": "0.5.17"})  # no max_total_num_tokens

    app = web.Application()
    app.router.add_get("/server_info", server_info)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        rc, out = await run_probe(f"http://127.0.0.1:{port}")
        assert rc == 2, out
        assert "max_total_num_tokens" in out
        assert "Traceback" not in out
    finally:
        await runner.cleanup()
