"""The backend against emulated SGLang replicas (saga.emulator.server) over real HTTP, and a
replica killed mid-stream (StreamBroken) vs before any byte (ReplicaUnavailable)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from saga.scheduler.api import ReplicaAdded, ReplicaLoad
from saga.service.backend.api import (
    PoolSettings,
    ReplicaEvent,
    ReplicaUnavailable,
    StreamBroken,
    retention_problems,
)
from saga.service.backend.client import SGLangClient
from saga.service.backend.discovery import StaticDiscovery
from saga.service.backend.pool import ReplicaPool

server = pytest.importorskip("saga.emulator.server", reason="the emulator server is not in this checkout")
core = pytest.importorskip("saga.emulator.core")

pytestmark = pytest.mark.integration


@pytest.fixture
async def replica() -> AsyncIterator[Any]:
    cfg = core.ReplicaConfig(kv_capacity_tokens=50_000, page_size=16, enable_session_radix_cache=True)
    rep = await server.start_replica(cfg)
    yield rep
    await server.stop_cluster([rep])


def kill(rep: Any) -> None:
    """Like a killed process: reset every open connection and stop listening."""
    for handler in list(rep.runner.server.connections):
        if handler.transport is not None:
            handler.transport.abort()
    for site in list(rep.runner.sites):
        asyncio.get_running_loop().create_task(site.stop())


async def test_client_against_emulator(replica: Any) -> None:
    c = SGLangClient("replica-0", replica.url)
    try:
        payload = {"text": "hello world, write tests " * 40, "sampling_params": {"max_new_tokens": 8}}
        out = await c.generate(payload)
        assert out["meta_info"]["completion_tokens"] == 8
        assert out["meta_info"]["prompt_tokens"] > 0
        chunks = [ch async for ch in c.generate_stream(payload)]
        assert chunks[-1]["meta_info"]["finish_reason"] is not None
        assert chunks[-1]["meta_info"]["cached_tokens"] > 0  # the prefix was cached by the first call
        sid = await c.open_session("sess-1", capacity_of_str_len=4096)
        assert sid == "sess-1"
        body = c.engine_fields(payload, rid="call-1", priority=1, engine_session=sid)
        assert (await c.generate(body))["meta_info"]["completion_tokens"] == 8
        await c.close_session(sid)
        load = await c.loads()
        assert load.total_tokens == 50_000
        info = await c.server_info()
        assert (info.kv_total_tokens, info.page_size) == (50_000, 16)
        assert "sglang:num_running_reqs" in await c.metrics()
        assert await c.health()
    finally:
        await c.close()


async def test_pool_announces_emulated_replica(replica: Any) -> None:
    events: list[ReplicaEvent] = []
    pool = ReplicaPool(
        StaticDiscovery([f"replica-0={replica.url}"]),
        events.append,
        settings=PoolSettings(health_interval_s=0.05, load_interval_s=0.05, metrics_interval_s=0),
    )
    await pool.start()
    try:
        await pool.wait_announced(["replica-0"], timeout_s=5)
        added = next(e for e in events if isinstance(e, ReplicaAdded))
        assert (added.kv_total_tokens, added.page_size) == (50_000, 16)
        async with asyncio.timeout(5):
            while not any(isinstance(e, ReplicaLoad) for e in events):
                await asyncio.sleep(0.01)
    finally:
        await pool.stop()


async def test_killed_mid_stream_vs_before_any_byte(replica: Any) -> None:
    c = SGLangClient("replica-0", replica.url)
    got = 0
    try:
        stream = c.generate_stream({"text": "a long answer", "sampling_params": {"max_new_tokens": 40_000}})

        async def consume() -> None:
            nonlocal got
            async for _ in stream:
                got += 1
                if got == 2:
                    kill(replica)

        with pytest.raises(StreamBroken) as ei:
            await asyncio.wait_for(consume(), timeout=20)
        assert ei.value.chunks >= 2
        assert not ei.value.retryable
        # the replica is gone: a new call fails before any byte, and may be retried elsewhere
        with pytest.raises(ReplicaUnavailable) as un:
            await c.generate({"text": "x", "sampling_params": {"max_new_tokens": 1}})
        assert un.value.retryable
    finally:
        await c.close()


@pytest.mark.parametrize("enabled", [True, False])
async def test_priority_follows_the_replicas_priority_scheduling(enabled: bool) -> None:
    rep = await server.start_replica(core.ReplicaConfig(enable_priority_scheduling=enabled))
    c = SGLangClient("replica-0", rep.url)
    try:
        info = await c.server_info()
        assert info.priority_scheduling is enabled
        assert ("priority" in c.engine_fields({}, priority=3)) is enabled
    finally:
        await c.close()
        await server.stop_cluster([rep])


@pytest.mark.parametrize("radix", [True, False])
async def test_retention_follows_the_replicas_session_radix_cache(
    radix: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """With ``--enable-session-radix-cache`` the emulator (SGLang 0.5.20's interfaces) keeps
    sessions' KV and SAGA pins there; without it ``/server_info`` says so, and the pool warns
    and announces a replica that keeps no sessions."""
    rep = await server.start_replica(core.ReplicaConfig(enable_session_radix_cache=radix))
    c = SGLangClient("replica-0", rep.url)
    events: list[ReplicaEvent] = []
    pool = ReplicaPool(
        StaticDiscovery([f"replica-0={rep.url}"]),
        events.append,
        settings=PoolSettings(health_interval_s=0.05, load_interval_s=0.05, metrics_interval_s=0),
    )
    try:
        info = await c.server_info()
        assert info.session_radix_cache is radix
        problems = retention_problems(info)
        if radix:
            assert problems == []
        else:
            assert len(problems) == 1
            assert "--enable-session-radix-cache" in problems[0]
        await pool.start()
        await pool.wait_announced(["replica-0"], timeout_s=5)
        added = next(e for e in events if isinstance(e, ReplicaAdded))
        assert added.keeps_sessions is radix
        warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
        assert any("--enable-session-radix-cache" in m for m in warned) is not radix
    finally:
        await pool.stop()
        await c.close()
        await server.stop_cluster([rep])
