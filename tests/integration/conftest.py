"""Fixtures shared by the integration tiers: a real redis-server per test on a free loopback
port (no persistence), for the state-store and operator tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from saga.service.state.redis_server import RedisServer, RedisServerMissing


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    try:
        server = RedisServer().start()
    except RedisServerMissing as exc:
        pytest.skip(f"{exc}; `make test` installs it via scripts/ensure-system-deps.sh")
    yield server
    server.stop()
