"""Benchmark: SGLang backend client overhead and state-store latency, side by side.

Part 1 (backend): a minimal SGLang-shaped replica on loopback streams ``--chunks`` SSE
chunks per call. The same calls are made (a) with bare aiohttp reading the body and (b)
through :class:`saga.service.backend.client.SGLangClient.generate_stream` (SSE decoding,
JSON parsing, error mapping, timeouts), interleaved in rounds so both see the same machine
state. Reported: per-call latency p50/p99 of each and the added latency, and streamed
calls/s at ``--concurrency``.

Part 2 (state): ``bind`` (create), ``get_binding`` and ``add_usage`` latency p50/p99 of
MemoryStore and RedisStore (a real ``redis-server`` started on a free port), and the memory
one idle session's binding takes in MemoryStore (tracemalloc over ``--sessions`` bindings).

Run:  python bench/service_backend_state.py [--calls 2000] [--out bench/results/...]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import statistics
import sys
import time
import tracemalloc
from collections.abc import Awaitable, Callable

import aiohttp
from aiohttp import web

from saga.service.backend.client import SGLangClient
from saga.service.state.api import SessionBinding, StateStore
from saga.service.state.memory import MemoryStore
from saga.service.state.redis_server import RedisServer, RedisServerMissing
from saga.service.state.redis_store import RedisStore


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


async def start_replica(chunks: int) -> tuple[web.AppRunner, str]:
    body = b"".join(
        b"data: "
        + json.dumps(
            {"text": "x" * (i + 1), "meta_info": {"completion_tokens": i + 1, "prompt_tokens": 8}}
        ).encode()
        + b"\n\n"
        for i in range(chunks)
    )

    async def gen(request: web.Request) -> web.StreamResponse:
        await request.read()
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(body)
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_post("/generate", gen)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = next(a[1] for a in runner.addresses if isinstance(a, tuple))
    return runner, f"http://127.0.0.1:{port}"


async def bench_backend(calls: int, chunks: int, concurrency: int) -> dict[str, float]:
    runner, url = await start_replica(chunks)
    payload = {"text": "hello", "sampling_params": {"max_new_tokens": chunks}, "stream": True}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        client = SGLangClient("r0", url, session=http)

        async def raw_call() -> None:
            async with http.post(url + "/generate", json=payload) as resp:
                await resp.read()

        async def saga_call() -> None:
            n = 0
            async for _ in client.generate_stream(payload):
                n += 1
            assert n == chunks

        for _ in range(100):  # warm up connections and code paths
            await raw_call()
            await saga_call()
        lat: dict[str, list[float]] = {"raw": [], "saga": []}
        for _ in range(calls):  # interleaved, sequential: latency
            for name, fn in (("raw", raw_call), ("saga", saga_call)):
                t0 = time.perf_counter()
                await fn()
                lat[name].append(time.perf_counter() - t0)

        async def throughput(fn: Callable[[], Awaitable[None]]) -> float:
            sem = asyncio.Semaphore(concurrency)

            async def one() -> None:
                async with sem:
                    await fn()

            t0 = time.perf_counter()
            await asyncio.gather(*(one() for _ in range(calls)))
            return calls / (time.perf_counter() - t0)

        rps_raw = await throughput(raw_call)
        rps_saga = await throughput(saga_call)
    await runner.cleanup()
    out = {}
    for name, xs in lat.items():
        out[f"{name}_p50_ms"] = pct(xs, 0.5) * 1e3
        out[f"{name}_p99_ms"] = pct(xs, 0.99) * 1e3
    diffs = [s - r for s, r in zip(lat["saga"], lat["raw"], strict=True)]
    out["added_p50_ms"] = statistics.median(diffs) * 1e3
    out["added_p99_ms"] = pct(diffs, 0.99) * 1e3
    out["raw_calls_per_s"] = rps_raw
    out["saga_calls_per_s"] = rps_saga
    return out


async def bench_store(store: StateStore, ops: int) -> dict[str, float]:
    res: dict[str, list[float]] = {"bind": [], "get": [], "add_usage": []}
    for i in range(ops):
        b = SessionBinding(session_id=f"s{i}", tenant="t", agent_type="swe", replica_id="r1")
        t0 = time.perf_counter()
        await store.bind(b, expected_version=0)
        t1 = time.perf_counter()
        await store.get_binding(f"s{i}")
        t2 = time.perf_counter()
        await store.add_usage("t", service_s=0.01)
        t3 = time.perf_counter()
        res["bind"].append(t1 - t0)
        res["get"].append(t2 - t1)
        res["add_usage"].append(t3 - t2)
    return {f"{k}_{q}_us": pct(v, p) * 1e6 for k, v in res.items() for q, p in (("p50", 0.5), ("p99", 0.99))}


async def memory_per_binding(n: int) -> float:
    store = MemoryStore()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    for i in range(n):
        await store.bind(
            SessionBinding(
                session_id=f"sess-{i:08d}", tenant="tenant-a", agent_type="swe", replica_id="replica-0"
            ),
            expected_version=0,
        )
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    grown = sum(s.size_diff for s in after.compare_to(before, "filename"))
    return grown / n


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--chunks", type=int, default=16, help="SSE chunks per streamed call")
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--store-ops", type=int, default=2000)
    ap.add_argument("--sessions", type=int, default=20000)
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    try:
        import uvloop

        uvloop.install()
        loop_name = "uvloop"
    except ImportError:
        loop_name = "asyncio"
    backend = await bench_backend(args.calls, args.chunks, args.concurrency)
    mem = await bench_store(MemoryStore(), args.store_ops)
    try:
        with RedisServer() as server:
            rs = RedisStore(server.url, process_id="bench")
            red: dict[str, float] | None = await bench_store(rs, args.store_ops)
            await rs.close()
    except RedisServerMissing:
        red = None
    per_binding = await memory_per_binding(args.sessions)

    cmd = "python " + " ".join(sys.argv)
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, {loop_name}"
    lines = [
        f"# Backend client overhead and state store latency ({dt.date.today().isoformat()})",
        "",
        f"- command: `{cmd}`",
        f"- machine: {machine}",
        f"- calls: {args.calls} streamed calls x {args.chunks} SSE chunks; "
        f"calls/s at concurrency {args.concurrency}",
        "",
        "## Streamed /generate: bare aiohttp vs SGLangClient (same replica, interleaved)",
        "",
        "| | p50 ms | p99 ms | calls/s |",
        "|---|---|---|---|",
        f"| bare aiohttp (read body) | {backend['raw_p50_ms']:.3f} | {backend['raw_p99_ms']:.3f} | "
        f"{backend['raw_calls_per_s']:.0f} |",
        f"| SGLangClient.generate_stream | {backend['saga_p50_ms']:.3f} | {backend['saga_p99_ms']:.3f} | "
        f"{backend['saga_calls_per_s']:.0f} |",
        f"| added by the client (paired) | {backend['added_p50_ms']:.3f} | {backend['added_p99_ms']:.3f} | |",
        "",
        "## State store operation latency (µs)",
        "",
        "| store | bind p50 | bind p99 | get p50 | get p99 | add_usage p50 | add_usage p99 |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in (("MemoryStore", mem), ("RedisStore (loopback)", red)):
        if r is None:
            lines.append(f"| {name} | redis-server missing | | | | | |")
            continue
        lines.append(
            f"| {name} | {r['bind_p50_us']:.1f} | {r['bind_p99_us']:.1f} | {r['get_p50_us']:.1f} | "
            f"{r['get_p99_us']:.1f} | {r['add_usage_p50_us']:.1f} | {r['add_usage_p99_us']:.1f} |"
        )
    lines += [
        "",
        f"MemoryStore memory per idle session binding: {per_binding:.0f} bytes ({args.sessions} sessions)",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
