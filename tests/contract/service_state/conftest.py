"""Parametrise the state-store contract suite over every implementation.

The Redis variant starts a real ``redis-server`` (no persistence) on a free loopback port,
once per module; each test gets its own key namespace so tests never see each other's keys.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Iterator

import pytest

from saga.service.state.api import StateStore
from saga.service.state.memory import MemoryStore
from saga.service.state.redis_server import RedisServer, RedisServerMissing
from saga.service.state.redis_store import RedisStore

_ns = itertools.count()


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    try:
        server = RedisServer().start()
    except RedisServerMissing as exc:
        pytest.skip(f"{exc}; `make test` installs it via scripts/ensure-system-deps.sh")
    yield server.url
    server.stop()


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[StateStore]:
    s: StateStore
    if request.param == "memory":
        s = MemoryStore(process_id="p1")
    else:
        url = request.getfixturevalue("redis_url")
        s = RedisStore(url, process_id="p1", namespace=f"t{next(_ns)}", on_outage="fail")
    yield s
    await s.close()
