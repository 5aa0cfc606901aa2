"""The service core against a scripted engine and an in-memory replica client (no network)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any, cast

import pytest
from prometheus_client import CollectorRegistry

from saga.clock import VirtualClock
from saga.scheduler.api import (
    Action,
    CallFailed,
    CallSubmitted,
    Defer,
    Dispatch,
    Event,
    Prompt,
    Reject,
    RejectReason,
    WorkflowHints,
)
from saga.service.backend.api import LoadReport, RankLoad, ReplicaSpec, ReplicaUnavailable, ServerInfo
from saga.service.backend.client import SGLangClient
from saga.service.backend.discovery import StaticDiscovery
from saga.service.backend.pool import ReplicaPool
from saga.service.config import SchedulerConfig, embedded_default
from saga.service.core import CallResult, CallSpec, Principal, ServiceCore
from saga.service.core_types import EngineClient
from saga.service.errors import InvalidArgument, Rejected, Unavailable
from saga.service.metrics import ServiceMetrics
from saga.service.state.memory import MemoryStore

pytestmark = pytest.mark.unit


class ScriptedEngine:
    """Answers CallSubmitted with ``verdict``; ``tick`` dispatches held calls once ``release``."""

    def __init__(self) -> None:
        self.verdict: str = "dispatch"
        self.reject_reason = RejectReason.OVERLOADED
        self.held: list[str] = []
        self.release = False
        self.events: list[Event] = []
        self.replicas = ["r0", "r1"]
        self.lane: frozenset[str] = frozenset()

    def handle(self, event: Event) -> list[Action]:
        self.events.append(event)
        if isinstance(event, CallSubmitted):
            if self.verdict == "reject":
                return [Reject(event.call_id, self.reject_reason, 7.5)]
            if self.verdict == "defer":
                self.held.append(event.call_id)
                return [Defer(event.call_id, "fair_share")]
            return [Dispatch(event.call_id, self.replicas[0], reason="test")]
        if type(event) is CallFailed and event.retryable:
            return [Dispatch(event.call_id, self.replicas[1], reason="retry")]
        return []

    def tick(self) -> list[Action]:
        if not self.release:
            return []
        out: list[Action] = [Dispatch(c, "r0", reason="admitted") for c in self.held]
        self.held.clear()
        return out

    def next_deadline(self) -> float | None:
        return 0.0 if self.release and self.held else None

    @property
    def lane_replicas(self) -> frozenset[str]:
        return self.lane


class MemClient:
    def __init__(self, rid: str, fail: bool = False) -> None:
        self.replica_id = rid
        self.fail = fail
        self.bodies: list[dict[str, Any]] = []

    def engine_fields(self, payload: Any, **kw: Any) -> dict[str, Any]:
        return {**payload, **{k: v for k, v in kw.items() if v is not None}}

    async def health(self, **_: Any) -> bool:
        return True


def forwarder(result_text: str = "ok") -> Any:
    async def fwd(client: MemClient, d: Dispatch, result: CallResult) -> AsyncIterator[str]:
        client.bodies.append(client.engine_fields({}, rid=d.call_id, priority=d.priority))
        if client.fail:
            raise ReplicaUnavailable("connection refused", replica_id=client.replica_id)
        yield f"{result_text}@{client.replica_id}"

    return fwd


def make_core(
    engine: ScriptedEngine,
    clients: dict[str, MemClient],
    *,
    config: SchedulerConfig | None = None,
    max_input: Callable[[], int | None] | None = None,
) -> ServiceCore:
    return ServiceCore(
        config or embedded_default(),
        engine,
        VirtualClock(),
        MemoryStore(),
        lambda r: cast(EngineClient | None, clients.get(r)),  # partial fakes: only engine_fields, health
        ServiceMetrics(CollectorRegistry()),
        max_input_tokens=max_input,
    )


SPEC = CallSpec(Prompt(10), 4)
P = Principal("default")


async def run(core: ServiceCore) -> list[Any]:
    return [x async for x in core.run_call(P, None, SPEC, forwarder(), CallResult())]


async def test_reject_maps_by_reason() -> None:
    eng = ScriptedEngine()
    core = make_core(eng, {"r0": MemClient("r0")})
    eng.verdict = "reject"
    with pytest.raises(Rejected) as ei:
        await run(core)
    assert ei.value.retry_after_s == 7.5
    eng.reject_reason = RejectReason.PROMPT_TOO_LONG
    with pytest.raises(InvalidArgument):
        await run(core)
    eng.reject_reason = RejectReason.NO_REPLICA
    with pytest.raises(Unavailable):
        await run(core)
    assert (
        core.metrics.registry.get_sample_value(
            "saga_admission_rejections_total", {"tenant": "default", "reason": "overloaded"}
        )
        == 1.0
    )


async def test_deferred_call_waits_for_tick() -> None:
    eng = ScriptedEngine()
    core = make_core(eng, {"r0": MemClient("r0")})
    await core.start()
    try:
        eng.verdict = "defer"
        task = asyncio.create_task(run(core))
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert not task.done()
        assert core.metrics.registry.get_sample_value("saga_queue_depth") == 1.0
        eng.release = True
        core._wake.set()
        assert await asyncio.wait_for(task, 5) == ["ok@r0"]
        assert core.metrics.registry.get_sample_value("saga_queue_depth") == 0.0
        assert core.metrics.registry.get_sample_value("saga_slo_lane_replicas") == 0.0
        eng.lane = frozenset({"r1"})  # the engine formed an SLO lane: the next decision shows it
        eng.verdict = "dispatch"
        assert await asyncio.wait_for(run(core), 5) == ["ok@r0"]
        assert core.metrics.registry.get_sample_value("saga_slo_lane_replicas") == 1.0
    finally:
        await core.stop()


async def test_retry_on_other_replica_before_any_token() -> None:
    eng = ScriptedEngine()
    dead, live = MemClient("r0", fail=True), MemClient("r1")
    core = make_core(eng, {"r0": dead, "r1": live})
    core._healthy.update({"r0": True, "r1": True})
    out = await run(core)
    assert out == ["ok@r1"]
    assert dead.bodies[0]["rid"] == live.bodies[0]["rid"]  # the same engine call, placed again
    assert core._healthy["r0"] is False
    await core.stop()


async def call(core: ServiceCore, prompt_tokens: int) -> list[Any]:
    spec = CallSpec(Prompt(prompt_tokens), 4)
    return [x async for x in core.run_call(P, None, spec, forwarder(), CallResult())]


async def test_oversized_prompt_is_refused_before_the_engine() -> None:
    """An explicit ``limits.max_prompt_tokens`` holds whatever the replicas accept."""
    cfg = embedded_default()
    cfg.spec.limits.max_prompt_tokens = 1000
    eng = ScriptedEngine()
    core = make_core(eng, {"r0": MemClient("r0")}, config=cfg, max_input=lambda: 10**9)
    with pytest.raises(InvalidArgument, match=r"~1001 tokens exceeds the limit of 1000 \(spec.limits"):
        await call(core, 1001)
    assert not any(isinstance(e, CallSubmitted) for e in eng.events)
    assert await call(core, 1000) == ["ok@r0"]


async def test_auto_prompt_limit_is_the_ready_replicas_own() -> None:
    """``max_prompt_tokens: 0`` (the default): the longest prompt a ready replica accepts."""
    assert embedded_default().spec.limits.max_prompt_tokens == 0
    eng = ScriptedEngine()
    core = make_core(eng, {"r0": MemClient("r0")}, max_input=lambda: 5000)
    with pytest.raises(InvalidArgument) as ei:
        await call(core, 5001)
    assert str(ei.value) == (
        "prompt of ~5001 tokens exceeds the largest prompt any ready replica accepts (5000 tokens,"
        " one below SGLang's max_req_input_len; spec.limits.max_prompt_tokens: 0 = auto)"
    )
    assert not any(isinstance(e, CallSubmitted) for e in eng.events)
    assert await call(core, 5000) == ["ok@r0"]


async def test_auto_prompt_limit_checks_nothing_while_no_replica_is_ready() -> None:
    for core in (
        make_core(ScriptedEngine(), {"r0": MemClient("r0")}, max_input=lambda: None),
        make_core(ScriptedEngine(), {"r0": MemClient("r0")}),  # no pool wired in
    ):
        assert await call(core, 10**9) == ["ok@r0"]  # the engine and the replica decide


class LimitedReplica(SGLangClient):
    """A replica client that answers the pool's probes from memory with a prompt limit."""

    def __init__(self, spec: ReplicaSpec, limit: int | None) -> None:
        super().__init__(spec.replica_id, spec.base_url)
        self.limit = limit

    async def health(self, *, generate: bool = False) -> bool:
        return True

    async def server_info(self) -> ServerInfo:
        return ServerInfo(100_000, 8, 1, max_input_tokens=self.limit)

    async def loads(self) -> LoadReport:
        return LoadReport((RankLoad(0, 0, 0, 0, 100_000, 0.0, None),))


