"""Decode-batch cap and SRPT order of held calls (``scheduler/batchcap.py``), on virtual time."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest

from saga.clock import VirtualClock
from saga.graphs.api import RemainingWork, SessionPosition
from saga.scheduler.api import (
    Action,
    CallCompleted,
    CallSubmitted,
    Defer,
    Dispatch,
    InvalidInput,
    Prompt,
    ReplicaAdded,
    SessionStart,
    Usage,
    WorkflowHints,
)
from saga.scheduler.batchcap import decode_cap, srpt_key
from saga.scheduler.engine import Engine
from saga.scheduler.policy import QueuedCall
from saga.scheduler.priors import PriorPredictor
from saga.scheduler.settings import BatchCapSettings, CostModel, EngineSettings, StealingSettings

pytestmark = pytest.mark.unit

F, D, R = 8.5e-3, 3.2e-5, 1.53e-8  # the 70B H100x8 profile's iteration constants


def _tp(b: int, c: float) -> float:
    return b / (F + b * c)


def test_no_cap_while_the_overhead_dominates() -> None:
    # 40k-token contexts: c ~ 0.64 ms, f / c ~ 13: up to 13 calls holding one never pays
    for n in range(1, 14):
        assert decode_cap(n, 40_000, F, D, R, 0.1) == n


@pytest.mark.parametrize("ctx", [40_000, 200_000, 1_000_000])
@pytest.mark.parametrize("n", [2, 20, 64, 300])
def test_cap_keeps_throughput_and_the_latency_optimum(ctx: int, n: int) -> None:
    c = D + R * ctx
    b = decode_cap(n, ctx, F, D, R, 0.1)
    assert 1 <= b <= n
    assert _tp(b, c) >= 0.9 * _tp(n, c) - 1e-12  # at most 10% throughput lost
    assert b >= min(n, math.floor(math.sqrt(F * n / c)))  # never below the latency optimum


def test_knee_rule_is_the_smallest_batch_within_the_loss() -> None:
    c = D + R * 200_000
    for n in (10, 50, 200, 1000):
        b = decode_cap(n, 200_000, F, D, R, 0.05, latency_rule=False)
        assert _tp(b, c) >= 0.95 * _tp(n, c) - 1e-12
        if b > 1:
            assert _tp(b - 1, c) < 0.95 * _tp(n, c)
    assert decode_cap(1000, 200_000, F, D, R, 0.05, latency_rule=False) < 1000


def test_zero_loss_means_no_cap() -> None:
    assert decode_cap(500, 1_000_000, F, D, R, 0.0) == 500


def _qc(remaining: float, submitted: float = 0.0, deadline: float | None = None) -> QueuedCall:
    return QueuedCall("c", "s", "t", submitted, 0.0, deadline, 100, remaining, 0)


def test_srpt_key_orders_by_remaining_work_with_aging_and_deadlines() -> None:
    def key(q: QueuedCall, now: float) -> float:
        return srpt_key(q, now, 1.0, 1.0, 30.0, True)

    assert key(_qc(10.0), 0.0) < key(_qc(100.0), 0.0)
    # a long session's call held 25 s (aging 1) overtakes a fresh call of 80 s remaining
    assert key(_qc(100.0, submitted=-25.0), 0.0) < key(_qc(80.0), 0.0)
    # urgent but feasible: slack 5 s < remaining 100 s -> keyed by its slack
    assert key(_qc(100.0, deadline=105.0), 0.0) < key(_qc(10.0), 0.0)
    # already late: keeps its remaining-work key (no promotion)
    assert key(_qc(100.0, deadline=50.0), 0.0) > key(_qc(10.0), 0.0)
    # held past max_hold_s: before everything, oldest first
    assert key(_qc(1e6, submitted=-40.0), 0.0) < key(_qc(1e6, submitted=-31.0), 0.0) < key(_qc(0.0), 0.0)


class ByType(PriorPredictor):
    """Remaining work by agent type (``short``: 10 s, anything else: 1000 s)."""

    def remaining(self, pos: SessionPosition) -> RemainingWork:
        t = 10.0 if pos.agent_type == "short" else 1000.0
        return RemainingWork(1.0, 0.0, 0.0, t, 1.0)


# memory-bound decode: one running call at a time for up to ~10 waiting (f / c = 0.1)
MEMORY_BOUND = CostModel(iteration_overhead_s=1e-3, decode_s_per_seq=0.0, kv_read_s_per_token=1e-6)


def _engine(clock: VirtualClock, max_hold_s: float = 30.0, aging: float = 1.0) -> Engine:
    cap = BatchCapSettings(enabled=True, max_hold_s=max_hold_s, aging=aging)
    st = EngineSettings(cost=MEMORY_BOUND, batch_cap=cap, stealing=StealingSettings(enabled=False))
    e = Engine(clock, st, predictor=ByType())
    e.handle(ReplicaAdded("r0", 10_000_000, 64, 16))
    return e


def _dispatched(acts: list[Action]) -> list[str]:
    return [a.call_id for a in acts if isinstance(a, Dispatch)]


def test_held_calls_leave_shortest_remaining_first_and_the_cap_holds(clock: VirtualClock) -> None:
    e = _engine(clock)
    e.handle(SessionStart("busy", "t", "long"))
    assert _dispatched(e.handle(CallSubmitted("c0", "busy", Prompt(10_000), 10))) == ["c0"]
    order = [("l1", "long"), ("s1", "short"), ("l2", "long"), ("s2", "short")]
    for sid, typ in order:
        e.handle(SessionStart(sid, "t", typ))
        acts = e.handle(CallSubmitted(f"c-{sid}", sid, Prompt(10_000), 10))
        assert isinstance(acts[-1], Defer)  # the cap (1 running) holds it
    r = e.replicas["r0"]
    assert len(r.inflight) == 1
    seen: list[str] = []
    running = "c0"
    for _ in range(4):
        clock.advance(0.1)
        got = _dispatched(e.handle(CallCompleted(running, Usage(10_000, 0, 10))))
        assert len(got) == 1
        assert len(r.inflight) == 1
        running = got[0]
        seen.append(running)
    assert seen == ["c-s1", "c-s2", "c-l1", "c-l2"]
    assert e.queued_calls == 0


def test_no_call_held_past_the_bound(clock: VirtualClock) -> None:
    """Short sessions keep arriving; the long session's call still leaves once held max_hold_s."""
    e = _engine(clock, max_hold_s=5.0, aging=0.0)
    e.handle(SessionStart("busy", "t", "short"))
    e.handle(CallSubmitted("c0", "busy", Prompt(10_000), 10))
    e.handle(SessionStart("long", "t", "long"))
    e.handle(CallSubmitted("c-long", "long", Prompt(10_000), 10))
    running, n, t_long = "c0", 0, None
    while t_long is None:
        n += 1
        e.handle(SessionStart(f"s{n}", "t", "short"))
        e.handle(CallSubmitted(f"c{n}", f"s{n}", Prompt(10_000), 10))
        clock.advance(1.0)
        got = _dispatched(e.handle(CallCompleted(running, Usage(10_000, 0, 10))))
        assert len(got) == 1
        running = got[0]
        if running == "c-long":
            t_long = clock.now()
    assert n >= 3  # short calls went first while the bound allowed
    assert t_long <= 5.0 + 1.0  # held at most max_hold_s, plus the completion it waited for


