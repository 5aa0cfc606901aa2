"""Conformance suite every fairness policy passes (``saga.scheduler.policy.FairnessPolicy``)."""

from __future__ import annotations

import math

import pytest

from saga.clock import VirtualClock
from saga.scheduler.api import (
    CallCompleted,
    CallSubmitted,
    Dispatch,
    Prompt,
    Reject,
    ReplicaAdded,
    SessionStart,
    Usage,
)
from saga.scheduler.engine import Engine
from saga.scheduler.policies import FAIRNESS_POLICIES
from saga.scheduler.policy import ClusterPressure, FairnessPolicy, QueuedCall

pytestmark = pytest.mark.contract

NAMES = sorted(FAIRNESS_POLICIES)


@pytest.fixture(params=NAMES)
def policy(request: pytest.FixtureRequest) -> FairnessPolicy:
    return FAIRNESS_POLICIES[request.param]()


def _qc(i: int, tenant: str = "t", deadline: float | None = 100.0) -> QueuedCall:
    return QueuedCall(f"c{i}", f"s{i}", tenant, float(i), float(i), deadline, 100 * (i + 1), 10.0, i)


CALM = ClusterPressure(
    replicas=4,
    queued=0,
    deferred_sessions=0,
    deferred_of_tenant=0,
    live_sessions_of_tenant=1,
    live_sessions=4,
)


def test_has_a_name(policy: FairnessPolicy) -> None:
    assert isinstance(policy.name, str)
    assert policy.name


def test_admits_when_the_cluster_is_calm(policy: FairnessPolicy) -> None:
    assert policy.admit(_qc(0), CALM, 0.0).verdict == "admit"


def test_verdicts_are_well_formed_under_any_pressure(policy: FairnessPolicy) -> None:
    for queued in (0, 10, 1000, 10**6):
        for deferred in (0, 5, 10**4):
            p = ClusterPressure(4, queued, deferred, deferred, 3, 10)
            v = policy.admit(_qc(1), p, 0.0)
            assert v.verdict in ("admit", "defer", "reject")
            if v.verdict != "admit":
                assert v.reason, "a deferral or rejection names its reason"
            if v.verdict == "reject":
                assert v.reject_reason is not None
                assert v.retry_after_s >= 0


def test_keys_are_finite_and_total(policy: FairnessPolicy) -> None:
    keys = [policy.queue_key(_qc(i, deadline=None if i % 2 else 50.0 * i), 1.0) for i in range(10)]
    assert all(math.isfinite(k) for k in keys)
    assert isinstance(policy.engine_priority(_qc(0), 0.0), int)


def test_learning_hooks_accept_any_history(policy: FairnessPolicy) -> None:
    for i in range(20):
        policy.on_call_done(f"t{i % 3}", 0.5 * i, float(i))
        policy.on_session_done(f"t{i % 3}", 10.0 + i, 10.0, float(i))
        policy.on_session_done("zero", 1.0, 0.0, float(i))
    assert math.isfinite(policy.queue_key(_qc(3, "t1"), 30.0))


def test_no_call_is_starved_through_the_engine(policy: FairnessPolicy) -> None:
    clock = VirtualClock()
    e = Engine(clock, fairness=policy)
    e.handle(ReplicaAdded("r0", 100_000, 1, 16))
    inflight: list[str] = []
    want = set()
    for i in range(12):
        e.handle(SessionStart(f"s{i}", f"t{i % 3}", "a"))
        for a in e.handle(CallSubmitted(f"c{i}", f"s{i}", Prompt(100), 10)):
            if isinstance(a, Dispatch):
                inflight.append(a.call_id)
            if isinstance(a, Reject):
                want.discard(a.call_id)
                continue
        want.add(f"c{i}")
    done: set[str] = set()
    for _ in range(200):
        if not inflight:
            dl = e.next_deadline()
            if dl is None:
                break
            clock.advance_to(max(dl, clock.now()))
            acts = e.tick()
        else:
            cid = inflight.pop(0)
            done.add(cid)
            clock.advance(1.0)
            acts = e.handle(CallCompleted(cid, Usage(100, 0, 10)))
        inflight += [a.call_id for a in acts if isinstance(a, Dispatch)]
        want -= {a.call_id for a in acts if isinstance(a, Reject)}
    assert want <= done
