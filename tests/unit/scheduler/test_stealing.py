"""Work stealing: idle replicas take queued calls when the cost model says it pays."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest
from placement_fakes import FirstReplica

from saga.clock import VirtualClock
from saga.scheduler.api import (
    CallCompleted,
    CallSubmitted,
    Defer,
    Dispatch,
    Prompt,
    ReplicaCache,
    SessionEnd,
    SessionStart,
    Steal,
    Usage,
)
from saga.scheduler.engine import Engine
from saga.scheduler.policy import PlacementBase, PlacementRequest, ReplicaView
from saga.scheduler.settings import EngineSettings, RetentionSettings, StealingSettings

pytestmark = pytest.mark.unit


def _hashes(p: int, n: int) -> tuple[int, ...]:
    return tuple(p * 1_000_000 + i for i in range(n))


def test_idle_replica_steals_a_queued_call(make_engine: Callable[..., Engine]) -> None:
    e = make_engine(replicas=2, slots=1, placement=FirstReplica())
    for s in ("a", "b"):
        e.handle(SessionStart(s, "t", "x"))
    e.handle(CallSubmitted("ca", "a", Prompt(160, _hashes(1, 10), 16), 10))
    acts = e.handle(CallSubmitted("cb", "b", Prompt(160, _hashes(2, 10), 16), 10))
    steals = [a for a in acts if isinstance(a, Steal)]
    assert len(steals) == 1
    assert steals[0].from_replica == "r0"
    assert steals[0].to_replica == "r1"
    d = [a for a in acts if isinstance(a, Dispatch)]
    assert d[-1].call_id == "cb"
    assert d[-1].replica_id == "r1"
    assert d[-1].reason == "steal"


def test_no_steal_when_losing_the_cache_costs_more(
    make_engine: Callable[..., Engine], clock: VirtualClock
) -> None:
    e = make_engine(replicas=2, slots=1, kv=2_000_000, placement=FirstReplica())
    big = _hashes(4, 20_000)  # 320k tokens cached on r0: ~27 s to recompute elsewhere
    e.handle(ReplicaCache("r0", stored=big))
    e.handle(ReplicaCache("r1", stored=()))
    for s in ("a", "b"):
        e.handle(SessionStart(s, "t", "x"))
    e.handle(CallSubmitted("ca", "a", Prompt(160, _hashes(1, 10), 16), 10))
    acts = e.handle(CallSubmitted("cb", "b", Prompt(320_016, (*big, 7), 16), 10))
    assert not any(isinstance(a, Steal) for a in acts)
    assert any(isinstance(a, Defer) for a in acts)
    clock.advance(1)
    done = e.handle(CallCompleted("ca", Usage(160, 0, 10)))
    assert any(isinstance(a, Dispatch) and a.call_id == "cb" and a.replica_id == "r0" for a in done)


def test_stealing_switch_off(make_engine: Callable[..., Engine]) -> None:
    st = EngineSettings(stealing=StealingSettings(enabled=False))
    e = make_engine(replicas=2, slots=1, placement=FirstReplica(), settings=st)
    for s in ("a", "b"):
        e.handle(SessionStart(s, "t", "x"))
    e.handle(CallSubmitted("ca", "a", Prompt(160), 10))
    acts = e.handle(CallSubmitted("cb", "b", Prompt(160), 10))
    assert [type(a) for a in acts] == [Defer]
    assert e.next_deadline() is None


def test_a_queue_held_by_the_kv_watermark_is_stolen_from(make_engine: Callable[..., Engine]) -> None:
    """r0 has 64 free slots but no KV for cb, so cb waits for ca (one running call), not for
    one of 64 slots: the modelled wait is call_s / 1, worth recomputing cb's 4k-token prefix
    (~0.4 s with the margin); a call_s / max_running model would call it 0.09 s and never steal."""
    e = make_engine(replicas=2, kv=10_000, slots=64, placement=FirstReplica())
    e.handle(ReplicaCache("r0", stored=_hashes(2, 250)))  # cb's prefix, cached on r0 only
    e.handle(ReplicaCache("r1", stored=()))
    for s in ("a", "b"):
        e.handle(SessionStart(s, "t", "x"))
    first = e.handle(CallSubmitted("ca", "a", Prompt(8000, _hashes(1, 500), 16), 10))
    assert [(type(a), a.replica_id) for a in first if isinstance(a, Dispatch)] == [(Dispatch, "r0")]
    acts = e.handle(CallSubmitted("cb", "b", Prompt(4000, _hashes(2, 250), 16), 10))
    steals = [a for a in acts if isinstance(a, Steal)]
    assert [(s.from_replica, s.to_replica) for s in steals] == [("r0", "r1")]
    assert any(isinstance(a, Dispatch) and a.call_id == "cb" and a.replica_id == "r1" for a in acts)


class ByTable(PlacementBase):
    """Test placement: a fixed replica per session."""

    name = "table"

    def __init__(self, table: dict[str, str]) -> None:
        self.table = table

    def select(self, request: PlacementRequest, replicas: Sequence[ReplicaView]) -> str | None:
        return self.table[request.session_id or ""]


def _thief_with_a_homed_session(make_engine: Callable[..., Engine], clock: VirtualClock, end: bool) -> Engine:
    """r1 served session h (a 60k-token context, not pinned), then r0 queues cb (40k tokens):
    cb fits r1's free KV only by evicting h's cached context."""
    st = EngineSettings(retention=RetentionSettings(enabled=False, mode="off"))
    e = make_engine(
        replicas=2, kv=100_000, slots=1, settings=st, placement=ByTable({"a": "r0", "b": "r0", "h": "r1"})
    )
    for s in ("a", "b", "h"):
        e.handle(SessionStart(s, "t", "x"))
    e.handle(CallSubmitted("ch", "h", Prompt(59_984, _hashes(3, 3749), 16), 16))
    clock.advance(1)
    e.handle(CallCompleted("ch", Usage(59_984, 0, 16)))
    if end:
        e.handle(SessionEnd("h"))
    e.handle(CallSubmitted("ca", "a", Prompt(160, _hashes(1, 10), 16), 10))
    return e


def test_no_steal_into_kv_a_live_homed_session_needs(
    make_engine: Callable[..., Engine], clock: VirtualClock
) -> None:
    e = _thief_with_a_homed_session(make_engine, clock, end=False)
    acts = e.handle(CallSubmitted("cb", "b", Prompt(40_000, _hashes(2, 2500), 16), 10))
    assert not any(isinstance(a, Steal) for a in acts)
    assert [type(a) for a in acts] == [Defer]
    assert e.check_invariants() == []


def test_kv_of_an_ended_session_is_lent_to_a_steal(
    make_engine: Callable[..., Engine], clock: VirtualClock
) -> None:
    e = _thief_with_a_homed_session(make_engine, clock, end=True)
    acts = e.handle(CallSubmitted("cb", "b", Prompt(40_000, _hashes(2, 2500), 16), 10))
    assert [(a.from_replica, a.to_replica) for a in acts if isinstance(a, Steal)] == [("r0", "r1")]


def test_a_session_homed_on_the_thief_gets_its_own_context_back(
    make_engine: Callable[..., Engine], clock: VirtualClock
) -> None:
    """h's next call, queued on r0, may return to r1 (which reports its blocks evicted, so the
    whole prompt is new there): the memory it needs is the context counted as h's own."""
    st = EngineSettings(retention=RetentionSettings(enabled=False, mode="off"))
    table = {"a": "r0", "h": "r1"}
    e = make_engine(replicas=2, kv=100_000, slots=1, settings=st, placement=ByTable(table))
    for s in ("a", "h"):
        e.handle(SessionStart(s, "t", "x"))
    ctx = _hashes(3, 3749)
    e.handle(CallSubmitted("ch", "h", Prompt(59_984, ctx, 16), 16))
    clock.advance(1)
    e.handle(CallCompleted("ch", Usage(59_984, 0, 16)))
    e.handle(ReplicaCache("r1", cleared=True))
    e.handle(CallSubmitted("ca", "a", Prompt(160, _hashes(1, 10), 16), 10))
    table["h"] = "r0"  # the placement sends h's next call to the busy r0
    acts = e.handle(CallSubmitted("ch2", "h", Prompt(64_000, (*ctx, 9), 16), 16))
    assert [(a.from_replica, a.to_replica) for a in acts if isinstance(a, Steal)] == [("r0", "r1")]
    assert e.check_invariants() == []
