"""Service overhead: SAGA in front of a replica vs calling the replica directly, in one run.

Three processes on loopback: an emulated SGLang replica (``saga.emulator``, time scale 1e4 so
its modelled GPU time is ~0 and the figures measure software), ``saga serve`` (one scheduler
process, in-memory state) and this load generator.

1. **Added latency**: sequential streamed OpenAI ``/v1/completions`` calls (aiohttp client,
   same body), alternating direct / through SAGA so drift hits both equally. Added latency =
   percentile(SAGA) - percentile(direct). Also the service's own ``saga_proxy_overhead_seconds``
   histogram (time SAGA adds, replica time excluded), and the gRPC ``GenerateStream`` path.
2. **Throughput**: ``--concurrency`` streamed calls at a time through SAGA for ``--seconds``;
   calls/s, and calls per CPU-second of the scheduler process (from /proc), which is what one
   scheduler process sustains when it has a core to itself (here three processes share 2 cores).
3. **Memory per idle session**: in-process, ``tracemalloc`` around opening ``--sessions``
   sessions on a service core (engine + core tables + in-memory state store).

    python bench/service_overhead.py [--calls 400] [--seconds 10] [--concurrency 64]

Writes ``bench/results/service_overhead_<date>.{json,md}``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import gc
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"

REPLICA_SCRIPT = """
import asyncio, sys
from saga.emulator.core import ReplicaConfig
from saga.emulator.server import start_replica
async def main():
    cfg = ReplicaConfig(enable_session_radix_cache=True)
    r = await start_replica(cfg, port=int(sys.argv[1]), replica_id="r0", time_scale=1e4)
    print("ready", flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


async def wait_http(url: str, timeout_s: float = 30.0) -> None:
    async with asyncio.timeout(timeout_s), aiohttp.ClientSession() as http:
        while True:
            try:
                async with http.get(url) as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)


async def stream_call(http: aiohttp.ClientSession, base: str, body: dict[str, Any]) -> float:
    t0 = time.perf_counter()
    async with http.post(f"{base}/v1/completions", json=body) as r:
        if r.status != 200:
            raise RuntimeError(f"{base}: HTTP {r.status}: {await r.text()}")
        async for _ in r.content:
            pass
    return time.perf_counter() - t0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def histogram_quantiles(text: str, name: str, label: str) -> dict[str, float]:
    buckets: list[tuple[float, float]] = []
    for line in text.splitlines():
        if line.startswith(f"{name}_bucket") and label in line:
            le = line.split('le="')[1].split('"')[0]
            buckets.append((float("inf") if le == "+Inf" else float(le), float(line.rsplit(" ", 1)[1])))
    if not buckets or buckets[-1][1] == 0:
        return {}
    total = buckets[-1][1]
    out = {}
    for q in (0.5, 0.99):
        out[f"p{int(q * 100)}_le_s"] = next(le for le, c in buckets if c >= q * total)
    out["count"] = total
    return out


