"""Property tests: random event sequences against the engine, driven on virtual time.

Properties: no call is lost or dispatched twice while in flight; a pinned session's KV is
released (or re-pinned, or taken over by its next call) by the pin's deadline; the engine's
capacity invariants (slots, committed KV, pinned KV) always hold.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from saga.clock import VirtualClock
from saga.scheduler.api import (
    Action,
    CallCompleted,
    CallFailed,
    CallSubmitted,
    Defer,
    Dispatch,
    Pin,
    Prompt,
    Reject,
    Release,
    ReplicaAdded,
    ReplicaHealth,
    ReplicaRemoved,
    SessionEnd,
    SessionStart,
    Steal,
    ToolEnded,
    ToolStarted,
    Usage,
    WorkflowHints,
)
from saga.scheduler.engine import Engine
from saga.scheduler.policies import FAIRNESS_POLICIES, PLACEMENT_POLICIES
from saga.scheduler.settings import (
    BatchCapSettings,
    CostModel,
    EngineSettings,
    FairnessSettings,
    LaneSettings,
    RetentionSettings,
)

pytestmark = pytest.mark.unit

OPS = st.lists(
    st.tuples(
        st.sampled_from(["start", "submit", "complete", "fail", "tool", "advance", "end", "replica"]),
        st.integers(0, 10**6),
    ),
    min_size=5,
    max_size=120,
)


class Driver:
    def __init__(
        self, placement: str, fairness: str, mode: str, batch_cap: bool = False, lanes: bool = False
    ) -> None:
        self.clock = VirtualClock()
        rs = RetentionSettings(mode=mode, max_pinned_fraction=0.4)
        # with lanes: t0 is the tight class, and 3 replicas are enough for a lane to form
        factors = {"t0": 1.5, "t1": 3.0} if lanes else {}
        fs = FairnessSettings(
            overload_queue_per_replica=2.0, max_deferred_per_tenant=3, retry_after_s=1.0, slo_factors=factors
        )
        ls = LaneSettings(relative_load=1.0, max_reserved=0.5, min_work_s=0.0, hold_s=0.0)
        # memory-bound cost model: the decode-batch cap holds calls at a few running
        cost = CostModel(iteration_overhead_s=1e-3, decode_s_per_seq=1e-4, kv_read_s_per_token=1e-5)
        cost = cost if batch_cap else CostModel()
        bc = BatchCapSettings(enabled=batch_cap, max_hold_s=5.0)
        self.e = Engine(
            self.clock,
            EngineSettings(retention=rs, fairness=fs, cost=cost, batch_cap=bc, lanes=ls),
            placement=PLACEMENT_POLICIES[placement](1),
            fairness=FAIRNESS_POLICIES[fairness](),
        )
        self.inflight: dict[str, str] = {}  # call -> replica
        self.accepted: set[str] = set()
        self.completed: set[str] = set()
        self.pins: dict[str, float] = {}
        self.live: list[str] = []
        self.busy: dict[str, str] = {}  # session -> its outstanding call
        self.n = 0
        self.replicas = 0
        for _ in range(3):
            self.add_replica()

    def add_replica(self) -> None:
        self.apply(self.e.handle(ReplicaAdded(f"r{self.replicas}", 60_000, 3, 16)))
        self.replicas += 1

    def apply(self, acts: list[Action]) -> None:
        for a in acts:
            if isinstance(a, Dispatch):
                assert a.call_id not in self.inflight, f"{a.call_id} dispatched twice"
                assert a.call_id in self.accepted
                self.inflight[a.call_id] = a.replica_id
                sid = next((s for s, c in self.busy.items() if c == a.call_id), None)
                if sid is not None:
                    self.pins.pop(sid, None)  # the call takes over the pin
            elif isinstance(a, Reject):
                assert a.call_id in self.accepted
                assert a.call_id not in self.inflight
                self.accepted.discard(a.call_id)
                for s, c in list(self.busy.items()):
                    if c == a.call_id:
                        del self.busy[s]
            elif isinstance(a, Pin):
                assert a.until >= self.clock.now()
                assert a.until <= self.clock.now() + 300.0 + 1e-9
                self.pins[a.session_id] = a.until
            elif isinstance(a, Release):
                self.pins.pop(a.session_id, None)
            elif isinstance(a, Steal):
                assert a.call_id not in self.inflight
            else:
                assert isinstance(a, Defer)
        assert not self.e.check_invariants(), self.e.check_invariants()

    def advance(self, dt: float) -> None:
        target = self.clock.now() + dt
        while (dl := self.e.next_deadline()) is not None and dl <= target:
            self.clock.advance_to(max(dl, self.clock.now()))
            self.apply(self.e.tick())
            for sid, until in self.pins.items():
                assert until >= self.clock.now() - 1e-9, f"pin of {sid} outlived its deadline"
        self.clock.advance_to(target)
        for sid, until in self.pins.items():
            assert until >= self.clock.now() - 1e-9, f"pin of {sid} outlived its deadline"

    def step(self, op: str, x: int) -> None:
        e = self.e
        if op == "start":
            sid = f"s{self.n}"
            self.n += 1
            parent = self.live[x % len(self.live)] if self.live and x % 3 == 0 else None
            self.apply(e.handle(SessionStart(sid, f"t{x % 2}", "a", WorkflowHints(parent_session_id=parent))))
            self.live.append(sid)
        elif op == "submit" and self.live:
            idle = [s for s in self.live if s not in self.busy]
            if not idle:
                return
            sid = idle[x % len(idle)]
            cid = f"c{self.n}"
            self.n += 1
            tokens = 160 + (x % 40) * 160
            self.accepted.add(cid)
            self.busy[sid] = cid
            hashes = tuple(hash((sid, i)) for i in range(tokens // 16))
            self.apply(e.handle(CallSubmitted(cid, sid, Prompt(tokens, hashes, 16), 50)))
        elif op in ("complete", "fail") and self.inflight:
            cid = sorted(self.inflight)[x % len(self.inflight)]
            del self.inflight[cid]
            self.clock.advance(0.01)
            if op == "fail":
                self.apply(e.handle(CallFailed(cid, "boom", retryable=True)))
                return
            self.completed.add(cid)
            for s, c in list(self.busy.items()):
                if c == cid:
                    del self.busy[s]
            self.apply(e.handle(CallCompleted(cid, Usage(200, 100, 50), "tool_use")))
        elif op == "tool" and self.live:
            sid = self.live[x % len(self.live)]
            self.apply(e.handle(ToolStarted(sid, "bash")))
            self.advance((x % 50) / 10)
            self.apply(e.handle(ToolEnded(sid, "bash")))
        elif op == "advance":
            self.advance(float(x % 400))
        elif op == "end" and self.live:
            sid = self.live[x % len(self.live)]
            if sid in self.busy:
                return
            self.live.remove(sid)
            self.apply(e.handle(SessionEnd(sid)))
            self.pins.pop(sid, None)
        elif op == "replica":
            rid = f"r{x % self.replicas}"
            if rid not in e.replicas:
                self.add_replica()
            elif x % 3 == 0 and len(e.replicas) > 1:
                for cid, r in list(self.inflight.items()):
                    if r == rid:
                        del self.inflight[cid]  # the engine places them again
                self.apply(e.handle(ReplicaRemoved(rid)))
            else:
                self.apply(e.handle(ReplicaHealth(rid, healthy=x % 2 == 0)))

    def drain(self) -> None:
        for rid, r in list(self.e.replicas.items()):
            if not r.healthy:
                self.apply(self.e.handle(ReplicaHealth(rid, True)))
        for _ in range(10_000):
            if self.inflight:
                cid = sorted(self.inflight)[0]
                del self.inflight[cid]
                self.completed.add(cid)
                self.clock.advance(0.1)
                self.apply(self.e.handle(CallCompleted(cid, Usage(200, 100, 50), "end_turn")))
            elif (deadline := self.e.next_deadline()) is not None:
                self.advance(max(0.0, deadline - self.clock.now()) + 0.001)
            else:
                break


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    ops=OPS,
    placement=st.sampled_from(sorted(PLACEMENT_POLICIES)),
    fairness=st.sampled_from(sorted(FAIRNESS_POLICIES)),
    mode=st.sampled_from(["predictive", "fixed", "off"]),
    batch_cap=st.booleans(),
    lanes=st.booleans(),
)
def test_no_call_lost_pins_bounded_capacity_respected(
    ops: list[tuple[str, int]], placement: str, fairness: str, mode: str, batch_cap: bool, lanes: bool
) -> None:
    d = Driver(placement, fairness, mode, batch_cap, lanes)
    for op, x in ops:
        d.step(op, x)
    d.drain()
    assert d.accepted == d.completed, f"lost calls: {sorted(d.accepted - d.completed)}"
    assert not d.pins or all(u >= d.clock.now() for u in d.pins.values())