async def test_auto_prompt_limit_is_the_largest_over_the_pools_replicas() -> None:
    limits = {"small": 4000, "big": 9000, "silent": None}
    urls = [f"{rid}=http://127.0.0.1:{i + 1}" for i, rid in enumerate(limits)]
    pool = ReplicaPool(
        StaticDiscovery(urls),
        lambda _: None,
        client_factory=lambda spec, _http, _cs: LimitedReplica(spec, limits[spec.replica_id]),
    )
    assert pool.max_input_tokens() is None  # nothing announced yet
    core = make_core(ScriptedEngine(), {"r0": MemClient("r0")}, max_input=pool.max_input_tokens)
    await pool.start()
    try:
        await pool.wait_announced(list(limits), timeout_s=5)
        assert pool.max_input_tokens() == 9000
        assert await call(core, 9000) == ["ok@r0"]
        with pytest.raises(InvalidArgument, match=r"accepts \(9000 tokens"):
            await call(core, 9001)
    finally:
        await pool.stop()


@pytest.mark.parametrize("sid", ["parent/child", "a/b/c", "team:x/run-1.2", "x" * 128])
async def test_session_ids_accept_sub_agent_paths(sid: str) -> None:
    core = make_core(ScriptedEngine(), {"r0": MemClient("r0")})
    assert (
        await core.start_session(P, tenant="", agent_type="a", hints=WorkflowHints(), session_id=sid) == sid
    )
    assert (await core.session(P, sid)).session_id == sid


@pytest.mark.parametrize("sid", ["a b", "a\tb", "a\nb", "ab\n", "a\x00b", "a\x7fb", "x" * 129, "päth"])
async def test_session_ids_reject_whitespace_control_and_overlong(sid: str) -> None:
    core = make_core(ScriptedEngine(), {"r0": MemClient("r0")})
    with pytest.raises(InvalidArgument, match="session_id"):
        await core.start_session(P, tenant="", agent_type="a", hints=WorkflowHints(), session_id=sid)
    with pytest.raises(InvalidArgument, match="session_id"):
        await core.session(P, sid)