async def latency(direct: str, saga: str, calls: int, grpc_target: str) -> dict[str, Any]:
    body = {"model": "default", "prompt": "hello " * 64, "max_tokens": 8, "stream": True}
    d, s = [], []
    conn = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=conn) as http:
        for _ in range(20):  # warm-up: connections, code paths
            await stream_call(http, direct, body)
            await stream_call(http, saga, body)
        for i in range(calls):
            body["prompt"] = f"call {i} " + "hello " * 64
            d.append(await stream_call(http, direct, body))
            s.append(await stream_call(http, saga, body))
    from saga.client import AsyncSagaClient
    from saga.client.aio import AsyncSession

    g: list[float] = []
    async with AsyncSagaClient(grpc_target) as c:
        sessionless = AsyncSession(c, "", "", "")
        for i in range(calls // 2 + 20):
            t0 = time.perf_counter()
            async for _ in sessionless.stream(f"g {i} " + "hello " * 64, max_new_tokens=8):
                pass
            if i >= 20:
                g.append(time.perf_counter() - t0)
    res = {
        "direct_p50_ms": pct(d, 0.5) * 1e3,
        "direct_p99_ms": pct(d, 0.99) * 1e3,
        "saga_p50_ms": pct(s, 0.5) * 1e3,
        "saga_p99_ms": pct(s, 0.99) * 1e3,
        "grpc_stream_p50_ms": pct(g, 0.5) * 1e3,
        "grpc_stream_p99_ms": pct(g, 0.99) * 1e3,
        "mean_added_ms": (statistics.mean(s) - statistics.mean(d)) * 1e3,
    }
    res["added_p50_ms"] = res["saga_p50_ms"] - res["direct_p50_ms"]
    res["added_p99_ms"] = res["saga_p99_ms"] - res["direct_p99_ms"]
    return res


async def throughput(saga: str, seconds: float, concurrency: int, pid: int) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "default", "prompt": "hello " * 64, "max_tokens": 8, "stream": True}
    done = 0
    errors = 0
    stop_at = 0.0

    async def worker(http: aiohttp.ClientSession, w: int) -> None:
        nonlocal done, errors
        i = 0
        while time.perf_counter() < stop_at:
            b = dict(body, prompt=f"w{w} c{i} " + body["prompt"])
            try:
                await stream_call(http, saga, b)
                done += 1
            except Exception:
                errors += 1
            i += 1

    conn = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=conn) as http:
        stop_at = time.perf_counter() + 1.0  # warm-up second
        await asyncio.gather(*(worker(http, w) for w in range(concurrency)))
        done = errors = 0
        cpu0 = cpu_seconds(pid)
        t0 = time.perf_counter()
        stop_at = t0 + seconds
        await asyncio.gather(*(worker(http, w) for w in range(concurrency)))
        wall = time.perf_counter() - t0
        cpu = cpu_seconds(pid) - cpu0
    return {
        "calls": done,
        "errors": errors,
        "wall_s": wall,
        "calls_per_s": done / wall,
        "scheduler_cpu_s": cpu,
        "calls_per_scheduler_cpu_s": done / cpu if cpu > 0 else float("nan"),
    }


