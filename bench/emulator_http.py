"""Benchmark: short requests per second one emulator process sustains on one core.

Starts ``saga emulate --replicas 1`` as its own process pinned to CPU 0 (``taskset``, when
available) in real time (time scale 1, Llama-3.1-8B/H100 timing defaults), and a closed-loop
load generator as another process pinned to CPU 1: ``--concurrency`` aiohttp workers each send
one short non-streaming ``POST /generate`` (16 prompt tokens, ``--max-new-tokens`` output
tokens) after the other for ``--seconds``. Reports completed requests per second, latency
percentiles and the emulator's CPU use (goal: >= 500 req/s on one core).

    python bench/emulator_http.py [--seconds 10] [--concurrency 64] [--max-new-tokens 4]
                                  [--stream] [--time-scales 1,100] [--json PATH]

CPU utilisation is read from /proc (utime + stime over the client's wall time); on this VM a
busy loop reads about 0.67 s per wall second, so treat it as a lower bound.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import time
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pinned(cmd: list[str], cpu: int) -> list[str]:
    if shutil.which("taskset") and (os.cpu_count() or 1) > cpu:
        return ["taskset", "-c", str(cpu), *cmd]
    return cmd


async def client(url: str, seconds: float, concurrency: int, max_new: int, stream: bool) -> dict[str, Any]:
    import aiohttp

    latencies: list[float] = []
    errors = 0
    stop_at = 0.0

    async def worker(i: int, http: aiohttp.ClientSession) -> None:
        nonlocal errors
        n = 0
        while time.monotonic() < stop_at:
            body = {
                "input_ids": [i % 997, n % 991, *range(14)],
                "sampling_params": {"max_new_tokens": max_new},
                "stream": stream,
            }
            t0 = time.monotonic()
            try:
                async with http.post(url + "/generate", json=body) as r:
                    await r.read()
                    if r.status != 200:
                        errors += 1
                        continue
            except aiohttp.ClientError:
                errors += 1
                continue
            latencies.append(time.monotonic() - t0)
            n += 1

    conn = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=conn) as http:
        # warm-up: open the connections
        stop_at = time.monotonic() + 1.0
        await asyncio.gather(*(worker(i, http) for i in range(concurrency)))
        latencies.clear()
        errors = 0
        t0 = time.monotonic()
        stop_at = t0 + seconds
        await asyncio.gather(*(worker(i, http) for i in range(concurrency)))
        elapsed = time.monotonic() - t0
    latencies.sort()

    def pct(q: float) -> float:
        return (
            round(1000 * latencies[min(len(latencies) - 1, int(q * len(latencies)))], 2) if latencies else 0.0
        )

    return {
        "requests": len(latencies),
        "errors": errors,
        "elapsed_s": round(elapsed, 3),
        "requests_per_s": round(len(latencies) / elapsed, 1),
        "latency_ms_p50": pct(0.5),
        "latency_ms_p90": pct(0.9),
        "latency_ms_p99": pct(0.99),
    }


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--max-new-tokens", type=int, default=4)
    ap.add_argument("--stream", action="store_true")
    ap.add_argument(
        "--time-scales",
        default="1,100",
        help="comma-separated emulator time scales to run side by side (1: real GPU timing; "
        "100: model time 100x faster, so the emulator's CPU is the limit)",
    )
    ap.add_argument("--json", help="write the results as JSON here")
    ap.add_argument("--client-url", help=argparse.SUPPRESS)  # internal: run as the load generator
    args = ap.parse_args()

    if args.client_url:
        with _uvloop():
            measured = asyncio.run(
                client(args.client_url, args.seconds, args.concurrency, args.max_new_tokens, args.stream)
            )
        print(json.dumps(measured))
        return 0

    runs = [_run_once(args, float(scale)) for scale in args.time_scales.split(",")]
    result: dict[str, Any] = {
        "command": "python " + " ".join(sys.argv),
        "machine": f"{platform.machine()} {os.cpu_count()} cpus, python {platform.python_version()}",
        "date": time.strftime("%Y-%m-%d"),
        "runs": runs,
    }
    for r in runs:
        print(
            f"time scale {r['config']['time_scale']:>5g}: {r['requests_per_s']} req/s "
            f"({r['requests']} requests, {r['errors']} errors), p50 {r['latency_ms_p50']} ms, "
            f"p99 {r['latency_ms_p99']} ms, emulator CPU {r['emulator_cpu_utilisation']:.0%} of one core"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


def _run_once(args: argparse.Namespace, time_scale: float) -> dict[str, Any]:
    port = free_port()
    server_cmd = pinned(
        [sys.executable, "-m", "saga.cli", "emulate", "--replicas", "1", "--port", str(port),
         "--time-scale", str(time_scale)],
        0,
    )  # fmt: skip
    server = subprocess.Popen(server_cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_ready(f"http://127.0.0.1:{port}", server)
        cpu0 = cpu_seconds(server.pid)
        client_cmd = pinned(
            [
                sys.executable, __file__, "--client-url", f"http://127.0.0.1:{port}",
                "--seconds", str(args.seconds), "--concurrency", str(args.concurrency),
                "--max-new-tokens", str(args.max_new_tokens), *(["--stream"] if args.stream else []),
            ],
            1,
        )  # fmt: skip
        wall0 = time.monotonic()
        out = subprocess.run(client_cmd, capture_output=True, text=True, check=True)
        wall = time.monotonic() - wall0
        cpu = cpu_seconds(server.pid) - cpu0
    finally:
        server.terminate()
        server.wait(10)
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    result["emulator_cpu_utilisation"] = round(cpu / wall, 3)
    result["config"] = {
        "time_scale": time_scale,
        "concurrency": args.concurrency,
        "prompt_tokens": 16,
        "max_new_tokens": args.max_new_tokens,
        "stream": args.stream,
        "pinned_with_taskset": bool(shutil.which("taskset")),
    }
    return result


def _wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("saga emulate exited early")
        try:
            with urllib.request.urlopen(url + "/health", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"emulator not ready after {timeout}s")


class _uvloop:
    def __enter__(self) -> None:
        try:
            import uvloop

            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        except ImportError:
            pass

    def __exit__(self, *exc: object) -> None:
        return None


if __name__ == "__main__":
    raise SystemExit(main())
