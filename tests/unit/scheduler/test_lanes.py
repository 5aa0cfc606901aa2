"""SLO lanes: replicas kept for the tight-deadline class, sized from its measured work share."""

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
    InvalidInput,
    Prompt,
    ReplicaHealth,
    SessionEnd,
    SessionStart,
    Steal,
    Usage,
    WorkflowHints,
)
from saga.scheduler.engine import Engine
from saga.scheduler.lanes import SloLanes
from saga.scheduler.settings import CostModel, EngineSettings, FairnessSettings, LaneSettings
from saga.scheduler.state import ReplicaState

pytestmark = pytest.mark.unit

FACTORS = {"inter": 1.5, "batch": 3.0}


def _lanes(**kw: float) -> SloLanes:
    return SloLanes(LaneSettings(min_work_s=0.0, hold_s=0.0, **kw), CostModel())  # type: ignore[arg-type]


def _fill(lanes: SloLanes, tight_s: float, other_s: float, now: float = 0.0) -> None:
    lanes.observe(True, tight_s, now)
    lanes.observe(False, other_s, now)


def test_size_follows_the_share_and_the_reserve_bound() -> None:
    ln = _lanes()
    assert ln.target(64, 0) == 0  # nothing measured yet
    _fill(ln, 1.0, 99.0)  # s = 0.01
    assert ln.target(64, 0) == 2  # ceil(0.01 x 64 / 0.5)
    assert ln.target(16, 0) == 0  # one replica is 6.25% of 16 > 1% + 5% reserve
    ln2 = _lanes()
    _fill(ln2, 1.0, 0.0)  # one class only
    assert ln2.target(64, 0) == 0
    ln3 = _lanes()
    _fill(ln3, 0.0, 1.0)
    assert ln3.target(64, 0) == 0


def test_a_large_share_gets_a_capped_lane_only_when_allowed() -> None:
    ln = _lanes(allow_capped=True)
    _fill(ln, 30.0, 70.0)  # s = 0.3: 39 replicas wanted, (0.3 + 0.05) x 64 = 22 allowed
    assert ln.target(64, 0) == 22
    ln = _lanes()
    _fill(ln, 30.0, 70.0)
    assert ln.target(64, 0) == 0
    assert ln.target(64, 22) == 0  # capped even at 0.8 x the share: an existing lane goes


def test_a_lane_near_the_cap_is_kept_with_a_margin() -> None:
    ln = _lanes()
    _fill(ln, 4.4, 95.6)  # s = 0.044: 6 wanted, floor(0.094 x 64) = 6 allowed
    assert ln.target(64, 0) == 6
    ln = _lanes()
    _fill(ln, 4.2, 95.8)  # s = 0.042: 6 wanted, floor(0.092 x 64) = 5 allowed
    assert ln.target(64, 0) == 0  # no new lane
    assert ln.target(64, 6) == 5  # an existing one stays, capped: at 0.8 x the share it would fit


def test_shrinking_needs_a_margin() -> None:
    ln = _lanes()
    _fill(ln, 1.0, 99.0)  # 2 replicas
    assert ln.target(64, 0) == 2
    ln2 = _lanes()
    _fill(ln2, 0.7, 99.3)  # 1 replica wanted from scratch; 1.25 x share still wants 2
    assert ln2.target(64, 0) == 1
    assert ln2.target(64, 2) == 2
    ln3 = _lanes()
    _fill(ln3, 0.3, 99.7)
    assert ln3.target(64, 2) == 1


def test_the_share_decays_with_its_half_life() -> None:
    ln = _lanes(half_life_s=10.0)
    ln.observe(True, 100.0, 0.0)
    ln.observe(False, 100.0, 100.0)  # the tight work is 10 half-lives old
    s = ln.share()
    assert s is not None
    assert s < 0.001


def test_no_lane_before_min_work() -> None:
    ln = SloLanes(LaneSettings(min_work_s=50.0), CostModel())
    _fill(ln, 1.0, 9.0)
    assert ln.share() is None
    assert ln.target(8, 0) == 0
    _fill(ln, 5.0, 45.0)
    assert ln.share() == pytest.approx(0.1)


def test_restrict_never_leaves_a_call_without_replicas() -> None:
    ln = _lanes(max_reserved=0.5)
    _fill(ln, 1.0, 9.0)
    rs = [ReplicaState(f"r{i}", 100_000, 4, 16) for i in range(2)]
    assert ln.members(rs, 0.0) == {"r0"}
    assert [r.replica_id for r in ln.restrict(rs, True, rs, 0.0)] == ["r0"]
    assert [r.replica_id for r in ln.restrict(rs, False, rs, 0.0)] == ["r1"]
    only_r1 = rs[1:]  # e.g. r0 cannot hold the call's KV
    assert [r.replica_id for r in ln.restrict(only_r1, True, rs, 0.0)] == ["r1"]


def test_a_lane_lives_from_a_missed_deadline_for_hold_s() -> None:
    ln = SloLanes(LaneSettings(min_work_s=0.0, max_reserved=0.5, hold_s=100.0), CostModel())
    _fill(ln, 1.0, 9.0)
    rs = [ReplicaState(f"r{i}", 100_000, 4, 16) for i in range(2)]
    assert ln.members(rs, 10.0) == frozenset()  # no tight task missed: no lane
    ln.note_miss(20.0)
    assert ln.members(rs, 20.0) == {"r0"}
    assert ln.members(rs, 120.0) == {"r0"}
    assert ln.members(rs, 120.5) == frozenset()  # 100 s without a miss
    ln.note_miss(130.0)
    assert ln.members(rs, 130.0) == {"r0"}