async def idle_session_memory(n: int) -> dict[str, Any]:
    from prometheus_client import CollectorRegistry

    from saga.clock import MonotonicClock
    from saga.scheduler.api import WorkflowHints
    from saga.scheduler.engine import Engine
    from saga.service.app import engine_settings
    from saga.service.config import embedded_default
    from saga.service.core import Principal, ServiceCore
    from saga.service.metrics import ServiceMetrics
    from saga.service.state.memory import MemoryStore

    cfg = embedded_default()
    clock = MonotonicClock()
    core = ServiceCore(
        cfg,
        Engine(clock, engine_settings(cfg)),
        clock,
        MemoryStore(),
        lambda _: None,
        ServiceMetrics(CollectorRegistry()),
    )
    p = Principal("default")
    for i in range(100):  # warm caches, first-use allocations
        await core.start_session(p, tenant="", agent_type="swe", hints=WorkflowHints(), session_id=f"w{i}")
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for i in range(n):
        await core.start_session(
            p, tenant="", agent_type="swe", hints=WorkflowHints(), session_id=f"session-{i:08d}"
        )
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return {"sessions": n, "bytes_total": after - before, "bytes_per_session": (after - before) / n}


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    rport, gport, hport, mport = free_port(), free_port(), free_port(), free_port()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    replica = subprocess.Popen(
        [sys.executable, "-c", REPLICA_SCRIPT, str(rport)], env=env, stdout=subprocess.PIPE
    )
    cfg = f"""apiVersion: saga.dev/v1alpha1
kind: SchedulerConfig
spec:
  listen: {{grpc: "127.0.0.1:{gport}", http: "127.0.0.1:{hport}", metrics: "127.0.0.1:{mport}"}}
  replicas: {{static: ["r0=http://127.0.0.1:{rport}"]}}
  limits: {{idle_session_timeout_s: 0}}
"""
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        f.write(cfg)
    saga = subprocess.Popen(
        [sys.executable, "-m", "saga.cli", "serve", "--config", f.name, "--log-level", "WARNING"], env=env
    )
    direct, via = f"http://127.0.0.1:{rport}", f"http://127.0.0.1:{hport}"
    try:
        await wait_http(f"{direct}/health")
        await wait_http(f"{via}/health")
        await wait_http(f"http://127.0.0.1:{mport}/metrics")
        async with asyncio.timeout(30):  # the replica is announced to the engine
            async with aiohttp.ClientSession() as http:
                while True:
                    async with http.get(f"http://127.0.0.1:{mport}/metrics") as r:
                        if 'saga_replica_healthy{replica="r0"} 1.0' in await r.text():
                            break
                    await asyncio.sleep(0.05)
        lat = await latency(direct, via, args.calls, f"127.0.0.1:{gport}")
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{mport}/metrics") as r:
            text = await r.text()
        lat["server_overhead_openai"] = histogram_quantiles(
            text, "saga_proxy_overhead_seconds", 'path="openai"'
        )
        lat["server_overhead_grpc"] = histogram_quantiles(text, "saga_proxy_overhead_seconds", 'path="grpc"')
        thr = await throughput(via, args.seconds, args.concurrency, saga.pid)
        direct_thr = await throughput(direct, args.seconds / 2, args.concurrency, replica.pid)
    finally:
        saga.terminate()
        replica.terminate()
        saga.wait(10)
        replica.wait(10)
        os.unlink(f.name)
    mem = await idle_session_memory(args.sessions)
    return {"latency": lat, "throughput_saga": thr, "throughput_direct": direct_thr, "memory": mem}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--calls", type=int, default=400)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--sessions", type=int, default=20000)
    args = ap.parse_args()
    res = asyncio.run(main_async(args))
    now = dt.datetime.now(dt.UTC)
    cmd = "python bench/service_overhead.py " + " ".join(sys.argv[1:])
    machine = (
        f"{platform.node()} {platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    res["meta"] = {"date": now.isoformat(timespec="seconds"), "command": cmd.strip(), "machine": machine}
    lat, thr, mem = res["latency"], res["throughput_saga"], res["memory"]
    so = lat["server_overhead_openai"]
    nan = float("nan")
    rows = [
        (
            "added latency p50 (streamed /v1/completions, SAGA − direct)",
            "<= 1 ms",
            f"{lat['added_p50_ms']:.2f} ms",
        ),
        ("added latency p99", "<= 5 ms", f"{lat['added_p99_ms']:.2f} ms"),
        ("direct p50 / p99", "", f"{lat['direct_p50_ms']:.2f} / {lat['direct_p99_ms']:.2f} ms"),
        ("through SAGA p50 / p99", "", f"{lat['saga_p50_ms']:.2f} / {lat['saga_p99_ms']:.2f} ms"),
        (
            "gRPC GenerateStream p50 / p99 (SDK)",
            "",
            f"{lat['grpc_stream_p50_ms']:.2f} / {lat['grpc_stream_p99_ms']:.2f} ms",
        ),
        (
            "server-side saga_proxy_overhead_seconds (openai), p50 / p99 bucket bound",
            "",
            f"<= {so.get('p50_le_s', nan) * 1e3:.2f} / <= {so.get('p99_le_s', nan) * 1e3:.2f} ms",
        ),
        (
            f"streamed calls/s through SAGA (concurrency {args.concurrency}, wall clock)",
            ">= 1500",
            f"{thr['calls_per_s']:.0f} ({thr['errors']} errors)",
        ),
        (
            "streamed calls per CPU-second of the scheduler process",
            ">= 1500",
            f"{thr['calls_per_scheduler_cpu_s']:.0f}",
        ),
        (
            "streamed calls/s calling the replica directly",
            "",
            f"{res['throughput_direct']['calls_per_s']:.0f}",
        ),
        (
            f"memory per idle session ({mem['sessions']} sessions: engine + core + memory store)",
            "<= 2 KB",
            f"{mem['bytes_per_session']:.0f} B",
        ),
    ]
    table = "\n".join(f"| {a} | {b} | {c} |" for a, b, c in rows)
    md = (
        f"# Service overhead ({now.date()})\n\n"
        f"Command: `{cmd.strip()}`\n\n"
        f"Machine: {machine} (replica, scheduler and load generator share the cores)\n\n"
        "| figure | target | measured |\n|---|---|---|\n" + table + "\n"
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = RESULTS / f"service_overhead_{now.strftime('%Y%m%d')}"
    stem.with_suffix(".json").write_text(json.dumps(res, indent=2) + "\n")
    stem.with_suffix(".md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
