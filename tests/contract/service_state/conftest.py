"""Parametrise the state-store and quota-ledger contract suites over every implementation.

The Redis variant starts a real ``redis-server`` (no persistence) on a free loopback port,
once per module; each test gets its own key namespace so tests never see each other's keys.
Quota ledgers run on a virtual clock: :class:`Processes` makes ledgers standing for scheduler
processes on one backend, with Unix time ``EPOCH + clock.now()``.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio as aioredis

from saga.clock import VirtualClock
from saga.service.state.api import StateStore
from saga.service.state.memory import MemoryStore
from saga.service.state.memory_quotas import LocalQuotaLedger
from saga.service.state.quota_api import QuotaLedger
from saga.service.state.redis_quotas import RedisQuotaLedger
from saga.service.state.redis_server import RedisServer, RedisServerMissing
from saga.service.state.redis_store import RedisStore

_ns = itertools.count()


def _text(raw: bytes | str) -> str:
    """A key or value from Redis (bytes: the clients here do not decode responses)."""
    return raw.decode() if isinstance(raw, bytes) else raw


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


EPOCH = 1_800_000_000.0  # Unix seconds at virtual time 0


class Processes:
    """Quota ledgers of scheduler processes sharing one backend (``kind``), on ``clock``."""

    def __init__(self, kind: str, clock: VirtualClock, url: str = "") -> None:
        self.kind = kind
        self.clock = clock
        self.ns = f"q{next(_ns)}"
        self.redis = aioredis.Redis.from_url(url) if url else None
        self.ledgers: list[QuotaLedger] = []

    def wall(self) -> float:
        return EPOCH + self.clock.now()

    def ledger(self, process_id: str, *, client: aioredis.Redis | None = None) -> QuotaLedger:
        led: QuotaLedger
        if self.kind == "local":
            led = LocalQuotaLedger()
        else:
            c = client or self.redis
            assert c is not None
            led = RedisQuotaLedger(
                c, process_id=process_id, namespace=self.ns, retry_interval_s=0.05, wall=self.wall
            )
        self.ledgers.append(led)
        return led

    async def heartbeat(self, process_id: str, ttl_s: float) -> None:
        """What the state store's heartbeat writes (``saga:hb``, expiry in Unix seconds)."""
        assert self.redis is not None
        await self.redis.zadd(f"{self.ns}:hb", {process_id: self.wall() + ttl_s})

    async def assert_totals_match(self, tenant: str) -> None:
        """Each process's session totals in Redis equal the sessions it is named on."""
        assert self.redis is not None
        want: Counter[str] = Counter()
        for value in (await self.redis.hgetall(f"{self.ns}:quota:held:{tenant}")).values():
            ctx, owner = _text(value).split(" ", 1)
            want[f"S:{owner}"] += 1
            want[f"K:{owner}"] += int(ctx)
        procs = await self.redis.hgetall(f"{self.ns}:quota:procs:{tenant}")
        got = {_text(k): int(v) for k, v in procs.items() if not _text(k).startswith("p:")}
        assert got == {k: v for k, v in want.items() if k.startswith("K:") or v}

    async def flush(self) -> None:
        for led in self.ledgers:
            if isinstance(led, RedisQuotaLedger):
                await led.flush()

    async def close(self) -> None:
        for led in self.ledgers:
            await led.close()
        if self.redis is not None:
            await self.redis.aclose()


@pytest.fixture(params=["local", "redis"])
async def processes(request: pytest.FixtureRequest) -> AsyncIterator[Processes]:
    url = request.getfixturevalue("redis_url") if request.param == "redis" else ""
    procs = Processes(request.param, VirtualClock(), url)
    yield procs
    await procs.close()


@pytest.fixture
async def shared(redis_url: str) -> AsyncIterator[Processes]:
    """Redis only: several processes' ledgers on one Redis."""
    procs = Processes("redis", VirtualClock(), redis_url)
    yield procs
    await procs.close()
