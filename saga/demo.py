"""``saga run``: a small emulated SGLang cluster driven by a short sample agent workload.

Starts ``--replicas`` emulated replicas in this process on free loopback ports (real HTTP, the
SGLang API), then runs ``--sessions`` agent sessions concurrently. Each session opens a radix
session on its replica (sessions are spread round-robin; no scheduler yet), then makes
``--calls`` chat completions whose prompt grows turn by turn (system prompt, task, the previous
answers and a tool result each turn), separated by tool gaps drawn log-normal (median
``--tool-median-s``). The replicas run ``--time-scale`` times faster than the wall clock, so a
minute of agent time takes a few wall seconds. Prints a summary: sessions, calls, task
completion time (mean / p90, model seconds), time to first token, and the cache hit rate read
from the replicas' ``/metrics``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from saga.emulator.core import ReplicaConfig

_TOOL_RESULTS = (
    "ran the unit tests: 3 failed in test_parser.py with AssertionError on empty input",
    "read src/parser.py lines 1-120: a recursive descent parser with a tokenize() helper",
    "grep found 14 call sites of tokenize() across the repository",
    "applied the patch; flake8 reports no new warnings",
    "ran the unit tests again: all 212 passed",
)


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "run",
        help="run a short sample agent workload on a small emulated SGLang cluster",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--replicas", type=int, default=2)
    p.add_argument("--sessions", type=int, default=8, help="concurrent agent sessions")
    p.add_argument("--calls", type=int, default=6, help="LLM calls per session")
    p.add_argument("--max-tokens", type=int, default=96, help="output tokens per call")
    p.add_argument("--tool-median-s", type=float, default=2.0, help="median tool gap, model seconds")
    p.add_argument("--time-scale", type=float, default=10.0, help="model seconds per wall second")
    p.add_argument("--seed", type=int, default=7)
    p.set_defaults(handler=run_demo)


@dataclass
class SessionResult:
    task_s: float
    calls: int
    ttfts: list[float] = field(default_factory=list)
    cached: int = 0
    prompt: int = 0


def run_demo(args: argparse.Namespace) -> int:
    if min(args.replicas, args.sessions, args.calls) < 1 or args.time_scale <= 0:
        print("saga run: --replicas, --sessions, --calls must be >= 1 and --time-scale > 0")
        return 2
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return asyncio.run(_main(args))


async def _main(args: argparse.Namespace) -> int:
    from saga.emulator.server import start_cluster, stop_cluster

    config = ReplicaConfig(page_size=16)
    replicas = await start_cluster(args.replicas, config, time_scale=args.time_scale)
    wall0 = time.monotonic()
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as http:
            rng = random.Random(args.seed)
            jobs = [
                _session(http, replicas[i % len(replicas)].url, i, args, random.Random(rng.random()))
                for i in range(args.sessions)
            ]
            results = await asyncio.gather(*jobs)
            metrics = [await _scrape(http, r.url) for r in replicas]
    finally:
        await stop_cluster(replicas)
    wall = time.monotonic() - wall0
    _print_summary(args, results, metrics, wall)
    return 0


async def _session(
    http: aiohttp.ClientSession, url: str, idx: int, args: argparse.Namespace, rng: random.Random
) -> SessionResult:
    scale = args.time_scale
    sid = f"demo-session-{idx}"
    async with http.post(
        url + "/open_session", json={"capacity_of_str_len": 100_000, "session_id": sid}
    ) as r:
        r.raise_for_status()
    messages: list[dict[str, str]] = [
        {"role": "system", "content": "You are a careful coding agent working in a Python repository. " * 12},
        {
            "role": "user",
            "content": f"Task {idx}: fix the failing parser tests without changing the public API.",
        },
    ]
    res = SessionResult(0.0, 0)
    start = time.monotonic()
    for call in range(args.calls):
        body = {
            "model": "default",
            "messages": messages,
            "max_tokens": args.max_tokens,
            "stream": True,
            "stream_options": {"include_usage": True},
            "session_id": sid,
        }
        t0 = time.monotonic()
        answer: list[str] = []
        async with http.post(url + "/v1/chat/completions", json=body) as r:
            r.raise_for_status()
            async for line in r.content:
                s = line.decode().strip()
                if not s.startswith("data: ") or s == "data: [DONE]":
                    continue
                chunk = _json(s[6:])
                if chunk.get("usage"):
                    res.cached += chunk["usage"]["prompt_tokens_details"]["cached_tokens"]
                    res.prompt += chunk["usage"]["prompt_tokens"]
                for choice in chunk.get("choices", []):
                    text = choice.get("delta", {}).get("content")
                    if text:
                        if not answer:
                            res.ttfts.append((time.monotonic() - t0) * scale)
                        answer.append(text)
        res.calls += 1
        messages.append({"role": "assistant", "content": "".join(answer)})
        if call + 1 < args.calls:
            gap = rng.lognormvariate(0.0, 0.8) * args.tool_median_s  # model seconds
            await asyncio.sleep(gap / scale)
            messages.append({"role": "tool", "content": _TOOL_RESULTS[call % len(_TOOL_RESULTS)]})
    res.task_s = (time.monotonic() - start) * scale
    async with http.post(url + "/close_session", json={"session_id": sid}) as r:
        r.raise_for_status()
    return res


def _json(s: str) -> dict[str, Any]:
    import json

    out: dict[str, Any] = json.loads(s)
    return out


async def _scrape(http: aiohttp.ClientSession, url: str) -> dict[str, float]:
    async with http.get(url + "/metrics") as r:
        text = await r.text()
    values: dict[str, float] = {}
    for fam in text_string_to_metric_families(text):
        for sample in fam.samples:
            values[sample.name] = values.get(sample.name, 0.0) + sample.value
    return values


def _p90(xs: list[float]) -> float:
    if len(xs) < 2:
        return xs[0] if xs else 0.0
    return statistics.quantiles(xs, n=10, method="inclusive")[8]


def _print_summary(
    args: argparse.Namespace, results: list[SessionResult], metrics: list[dict[str, float]], wall: float
) -> None:
    tasks = [r.task_s for r in results]
    ttfts = [t for r in results for t in r.ttfts]
    prompt = sum(m.get("sglang:prompt_tokens_total", 0.0) for m in metrics)
    cached = sum(m.get("sglang:cached_tokens_total", 0.0) for m in metrics)
    rows = [
        ("replicas (emulated SGLang, HTTP)", f"{args.replicas}"),
        ("sessions", f"{len(results)}"),
        ("LLM calls", f"{sum(r.calls for r in results)}"),
        ("task time mean (model s)", f"{statistics.fmean(tasks):.2f}"),
        ("task time p90 (model s)", f"{_p90(tasks):.2f}"),
        ("TTFT mean (model ms)", f"{1000 * statistics.fmean(ttfts):.1f}" if ttfts else "-"),
        ("TTFT p90 (model ms)", f"{1000 * _p90(ttfts):.1f}" if ttfts else "-"),
        ("cache hit rate (replicas' /metrics)", f"{cached / prompt:.1%}" if prompt else "-"),
    ]
    for i, m in enumerate(metrics):
        served = m.get("sglang:num_requests_total", 0)
        rate = m.get("sglang:cache_hit_rate", 0)
        rows.append((f"  replica-{i}: requests / cache hit rate", f"{served:.0f} / {rate:.1%}"))
    rows.append(("wall time (s)", f"{wall:.1f} at time scale {args.time_scale:g}"))
    width = max(len(k) for k, _ in rows)
    print("SAGA demo: sample agent workload on an emulated SGLang cluster")
    print("-" * (width + 20))
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
