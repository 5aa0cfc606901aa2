from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from saga.emulator.core import ReplicaConfig
from saga.emulator.server import RunningReplica, start_replica


@pytest.fixture
async def replica() -> AsyncIterator[RunningReplica]:
    rep = await start_replica(
        ReplicaConfig(
            page_size=4, context_length=2048, kv_capacity_tokens=50_000, enable_session_radix_cache=True
        ),
        port=0,
    )
    try:
        yield rep
    finally:
        await rep.runner.cleanup()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as s:
        yield s