def test_no_call_lost_under_the_cap(clock: VirtualClock) -> None:
    e = _engine(clock)
    submitted = []
    for i in range(12):
        typ = "short" if i % 3 else "long"
        deadline = WorkflowHints(deadline_s=50.0 + i)
        e.handle(SessionStart(f"s{i}", "t", typ, deadline))
        submitted.append(f"c{i}")
        e.handle(CallSubmitted(f"c{i}", f"s{i}", Prompt(10_000), 10))
    running = list(e.replicas["r0"].inflight)
    done: list[str] = []
    while running:
        clock.advance(0.5)
        c = running.pop(0)
        done.append(c)
        running += _dispatched(e.handle(CallCompleted(c, Usage(10_000, 0, 10))))
    assert sorted(done) == sorted(submitted)
    assert len(set(done)) == len(done)


def test_off_by_default_and_validated(make_engine: Callable[..., Engine]) -> None:
    assert EngineSettings().batch_cap.enabled is False
    e = make_engine(replicas=1, slots=64)
    assert e.replicas["r0"].batch_cap is None
    with pytest.raises(InvalidInput, match=r"batch_cap\.max_throughput_loss"):
        Engine(VirtualClock(), EngineSettings(batch_cap=BatchCapSettings(max_throughput_loss=1.0)))
    with pytest.raises(InvalidInput, match=r"batch_cap\.order"):
        Engine(VirtualClock(), EngineSettings(batch_cap=BatchCapSettings(order="lifo")))
