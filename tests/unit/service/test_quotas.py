"""Tenant quotas (``saga.service.quotas``): the counters on virtual time, and the service core
refusing sessions and calls over a tenant's quota before its engine sees them."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest
from prometheus_client import CollectorRegistry
from service_fakes import DispatchEngine, StubClient

from saga.clock import VirtualClock
from saga.scheduler.api import (
    Dispatch,
    Prompt,
    SessionStart,
    Usage,
    WorkflowHints,
)
from saga.service.config import load_text
from saga.service.core import CallResult, CallSpec, Principal, ServiceCore
from saga.service.core_types import EngineClient
from saga.service.errors import Rejected
from saga.service.metrics import ServiceMetrics
from saga.service.quotas import NO_QUOTA, REASON, Quota, TenantQuotas
from saga.service.state.memory import MemoryStore
from saga.service.state.memory_quotas import LocalQuotaLedger
from saga.service.state.quota_api import Claim, QuotaLedger, Verdict

pytestmark = pytest.mark.unit


def quotas(q: Quota, clock: VirtualClock | None = None) -> TenantQuotas:
    return TenantQuotas(clock or VirtualClock(), lambda t: q if t == "acme" else NO_QUOTA)


# --------------------------------------------------------------------------- counters


async def test_sessions_over_the_quota_are_refused_until_one_ends() -> None:
    tq = quotas(Quota(max_active_sessions=2))
    for sid in ("a", "b"):
        await tq.admit_session("acme", sid)  # counts the session it admits
    with pytest.raises(Rejected, match="2 open sessions, its quota is 2") as ei:
        await tq.admit_session("acme", "c")
    assert ei.value.reason == REASON
    assert ei.value.retry_after_s > 0
    assert tq.held("acme") == (2, 0)  # the refused one counted nothing
    await tq.admit_session("other", "x")  # another tenant is not limited
    tq.session_closed("acme", "a")
    tq.session_closed("acme", "a")  # once is enough
    await tq.admit_session("acme", "c")
    tq.session_opened("acme", "d")  # an adopted session: counted, never refused
    assert tq.held("acme") == (3, 0)


async def test_call_rate_is_a_token_bucket_with_one_second_of_burst() -> None:
    clock = VirtualClock()
    tq = quotas(Quota(max_calls_per_second=2.0), clock)
    await tq.admit_call("acme", 0)
    await tq.admit_call("acme", 0)  # the burst: two calls at once
    with pytest.raises(Rejected, match="2 calls per second") as ei:
        await tq.admit_call("acme", 0)
    assert ei.value.retry_after_s == pytest.approx(0.5)
    clock.advance(0.5)  # one token back
    await tq.admit_call("acme", 0)
    with pytest.raises(Rejected):
        await tq.admit_call("acme", 0)
    clock.advance(10.0)  # never more than the burst
    await tq.admit_call("acme", 0)
    await tq.admit_call("acme", 0)
    with pytest.raises(Rejected):
        await tq.admit_call("acme", 0)


async def test_a_slow_rate_allows_one_call_then_waits_a_whole_period() -> None:
    clock = VirtualClock()
    tq = quotas(Quota(max_calls_per_second=0.25), clock)
    await tq.admit_call("acme", 0)
    with pytest.raises(Rejected) as ei:
        await tq.admit_call("acme", 0)
    assert ei.value.retry_after_s == pytest.approx(4.0)


async def test_kv_quota_counts_growth_and_refuses_without_counting() -> None:
    tq = quotas(Quota(max_kv_tokens=1000))
    await tq.admit_call("acme", 600)
    with pytest.raises(Rejected, match="~1100 KV tokens, its quota is 1000"):
        await tq.admit_call("acme", 500)
    assert tq.held("acme") == (0, 600)  # the refused call counted nothing
    await tq.admit_call("acme", 0)  # a call that adds nothing is never refused for KV
    tq.adjust_kv("acme", -600)
    await tq.admit_call("acme", 1000)
    assert tq.held("acme") == (0, 1000)


async def test_a_refused_rate_counts_no_kv_and_a_kv_refusal_spends_no_token() -> None:
    clock = VirtualClock()
    tq = quotas(Quota(max_calls_per_second=1.0, max_kv_tokens=100), clock)
    with pytest.raises(Rejected, match="KV"):
        await tq.admit_call("acme", 200)
    await tq.admit_call("acme", 50)  # the bucket still had its token
    with pytest.raises(Rejected, match="calls per second"):
        await tq.admit_call("acme", 10)
    assert tq.held("acme") == (0, 50)


async def test_quotas_are_read_on_every_check() -> None:
    q = {"acme": Quota(max_active_sessions=1)}
    tq = TenantQuotas(VirtualClock(), lambda t: q.get(t, NO_QUOTA))
    tq.session_opened("acme", "a")
    with pytest.raises(Rejected):
        await tq.admit_session("acme", "b")
    q["acme"] = Quota(max_active_sessions=2)  # a reloaded policy
    await tq.admit_session("acme", "b")
    del q["acme"]
    await tq.admit_session("acme", "c")  # no quota any more
    assert tq.held("acme") == (3, 0)


async def test_local_fallbacks_are_counted_on_the_injected_registry() -> None:
    class Unreachable:
        """A shared ledger that could not reach its store: it decided on local counts."""

        def __init__(self) -> None:
            self.local = LocalQuotaLedger()

        async def claim(self, tenant: str, claim: Claim, quota: Quota, now: float) -> Verdict:
            v = await self.local.claim(tenant, claim, quota, now)
            return dataclasses.replace(v, fallback="unreachable")

        def adopt(self, tenant: str, quota: Quota, session_id: str) -> None:
            self.local.adopt(tenant, quota, session_id)

        def add_kv(self, tenant: str, quota: Quota, session_id: str | None, delta: int) -> None:
            self.local.add_kv(tenant, quota, session_id, delta)

        def close_session(self, tenant: str, quota: Quota, session_id: str) -> None:
            self.local.close_session(tenant, quota, session_id)

        def held(self, tenant: str) -> tuple[int, int]:
            return self.local.held(tenant)

        async def close(self) -> None:
            return None

    metrics = ServiceMetrics(CollectorRegistry())
    ledger = Unreachable()
    assert isinstance(ledger, QuotaLedger)
    tq = TenantQuotas(VirtualClock(), lambda t: Quota(max_active_sessions=1), ledger, metrics=metrics)
    await tq.admit_session("acme", "a")
    with pytest.raises(Rejected):  # the local count still enforces the quota
        await tq.admit_session("acme", "b")
    await tq.admit_call("acme", 10)
    got = metrics.registry.get_sample_value("saga_quota_local_fallbacks_total", {"reason": "unreachable"})
    assert got == 3.0


# --------------------------------------------------------------------------- the core


def answering(output_tokens: int) -> Any:
    async def fwd(client: StubClient, d: Dispatch, result: CallResult) -> AsyncIterator[str]:
        result.usage = Usage(result.extra["prompt"], 0, output_tokens)
        yield "ok"

    return fwd


CONFIG = """
apiVersion: saga.dev/v1alpha1
kind: SchedulerConfig
spec:
  tenants:
    - {name: default}
    - {name: acme, max_active_sessions: 2, max_kv_tokens: 3000, max_calls_per_second: 100}
  replicas: {static: [http://127.0.0.1:1]}
"""


def make_core() -> tuple[ServiceCore, DispatchEngine, ServiceMetrics]:
    engine = DispatchEngine()
    metrics = ServiceMetrics(CollectorRegistry())
    client = StubClient()
    core = ServiceCore(
        load_text(CONFIG),
        engine,
        VirtualClock(),
        MemoryStore(),
        lambda _r: cast(EngineClient, client),  # partial fake: only engine_fields, health
        metrics,
    )
    return core, engine, metrics


async def call(core: ServiceCore, sid: str | None, prompt: int, output: int = 100) -> None:
    p = Principal("acme")
    session = await core.session(p, sid) if sid else None
    result = CallResult(extra={"prompt": prompt})
    async for _ in core.run_call(p, session, CallSpec(Prompt(prompt), 64), answering(output), result):
        pass


async def test_session_quota_refuses_before_the_store_and_engine() -> None:
    core, engine, metrics = make_core()
    p = Principal("acme")
    a = await core.start_session(p, tenant="", agent_type="swe", hints=WorkflowHints())
    await core.start_session(p, tenant="", agent_type="swe", hints=WorkflowHints())
    with pytest.raises(Rejected) as ei:
        await core.start_session(p, tenant="", agent_type="swe", hints=WorkflowHints(), session_id="third")
    assert ei.value.reason == "tenant_quota"
    assert await core.store.get_binding("third") is None
    assert sum(isinstance(e, SessionStart) for e in engine.events) == 2
    got = metrics.registry.get_sample_value(
        "saga_admission_rejections_total", {"tenant": "acme", "reason": "tenant_quota"}
    )
    assert got == 1.0
    await core.end_session(p, a)
    await core.start_session(p, tenant="", agent_type="swe", hints=WorkflowHints())
    # other tenants are not limited by acme's quota
    for _ in range(3):
        await core.start_session(Principal("default"), tenant="", agent_type="swe", hints=WorkflowHints())


async def test_kv_quota_follows_each_sessions_context() -> None:
    core, engine, _ = make_core()
    p = Principal("acme")
    a = await core.start_session(p, tenant="", agent_type="swe", hints=WorkflowHints())
    b = await core.start_session(p, tenant="", agent_type="swe", hints=WorkflowHints())
    await call(core, a, 1000, output=100)  # a holds 1100
    await call(core, a, 1500, output=100)  # its context grows: 1600, counted once
    assert core.quotas.held("acme")[1] == 1600
    await call(core, b, 1000)  # 1600 + 1100
    assert core.quotas.held("acme")[1] == 2700
    n = len(engine.events)
    with pytest.raises(Rejected, match="KV tokens"):
        await call(core, b, 1800)  # b's context would grow by 700: 3400 > 3000
    assert len(engine.events) == n  # the engine never saw it
    await call(core, None, 250, output=10)  # session-less: counted only while in flight
    assert core.quotas.held("acme")[1] == 2700
    await core.end_session(p, a)  # a's KV is gone with it
    assert core.quotas.held("acme")[1] == 1100
    await call(core, b, 1800)
    assert core.quotas.held("acme")[1] == 1900


async def test_ttft_objective_is_counted_per_tenant() -> None:
    cfg = CONFIG.replace("max_calls_per_second: 100}", "max_calls_per_second: 100, ttft_s: 0.5}")
    metrics = ServiceMetrics(CollectorRegistry())
    core = ServiceCore(
        load_text(cfg), DispatchEngine(), VirtualClock(), MemoryStore(), lambda _r: None, metrics
    )
    core.observe_ttft("acme", 0.2)
    core.observe_ttft("acme", 0.9)
    core.observe_ttft("default", 5.0)  # no objective: only the histogram

    def value(name: str, **labels: str) -> float | None:
        return metrics.registry.get_sample_value(name, labels)

    assert value("saga_ttft_slo_calls_total", tenant="acme", slo="met") == 1.0
    assert value("saga_ttft_slo_calls_total", tenant="acme", slo="missed") == 1.0
    assert value("saga_ttft_slo_calls_total", tenant="default", slo="missed") is None
    assert value("saga_call_ttft_seconds_count", tenant="default") == 1.0
