"""``WorkflowHints.home_replica``: a session adopted from another scheduler process keeps its replica."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest

from saga.clock import VirtualClock
from saga.scheduler.api import (
    Action,
    CallCompleted,
    CallSubmitted,
    Dispatch,
    Prompt,
    ReplicaHealth,
    SessionStart,
    Usage,
    WorkflowHints,
)
from saga.scheduler.engine import Engine

pytestmark = pytest.mark.unit


def _replica(acts: Sequence[Action]) -> str:
    ds = [a for a in acts if isinstance(a, Dispatch)]
    assert len(ds) == 1, acts
    return ds[0].replica_id


@pytest.mark.parametrize("home", ["r0", "r1", "r2", "r3"])
def test_first_call_goes_to_the_home_replica(make_engine: Callable[..., Engine], home: str) -> None:
    e = make_engine(replicas=4)
    e.handle(SessionStart("s", "t", "a", WorkflowHints(home_replica=home)))
    assert e.sessions["s"].home == home
    assert _replica(e.handle(CallSubmitted("c1", "s", Prompt(1600), 100))) == home


def test_unhealthy_home_is_ignored(make_engine: Callable[..., Engine]) -> None:
    e = make_engine(replicas=2)
    e.handle(ReplicaHealth("r1", healthy=False))
    e.handle(SessionStart("s", "t", "a", WorkflowHints(home_replica="r1")))
    assert e.sessions["s"].home is None
    assert _replica(e.handle(CallSubmitted("c1", "s", Prompt(100), 10))) == "r0"


def test_unknown_home_is_ignored(make_engine: Callable[..., Engine]) -> None:
    e = make_engine(replicas=2)
    e.handle(SessionStart("s", "t", "a", WorkflowHints(home_replica="gone")))
    assert e.sessions["s"].home is None
    assert _replica(e.handle(CallSubmitted("c1", "s", Prompt(100), 10))) in {"r0", "r1"}


def test_call_follows_a_move_made_by_another_process(
    make_engine: Callable[..., Engine], clock: VirtualClock
) -> None:
    e = make_engine(replicas=2)
    e.handle(SessionStart("s", "t", "a", WorkflowHints(home_replica="r0")))
    assert _replica(e.handle(CallSubmitted("c1", "s", Prompt(100), 10))) == "r0"
    clock.advance(1)
    e.handle(CallCompleted("c1", Usage(100, 0, 10), "stop"))
    # another scheduler process moved the session to r1 (read from the shared store)
    assert _replica(e.handle(CallSubmitted("c2", "s", Prompt(120), 10, home_replica="r1"))) == "r1"
    clock.advance(1)
    e.handle(CallCompleted("c2", Usage(120, 0, 10), "stop"))
    assert _replica(e.handle(CallSubmitted("c3", "s", Prompt(140), 10))) == "r1"