def test_bad_lane_settings_are_refused() -> None:
    for bad in (
        LaneSettings(max_factor=0.5),
        LaneSettings(relative_load=0.0),
        LaneSettings(relative_load=1.5),
        LaneSettings(max_reserved=1.0),
        LaneSettings(half_life_s=0.0),
    ):
        with pytest.raises(InvalidInput, match=r"settings\.lanes"):
            EngineSettings(lanes=bad).validate()


# ------------------------------------------------------------------ in the engine


def _settings(enabled: bool = True, hold_s: float = 0.0) -> EngineSettings:
    return EngineSettings(
        fairness=FairnessSettings(slo_factors=dict(FACTORS)),
        lanes=LaneSettings(enabled=enabled, max_reserved=0.5, min_work_s=0.0, hold_s=hold_s),
    )


def _warm(e: Engine, clock: VirtualClock) -> None:
    """Nine batch calls and one interactive call of one size: the tight share is 0.1."""
    for i, tenant in enumerate(["batch"] * 9 + ["inter"]):
        sid = f"w{i}"
        e.handle(SessionStart(sid, tenant, "x"))
        e.handle(CallSubmitted(f"wc{i}", sid, Prompt(1000), 100))
        clock.advance(1)
        e.handle(CallCompleted(f"wc{i}", Usage(1000, 0, 100)))
        e.handle(SessionEnd(sid))


def _warmed(
    make_engine: Callable[..., Engine],
    clock: VirtualClock,
    replicas: int,
    enabled: bool = True,
    hold_s: float = 0.0,
) -> Engine:
    """An engine of ``replicas`` one-slot replicas, placing on the first, after ``_warm``."""
    st = _settings(enabled=enabled, hold_s=hold_s)
    e = make_engine(replicas=replicas, slots=1, placement=FirstReplica(), settings=st)
    _warm(e, clock)
    return e


def _dispatched(acts: Sequence[object]) -> dict[str, str]:
    return {a.call_id: a.replica_id for a in acts if isinstance(a, Dispatch)}


def test_tight_calls_run_in_the_lane_and_others_stay_out(
    make_engine: Callable[..., Engine], clock: VirtualClock
) -> None:
    e = _warmed(make_engine, clock, 2)
    assert e.lane_replicas == {"r0"}
    e.handle(SessionStart("b", "batch", "x"))
    e.handle(SessionStart("i", "inter", "x"))
    assert _dispatched(e.handle(CallSubmitted("b1", "b", Prompt(500), 10))) == {"b1": "r1"}
    assert _dispatched(e.handle(CallSubmitted("i1", "i", Prompt(500), 10))) == {"i1": "r0"}
    clock.advance(1)
    e.handle(CallCompleted("i1", Usage(500, 0, 10)))
    e.handle(SessionStart("b2s", "batch", "x"))
    acts = e.handle(CallSubmitted("b2", "b2s", Prompt(500), 10))  # r1 is busy, r0 idle
    assert any(isinstance(a, Defer) for a in acts)
    assert not any(isinstance(a, Steal) for a in acts)  # the lane does not steal batch work
    assert e.check_invariants() == []


def test_without_lanes_the_idle_replica_steals(
    make_engine: Callable[..., Engine], clock: VirtualClock
) -> None:
    e = _warmed(make_engine, clock, 2, enabled=False)
    assert e.lane_replicas == frozenset()
    e.handle(SessionStart("b", "batch", "x"))
    e.handle(SessionStart("b2s", "batch", "x"))
    e.handle(CallSubmitted("b1", "b", Prompt(500), 10))
    acts = e.handle(CallSubmitted("b2", "b2s", Prompt(500), 10))
    assert any(isinstance(a, Steal) for a in acts)


def test_a_lane_replica_going_down_is_replaced(
    make_engine: Callable[..., Engine], clock: VirtualClock
) -> None:
    e = _warmed(make_engine, clock, 3)
    assert e.lane_replicas == {"r0"}
    e.handle(ReplicaHealth("r0", False))
    assert e.lane_replicas == {"r1"}
    e.handle(SessionStart("i", "inter", "x"))
    assert _dispatched(e.handle(CallSubmitted("i1", "i", Prompt(500), 10))) == {"i1": "r1"}
    assert e.check_invariants() == []


def test_only_a_tight_task_past_its_deadline_opens_the_lane(
    make_engine: Callable[..., Engine], clock: VirtualClock
) -> None:
    e = _warmed(make_engine, clock, 2, hold_s=3600.0)
    assert e.lane_replicas == frozenset()  # the warm-up sessions had no deadline
    for tenant, sid in (("batch", "late-batch"), ("inter", "on-time")):
        e.handle(SessionStart(sid, tenant, "x", WorkflowHints(deadline_s=10.0)))
    clock.advance(5)
    e.handle(SessionEnd("on-time"))
    clock.advance(10)
    e.handle(SessionEnd("late-batch"))  # late, but not of the tight class
    assert e.lane_replicas == frozenset()
    e.handle(SessionStart("late", "inter", "x", WorkflowHints(deadline_s=10.0)))
    clock.advance(11)
    e.handle(SessionEnd("late"))
    assert e.lane_replicas == {"r0"}
    clock.advance(3601)
    assert e.lane_replicas == frozenset()


def test_one_class_gets_no_lane(make_engine: Callable[..., Engine], clock: VirtualClock) -> None:
    st = EngineSettings(lanes=LaneSettings(max_reserved=0.5, min_work_s=0.0, hold_s=0.0))  # all at 1.5
    e = make_engine(replicas=2, slots=1, placement=FirstReplica(), settings=st)
    _warm(e, clock)
    assert e.lane_replicas == frozenset()
