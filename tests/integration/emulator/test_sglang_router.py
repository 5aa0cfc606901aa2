"""The real sglang-router (PyPI ``sglang-router``, a Rust binary) in front of emulated replicas.

Starts two emulated replicas in this process and ``python -m sglang_router.launch_router`` as a
separate process on free loopback ports, then sends native ``/generate`` (stream and non-stream)
and OpenAI requests through the router under the ``cache_aware``, ``round_robin`` and ``manual``
policies. The router's own ``/workers`` listing names the emulated replicas, and each policy's
visible effect is checked on the replicas' own counters.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import socket
import sys
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from saga.emulator.core import ReplicaConfig
from saga.emulator.server import RunningReplica, start_cluster, stop_cluster

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        importlib.util.find_spec("sglang_router") is None, reason="sglang-router not installed"
    ),
]

READY_TIMEOUT_S = 45.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Router:
    def __init__(self, proc: asyncio.subprocess.Process, url: str) -> None:
        self.proc = proc
        self.url = url


async def start_router(replicas: list[RunningReplica], policy: str) -> Router:
    port = free_port()
    cmd = [
        sys.executable, "-m", "sglang_router.launch_router",
        "--worker-urls", *[r.url for r in replicas],
        "--policy", policy,
        "--host", "127.0.0.1", "--port", str(port),
        "--prometheus-host", "127.0.0.1", "--prometheus-port", str(free_port()),
        "--health-check-interval-secs", "1",
        "--log-level", "warn",
    ]  # fmt: skip
    proc = await asyncio.create_subprocess_exec(
        *cmd, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    return Router(proc, f"http://127.0.0.1:{port}")


async def wait_ready(http: aiohttp.ClientSession, router: Router, n_workers: int) -> None:
    """Poll (bounded) until the router is up, lists every worker and routes a request."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + READY_TIMEOUT_S
    last: Any = None
    while loop.time() < deadline:
        assert router.proc.returncode is None, "sglang-router exited"
        try:
            async with http.post(
                router.url + "/generate", json={"text": "ready?", "sampling_params": {"max_new_tokens": 1}}
            ) as r:
                last = r.status
                if r.status == 200:
                    return
        except aiohttp.ClientError as e:
            last = e
        await asyncio.sleep(0.2)
    raise AssertionError(f"router not ready in {READY_TIMEOUT_S}s: {last!r}")


@pytest.fixture
async def cluster() -> AsyncIterator[list[RunningReplica]]:
    reps = await start_cluster(2, ReplicaConfig(page_size=1, kv_capacity_tokens=100_000, context_length=8192))
    try:
        yield reps
    finally:
        await stop_cluster(reps)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as s:
        yield s


async def router_for(policy: str, cluster: list[RunningReplica], http: aiohttp.ClientSession) -> Router:
    router = await start_router(cluster, policy)
    try:
        await wait_ready(http, router, len(cluster))
    except BaseException:
        await stop(router)
        raise
    return router


async def stop(router: Router) -> None:
    if router.proc.returncode is None:
        router.proc.terminate()
        try:
            await asyncio.wait_for(router.proc.wait(), 10)
        except TimeoutError:
            router.proc.kill()
            await router.proc.wait()


def served(cluster: list[RunningReplica]) -> list[int]:
    return [r.runtime.model.counters().requests for r in cluster]


async def generate(
    http: aiohttp.ClientSession, url: str, body: dict[str, Any], headers: dict[str, str] | None = None
) -> dict[str, Any]:
    async with http.post(url + "/generate", json=body, headers=headers) as r:
        assert r.status == 200, await r.text()
        out: dict[str, Any] = await r.json()
        return out


