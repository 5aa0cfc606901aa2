"""Conformance suite every placement policy passes (``saga.scheduler.policy.PlacementPolicy``)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from saga.clock import VirtualClock
from saga.scheduler.api import (
    CallCompleted,
    CallSubmitted,
    Dispatch,
    Prompt,
    ReplicaAdded,
    SessionStart,
    Usage,
)
from saga.scheduler.engine import Engine
from saga.scheduler.policies import PLACEMENT_POLICIES
from saga.scheduler.policy import PlacementPolicy, PlacementRequest
from saga.scheduler.state import ReplicaState

pytestmark = pytest.mark.contract

NAMES = sorted(PLACEMENT_POLICIES)


def _replicas(n: int) -> list[ReplicaState]:
    return [ReplicaState(f"r{i}", 100_000, 8, 16) for i in range(n)]


def _req(i: int, home: str | None = None) -> PlacementRequest:
    hashes = tuple(range(i * 100, i * 100 + 10))
    return PlacementRequest(
        call_id=f"c{i}",
        session_id=f"s{i}",
        tenant="t",
        agent_type="a",
        prompt_tokens=160,
        max_new_tokens=10,
        block_hashes=hashes,
        block_size=16,
        home=home,
        routing_key=f"s{i}",
    )


@pytest.fixture(params=NAMES)
def policy(request: pytest.FixtureRequest) -> PlacementPolicy:
    factory: Callable[[int], PlacementPolicy] = PLACEMENT_POLICIES[request.param]
    return factory(0)


def test_has_a_name(policy: PlacementPolicy) -> None:
    assert isinstance(policy.name, str)
    assert policy.name


def test_no_replica_is_none_not_an_exception(policy: PlacementPolicy) -> None:
    assert policy.select(_req(0), []) is None


def test_picks_only_among_the_eligible(policy: PlacementPolicy) -> None:
    reps = _replicas(5)
    for i in range(50):
        sub = reps[i % 3 : i % 3 + 2]
        rid = policy.select(_req(i), sub)
        assert rid in {r.replica_id for r in sub}
        assert rid is not None
        policy.on_dispatch(_req(i), rid)


def test_single_replica_is_chosen(policy: PlacementPolicy) -> None:
    (r,) = _replicas(1)
    assert policy.select(_req(1), [r]) == "r0"


def test_deterministic_for_a_seed() -> None:
    for name in NAMES:
        picks = []
        for _ in range(2):
            p = PLACEMENT_POLICIES[name](7)
            reps = _replicas(4)
            seq = []
            for i in range(20):
                rid = p.select(_req(i), reps)
                assert rid is not None
                p.on_dispatch(_req(i), rid)
                seq.append(rid)
            picks.append(seq)
        assert picks[0] == picks[1], name


def test_replica_removal_is_tolerated(policy: PlacementPolicy) -> None:
    reps = _replicas(3)
    for i in range(5):
        rid = policy.select(_req(i), reps)
        assert rid is not None
        policy.on_dispatch(_req(i), rid)
    policy.on_replica_removed("r1")
    rest = [r for r in reps if r.replica_id != "r1"]
    for i in range(5):
        assert policy.select(_req(i, home="r1"), rest) in {"r0", "r2"}


def test_every_call_dispatched_exactly_once_through_the_engine(policy: PlacementPolicy) -> None:
    clock = VirtualClock()
    e = Engine(clock, placement=policy)
    for i in range(3):
        e.handle(ReplicaAdded(f"r{i}", 50_000, 2, 16))
    pending: dict[str, str] = {}
    seen: list[str] = []
    for i in range(30):
        e.handle(SessionStart(f"s{i}", "t", "a"))
        for a in e.handle(CallSubmitted(f"c{i}", f"s{i}", Prompt(160, tuple(range(i, i + 10)), 16), 10)):
            if isinstance(a, Dispatch):
                seen.append(a.call_id)
                pending[a.call_id] = a.replica_id
    while pending:
        cid = sorted(pending)[0]
        pending.pop(cid)
        clock.advance(0.5)
        for a in e.handle(CallCompleted(cid, Usage(160, 0, 10))) + e.tick():
            if isinstance(a, Dispatch):
                seen.append(a.call_id)
                pending[a.call_id] = a.replica_id
    assert sorted(seen) == sorted(f"c{i}" for i in range(30))
    assert not e.check_invariants()
