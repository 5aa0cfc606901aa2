"""Agent Fair Share: deadline/slack ordering, weights, bounded deviation, admission control."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from placement_fakes import FirstReplica

from saga.clock import VirtualClock
from saga.scheduler.api import (
    CallCompleted,
    CallSubmitted,
    Defer,
    Dispatch,
    Prompt,
    Reject,
    RejectReason,
    SessionStart,
    Usage,
    WorkflowHints,
)
from saga.scheduler.engine import Engine
from saga.scheduler.policies.fairness.afs import AgentFairShare
from saga.scheduler.policy import ClusterPressure, QueuedCall
from saga.scheduler.settings import EngineSettings, FairnessSettings, StealingSettings

pytestmark = pytest.mark.unit


def _qc(tenant: str, deadline: float | None, remaining: float = 10.0) -> QueuedCall:
    return QueuedCall("c", "s", tenant, 0.0, 0.0, deadline, 100, remaining, 0)


def test_least_slack_first_and_weights() -> None:
    afs = AgentFairShare(FairnessSettings(weights={"gold": 4.0}))
    urgent = afs.queue_key(_qc("a", deadline=20.0), now=0.0)
    relaxed = afs.queue_key(_qc("a", deadline=200.0), now=0.0)
    late = afs.queue_key(_qc("a", deadline=5.0), now=0.0)
    assert late < urgent < relaxed
    assert afs.queue_key(_qc("gold", deadline=200.0), now=0.0) < relaxed
    assert afs.engine_priority(_qc("a", deadline=5.0), 0.0) > afs.engine_priority(
        _qc("a", deadline=500.0), 0.0
    )


def test_bounded_deviation_makes_a_tenant_ahead_yield() -> None:
    afs = AgentFairShare(FairnessSettings(max_deviation=0.25))
    afs.on_session_done("fast", 10.0, 10.0, 0.0)  # slowdown 1.0
    afs.on_session_done("slow", 30.0, 10.0, 0.0)  # slowdown 3.0
    assert afs.queue_key(_qc("fast", 100.0), 0.0) > afs.queue_key(_qc("slow", 1000.0), 0.0)


def test_queue_drains_by_slack(make_engine: Callable[..., Engine], clock: VirtualClock) -> None:
    st = EngineSettings(stealing=StealingSettings(enabled=False))
    e = make_engine(replicas=1, slots=1, placement=FirstReplica(), settings=st)
    e.handle(SessionStart("busy", "t", "x"))
    e.handle(CallSubmitted("c0", "busy", Prompt(100), 10))
    e.handle(SessionStart("relaxed", "t", "x", WorkflowHints(deadline_s=10_000.0)))
    e.handle(SessionStart("urgent", "t", "x", WorkflowHints(deadline_s=60.0)))
    assert isinstance(e.handle(CallSubmitted("c1", "relaxed", Prompt(100), 10))[-1], Defer)
    assert isinstance(e.handle(CallSubmitted("c2", "urgent", Prompt(100), 10))[-1], Defer)
    clock.advance(1)
    acts = e.handle(CallCompleted("c0", Usage(100, 0, 10)))
    assert [a.call_id for a in acts if isinstance(a, Dispatch)] == ["c2"]


def test_admission_defers_then_admits_and_rejects_with_reason(
    make_engine: Callable[..., Engine], clock: VirtualClock
) -> None:
    fs = FairnessSettings(overload_queue_per_replica=1.0, max_deferred_per_tenant=1, retry_after_s=2.0)
    st = EngineSettings(fairness=fs, stealing=StealingSettings(enabled=False))
    e = make_engine(replicas=1, slots=1, placement=FirstReplica(), settings=st)
    for i in range(3):
        e.handle(SessionStart(f"s{i}", "t", "x"))
        e.handle(CallSubmitted(f"c{i}", f"s{i}", Prompt(100), 10))
    # one running, two queued on the only replica: the cluster is overloaded
    e.handle(SessionStart("new", "t", "x"))
    (d,) = e.handle(CallSubmitted("n1", "new", Prompt(100), 10))
    assert isinstance(d, Defer)
    assert d.reason == "overloaded"
    e.handle(SessionStart("new2", "t", "x"))
    (rj,) = e.handle(CallSubmitted("n2", "new2", Prompt(100), 10))
    assert isinstance(rj, Reject)
    assert rj.reason == RejectReason.OVERLOADED
    assert rj.retry_after_s == 2.0
    assert "overloaded" in rj.message
    # a running task's next call is never refused
    clock.advance(1)
    e.handle(CallCompleted("c0", Usage(100, 0, 10)))
    acts = e.handle(CallSubmitted("c0b", "s0", Prompt(120), 10))
    assert not any(isinstance(a, Reject) for a in acts)
    # as the queue drains the deferred session is admitted (no call is lost)
    for cid in ("c1", "c2", "c0b"):
        clock.advance(1)
        acts = e.handle(CallCompleted(cid, Usage(100, 0, 10)))
        while (dl := e.next_deadline()) is not None and not any(
            isinstance(a, Dispatch) and a.call_id == "n1" for a in acts
        ):
            clock.advance_to(max(dl, clock.now()))
            acts = acts + e.tick()
            if dl > 100:
                break
        if any(isinstance(a, Dispatch) and a.call_id == "n1" for a in acts):
            break
    else:
        pytest.fail("deferred session never admitted")


def test_tenant_over_share_is_deferred_then_rejected_with_quota() -> None:
    afs = AgentFairShare(FairnessSettings(weights={"big": 1.0, "small": 1.0}, max_deferred_per_tenant=2))
    p = ClusterPressure(
        replicas=1,
        queued=50,
        deferred_sessions=0,
        deferred_of_tenant=0,
        live_sessions_of_tenant=9,
        live_sessions=10,
    )
    assert afs.admit(_qc("big", None), p, 0.0).reason == "tenant over fair share"
    full = ClusterPressure(1, 50, 2, 2, 9, 10)
    v = afs.admit(_qc("big", None), full, 0.0)
    assert v.verdict == "reject"
    assert v.reject_reason == RejectReason.TENANT_QUOTA
    calm = ClusterPressure(1, 0, 0, 0, 9, 10)
    assert afs.admit(_qc("big", None), calm, 0.0).verdict == "admit"