async def stream_generate(http: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> list[Any]:
    chunks: list[Any] = []
    async with http.post(url + "/generate", json={**body, "stream": True}) as r:
        assert r.status == 200
        async for line in r.content:
            s = line.decode().strip()
            if s.startswith("data: "):
                chunks.append(s[6:] if s[6:] == "[DONE]" else json.loads(s[6:]))
    return chunks


async def test_round_robin_spreads_and_streams(
    cluster: list[RunningReplica], http: aiohttp.ClientSession
) -> None:
    router = await router_for("round_robin", cluster, http)
    try:
        async with http.get(router.url + "/workers") as r:
            listing = await r.text()
        assert all(rep.url in listing for rep in cluster), listing
        before = served(cluster)
        for i in range(8):
            out = await generate(
                http, router.url, {"text": f"request number {i}", "sampling_params": {"max_new_tokens": 3}}
            )
            assert out["meta_info"]["completion_tokens"] == 3
        delta = [a - b for a, b in zip(served(cluster), before, strict=True)]
        assert delta == [4, 4], delta
        chunks = await stream_generate(
            http, router.url, {"input_ids": list(range(30)), "sampling_params": {"max_new_tokens": 50}}
        )
        assert chunks[-1] == "[DONE]"
        assert chunks[-2]["meta_info"]["completion_tokens"] == 50
        assert len(chunks) >= 3  # really streamed, not one blob
        async with http.post(
            router.url + "/v1/chat/completions",
            json={"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4},
        ) as r:
            assert r.status == 200
            assert (await r.json())["usage"]["completion_tokens"] == 4
    finally:
        await stop(router)


async def test_cache_aware_keeps_a_shared_prefix_on_one_replica(
    cluster: list[RunningReplica], http: aiohttp.ClientSession
) -> None:
    router = await router_for("cache_aware", cluster, http)
    try:
        system = "You are a coding agent. Follow the repository conventions carefully. " * 20
        before = served(cluster)
        cached = []
        for i in range(6):
            out = await generate(
                http, router.url, {"text": system + f"task {i}", "sampling_params": {"max_new_tokens": 2}}
            )
            cached.append(out["meta_info"]["cached_tokens"])
        delta = [a - b for a, b in zip(served(cluster), before, strict=True)]
        assert sorted(delta) == [0, 6], delta  # every call followed the prefix
        assert all(c > 200 for c in cached[1:]), cached  # and hit the replica's cache
    finally:
        await stop(router)


async def test_manual_policy_is_sticky_per_routing_key(
    cluster: list[RunningReplica], http: aiohttp.ClientSession
) -> None:
    router = await router_for("manual", cluster, http)
    try:
        placements: dict[str, set[int]] = {}
        for key in ("session-a", "session-b", "session-c", "session-d"):
            for turn in range(3):
                before = served(cluster)
                await generate(
                    http,
                    router.url,
                    {"text": f"{key} turn {turn}", "sampling_params": {"max_new_tokens": 1}},
                    headers={"x-smg-routing-key": key},
                )
                delta = [a - b for a, b in zip(served(cluster), before, strict=True)]
                placements.setdefault(key, set()).add(delta.index(1))
        assert all(len(p) == 1 for p in placements.values()), placements
    finally:
        await stop(router)


async def test_router_health_checks_drop_an_unhealthy_replica(
    cluster: list[RunningReplica], http: aiohttp.ClientSession
) -> None:
    router = await router_for("round_robin", cluster, http)
    try:
        cluster[1].runtime.faults.update({"healthy": False})
        loop = asyncio.get_running_loop()
        deadline = loop.time() + READY_TIMEOUT_S
        while True:  # poll until the router's health checker has taken replica 1 out
            before = served(cluster)
            for i in range(4):
                await generate(
                    http, router.url, {"text": f"probe {i}", "sampling_params": {"max_new_tokens": 1}}
                )
            delta = [a - b for a, b in zip(served(cluster), before, strict=True)]
            if delta == [4, 0]:
                break
            assert loop.time() < deadline, f"router kept routing to the unhealthy replica: {delta}"
            await asyncio.sleep(0.5)
    finally:
        await stop(router)


async def test_tool_calls_pass_through_the_router(
    cluster: list[RunningReplica], http: aiohttp.ClientSession
) -> None:
    """The live benchmark's agent requests (``tools``, a forced ``tool_choice``, then the
    assistant's ``tool_calls`` and a ``role: tool`` result) go through the router unchanged, and
    the streamed tool-call answer comes back intact."""
    router = await router_for("round_robin", cluster, http)
    try:
        tools = [{"type": "function", "function": {"name": "file_op", "parameters": {"type": "object"}}}]
        body: dict[str, Any] = {
            "model": "m",
            "messages": [{"role": "user", "content": "read the config file"}],
            "max_tokens": 6,
            "tools": tools,
            "tool_choice": {"type": "function", "function": {"name": "file_op"}},
            "stream": True,
        }
        calls: list[dict[str, Any]] = []
        finish = None
        async with http.post(router.url + "/v1/chat/completions", json=body) as r:
            assert r.status == 200, await r.text()
            async for line in r.content:
                s = line.decode().strip()
                if s.startswith("data: {"):
                    ch = json.loads(s[6:])["choices"]
                    if ch:
                        calls.extend(ch[0]["delta"].get("tool_calls") or [])
                        finish = ch[0]["finish_reason"] or finish
        assert finish == "tool_calls"
        assert calls[0]["function"]["name"] == "file_op"
        args = "".join(c["function"]["arguments"] for c in calls)
        assert json.loads(args)["input"]
        follow = {
            **body,
            "stream": False,
            "tool_choice": "none",
            "messages": [
                *body["messages"],
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": calls[0]["id"],
                            "type": "function",
                            "function": {"name": "file_op", "arguments": args},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": calls[0]["id"], "content": "key = value"},
            ],
        }
        async with http.post(router.url + "/v1/chat/completions", json=follow) as r:
            assert r.status == 200, await r.text()
            out = await r.json()
        assert out["choices"][0]["finish_reason"] == "length"
        assert out["choices"][0]["message"]["content"]
    finally:
        await stop(router)
