"""``saga run``: the SAGA service in front of a small emulated SGLang cluster, driven by sample agents.

Starts ``--replicas`` emulated replicas in this process on free loopback ports (real HTTP, the
SGLang API) and the real SAGA service on the embedded default configuration (in-memory state;
gRPC API, OpenAI-compatible endpoint and metrics on free ports), then runs ``--sessions`` agent
sessions concurrently through SAGA: even-numbered sessions use the Python SDK over gRPC
(``client.session(...)``, ``s.stream(...)``, ``with s.tool(...)``), odd-numbered ones the
official ``openai`` package pointed at SAGA's ``base_url`` with an ``x-session-id`` header.
Each session makes ``--calls`` calls whose prompt grows turn by turn (system prompt, task, the
previous answers and a tool result each turn), separated by tool gaps drawn log-normal (median
``--tool-median-s``). The replicas and the scheduler's clock run ``--time-scale`` times faster
than the wall clock, so a minute of agent time takes a few wall seconds. Prints a summary:
sessions, calls, task completion time (mean / p90, model seconds), time to first token, the
cache hit rate read from the replicas' ``/metrics`` and SAGA's own decisions from its metrics.
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
    from prometheus_client import CollectorRegistry

    from saga.clock import MonotonicClock
    from saga.emulator.server import start_cluster, stop_cluster
    from saga.service.app import Service
    from saga.service.config import embedded_default

    config = ReplicaConfig(page_size=16, enable_session_radix_cache=True)  # as the operator starts SGLang
    replicas = await start_cluster(args.replicas, config, time_scale=args.time_scale)
    cfg = embedded_default()
    cfg.spec.listen.grpc = cfg.spec.listen.http = cfg.spec.listen.metrics = "127.0.0.1:0"
    cfg.spec.replicas.static = [f"replica-{i}={r.url}" for i, r in enumerate(replicas)]
    cfg.spec.tokens.block_size = config.page_size
    service = Service(cfg, registry=CollectorRegistry(), clock=MonotonicClock(args.time_scale))
    wall0 = time.monotonic()
    try:
        await service.start()
        await service.wait_replicas(len(replicas), timeout_s=30)
        rng = random.Random(args.seed)
        jobs = [
            (_sdk_session if i % 2 == 0 else _openai_session)(service, i, args, random.Random(rng.random()))
            for i in range(args.sessions)
        ]
        results = await asyncio.gather(*jobs)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
            metrics = [await _scrape(http, r.url) for r in replicas]
            saga_metrics = await _scrape(http, f"http://127.0.0.1:{service.metrics_port}")
    finally:
        await service.stop()
        await stop_cluster(replicas)
    wall = time.monotonic() - wall0
    _print_summary(args, results, metrics, wall, saga_metrics)
    return 0


_SYSTEM = "You are a careful coding agent working in a Python repository. " * 12


def _task(idx: int) -> str:
    return f"Task {idx}: fix the failing parser tests without changing the public API."


async def _gap(args: argparse.Namespace, rng: random.Random) -> None:
    gap = rng.lognormvariate(0.0, 0.8) * args.tool_median_s  # model seconds
    await asyncio.sleep(gap / args.time_scale)


async def _sdk_session(service: Any, idx: int, args: argparse.Namespace, rng: random.Random) -> SessionResult:
    """An agent on the SDK (gRPC): explicit session and tool boundaries."""
    from saga.client import AsyncSagaClient

    scale = args.time_scale
    res = SessionResult(0.0, 0)
    start = time.monotonic()
    context = f"<system>\n{_SYSTEM}\n<user>\n{_task(idx)}\n"
    async with (
        AsyncSagaClient(f"127.0.0.1:{service.grpc_port}") as client,
        client.session(agent="swe-agent", expected_calls=args.calls) as s,
    ):
        for call in range(args.calls):
            t0 = time.monotonic()
            answer: list[str] = []
            async for chunk in s.stream(context, max_new_tokens=args.max_tokens):
                if chunk.text and not answer:
                    res.ttfts.append((time.monotonic() - t0) * scale)
                answer.append(chunk.text)
                if chunk.usage is not None:
                    res.cached += chunk.usage.cached_tokens
                    res.prompt += chunk.usage.prompt_tokens
            res.calls += 1
            context += "<assistant>\n" + "".join(answer) + "\n"
            if call + 1 < args.calls:
                tool = ("pytest", "read_file", "grep", "edit_file")[call % 4]
                async with s.tool(tool):
                    await _gap(args, rng)
                context += f"<tool>\n{_TOOL_RESULTS[call % len(_TOOL_RESULTS)]}\n"
    res.task_s = (time.monotonic() - start) * scale
    return res


async def _openai_session(
    service: Any, idx: int, args: argparse.Namespace, rng: random.Random
) -> SessionResult:
    """An agent on the official openai package: only base_url and a session header change."""
    import openai

    scale = args.time_scale
    client = openai.AsyncOpenAI(
        base_url=f"http://127.0.0.1:{service.http_port}/v1",
        api_key="sk-demo",
        default_headers={"x-session-id": f"demo-openai-{idx}", "x-saga-agent-type": "swe-agent"},
        max_retries=0,
    )
    messages: list[Any] = [{"role": "system", "content": _SYSTEM}, {"role": "user", "content": _task(idx)}]
    res = SessionResult(0.0, 0)
    start = time.monotonic()
    try:
        for call in range(args.calls):
            t0 = time.monotonic()
            answer: list[str] = []
            stream = await client.chat.completions.create(
                model="default",
                messages=messages,
                max_tokens=args.max_tokens,
                stream=True,
                stream_options={"include_usage": True},
            )
            async for chunk in stream:
                if chunk.usage is not None:
                    details = chunk.usage.prompt_tokens_details
                    res.cached += (details.cached_tokens or 0) if details is not None else 0
                    res.prompt += chunk.usage.prompt_tokens
                for choice in chunk.choices:
                    if choice.delta.content:
                        if not answer:
                            res.ttfts.append((time.monotonic() - t0) * scale)
                        answer.append(choice.delta.content)
            res.calls += 1
            messages.append({"role": "assistant", "content": "".join(answer)})
            if call + 1 < args.calls:
                await _gap(args, rng)
                messages.append({"role": "tool", "content": _TOOL_RESULTS[call % len(_TOOL_RESULTS)]})
    finally:
        await client.close()
    res.task_s = (time.monotonic() - start) * scale
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
    args: argparse.Namespace,
    results: list[SessionResult],
    metrics: list[dict[str, float]],
    wall: float,
    saga: dict[str, float] | None = None,
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
    if saga is not None:
        rows.append(("SAGA: calls ok (SDK + OpenAI endpoint)", f"{saga.get('saga_calls_total', 0):.0f}"))
        rows.append(("SAGA: KV pins across tool gaps", f"{saga.get('saga_kv_retention_total', 0):.0f}"))
        rows.append(("SAGA: engine decisions", f"{saga.get('saga_decisions_total', 0):.0f}"))
        rows.append(
            (
                "SAGA: sessions ended (SDK)",
                f"{saga.get('saga_tasks_total', 0):.0f}",
            )
        )
    rows.append(("wall time (s)", f"{wall:.1f} at time scale {args.time_scale:g}"))
    width = max(len(k) for k, _ in rows)
    print("SAGA demo: sample agents through the SAGA service on an emulated SGLang cluster")
    print("-" * (width + 20))
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
