"""Two service cores (two scheduler processes) on one real redis-server share tenant quotas.

Each core has its own RedisStore (and so its own RedisQuotaLedger) with its own process id, as
two ``saga serve`` processes behind one Service would; the engine and the replica are fakes,
the Redis and the service core are real.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import cast

import pytest
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry
from service_fakes import DispatchEngine, StubClient

from saga.clock import VirtualClock
from saga.scheduler.api import Dispatch, Prompt, Usage, WorkflowHints
from saga.service.config import load_text
from saga.service.core import CallResult, CallSpec, Principal, ServiceCore
from saga.service.core_types import EngineClient
from saga.service.errors import Rejected
from saga.service.metrics import ServiceMetrics
from saga.service.state.redis_quotas import RedisQuotaLedger
from saga.service.state.redis_server import RedisServer
from saga.service.state.redis_store import RedisStore

pytestmark = pytest.mark.integration

CONFIG = """
apiVersion: saga.dev/v1alpha1
kind: SchedulerConfig
spec:
  tenants:
    - {name: default}
    - {name: acme, max_active_sessions: 2, max_kv_tokens: 5000}
  replicas: {static: [http://127.0.0.1:1]}
"""
ACME = Principal("acme")


async def forward(client: EngineClient, d: Dispatch, result: CallResult) -> AsyncIterator[str]:
    result.usage = Usage(result.extra["prompt"], 0, 100)
    yield "ok"


class Process:
    """One scheduler process: a service core on its own RedisStore."""

    def __init__(self, url: str, pid: str) -> None:
        self.pid = pid
        self.store = RedisStore(url, process_id=pid, op_timeout_s=0.3, retry_interval_s=0.05)
        self.metrics = ServiceMetrics(CollectorRegistry())
        client = StubClient()
        self.core = ServiceCore(
            load_text(CONFIG),
            DispatchEngine(),
            VirtualClock(),
            self.store,
            lambda _r: cast(EngineClient, client),  # partial fake: only engine_fields, health
            self.metrics,
            process_id=pid,
        )

    async def start(self, tenant: Principal = ACME, sid: str = "") -> str:
        return await self.core.start_session(
            tenant, tenant="", agent_type="swe", hints=WorkflowHints(), session_id=sid
        )

    async def call(self, sid: str, prompt: int) -> None:
        session = await self.core.session(ACME, sid)
        result = CallResult(extra={"prompt": prompt})
        async for _ in self.core.run_call(ACME, session, CallSpec(Prompt(prompt), 64), forward, result):
            pass
        await self.flush()

    async def flush(self) -> None:
        ledger = self.core.quotas.ledger
        assert isinstance(ledger, RedisQuotaLedger)  # Redis mode picks the shared ledger
        await ledger.flush()

    def sample(self, name: str, **labels: str) -> float | None:
        return self.metrics.registry.get_sample_value(name, labels)

    async def close(self) -> None:
        await self.core.stop()
        await self.store.close()


@pytest.fixture
async def two(redis_server: RedisServer) -> AsyncIterator[tuple[Process, Process]]:
    a, b = Process(redis_server.url, "sched-a"), Process(redis_server.url, "sched-b")
    for p in (a, b):
        await p.store.heartbeat(p.pid, 15.0)
    yield a, b
    await a.close()
    await b.close()


async def test_the_second_process_refuses_a_session_the_first_made_the_tenant_exceed(
    two: tuple[Process, Process],
) -> None:
    a, b = two
    s1 = await a.start()
    await a.start()
    with pytest.raises(Rejected) as ei:
        await b.start(sid="third")
    assert ei.value.reason == "tenant_quota"
    assert "2 open sessions, its quota is 2" in ei.value.message
    assert await b.store.get_binding("third") is None  # refused before the store
    assert b.sample("saga_admission_rejections_total", tenant="acme", reason="tenant_quota") == 1.0
    await b.start(Principal("default"))  # other tenants are not limited by acme's quota
    # s1's next call reaches b, which adopts it: still one session of the tenant.
    await b.call(s1, 1000)
    with pytest.raises(Rejected):
        await a.start()
    # The session ends through b; a still has it open but it no longer counts anywhere.
    await b.core.end_session(ACME, s1)
    await b.flush()
    await a.start(sid="third")
    assert b.sample("saga_quota_local_fallbacks_total", reason="unreachable") is None


async def test_kv_tokens_are_summed_over_both_processes(two: tuple[Process, Process]) -> None:
    a, b = two
    sa, sb = await a.start(), await b.start()
    await a.call(sa, 2000)  # sa holds 2100 (prompt + output)
    await b.call(sb, 2000)  # sb holds 2100: 4200 in all
    with pytest.raises(Rejected, match="KV tokens"):
        await b.call(sb, 3000)  # sb would grow by 900: 5100 > 5000
    await a.call(sa, 2500)  # sa's context is resent and grows: 2600 after the call, 4700 in all
    with pytest.raises(Rejected, match="~5200 KV tokens"):
        await a.call(sb, 2600)  # a adopts sb: its 2100 is replaced by 2600 (not added: 7300)
    await a.call(sb, 2300)  # 2600 + 2300 = 4900


async def test_a_crashed_process_stops_counting(
    two: tuple[Process, Process], redis_server: RedisServer
) -> None:
    a, b = two
    await a.start()
    await a.start()
    with pytest.raises(Rejected):
        await b.start()
    raw = aioredis.Redis.from_url(redis_server.url)
    try:  # a dies: its heartbeat expires (written as already expired, rather than waiting 15 s)
        await raw.zadd("saga:hb", {"sched-a": 1.0})
    finally:
        await raw.aclose()
    await b.start()
    await b.start()
    with pytest.raises(Rejected):
        await b.start()


async def test_redis_outage_falls_back_to_each_processes_own_counts(
    two: tuple[Process, Process], redis_server: RedisServer
) -> None:
    a, b = two
    await a.start()
    await a.start()
    redis_server.stop()
    # b cannot see a's sessions now: it decides on its own counts, against its share of the
    # quota (its heartbeat saw both processes: 1 of the 2 sessions), and says so
    await b.start()
    with pytest.raises(Rejected, match=r"1/2\)$"):
        await b.start()
    assert b.sample("saga_quota_local_fallbacks_total", reason="unreachable") == 2.0
    assert b.sample("saga_admission_rejections_total", tenant="acme", reason="tenant_quota") == 1.0


async def test_a_redis_outage_holds_each_process_to_its_share_of_the_quota(
    two: tuple[Process, Process], redis_server: RedisServer
) -> None:
    a, b = two
    await a.start()
    await b.start()  # each check saw both processes' heartbeats
    redis_server.stop()
    for p in (a, b):  # 2 sessions over 2 processes: 1 each, which each holds already
        with pytest.raises(Rejected) as ei:
            await p.start()
        assert ei.value.reason == "tenant_quota"
        assert ei.value.message.endswith(
            "1 open sessions, its quota is 2 (this process's share while quotas are decided locally: 1, 1/2)"
        )
        assert p.sample("saga_quota_local_fallbacks_total", reason="unreachable") == 1.0
