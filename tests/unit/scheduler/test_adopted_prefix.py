"""An adopted home (``WorkflowHints.home_replica`` / ``CallSubmitted.home_replica``) counts the
session's prompt as cached there, so load on the home does not make this engine move the session."""

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
    SessionStart,
    Usage,
    WorkflowHints,
)
from saga.scheduler.engine import Engine

pytestmark = pytest.mark.unit

SESSION_PROMPT = Prompt(8000, tuple(range(900_001, 900_501)), 16)  # 500 blocks of 16 tokens


def _replica(acts: Sequence[Action]) -> str:
    ds = [a for a in acts if isinstance(a, Dispatch)]
    assert len(ds) == 1, acts
    return ds[0].replica_id


def test_session_start_adoption_keeps_the_session_home_under_load(make_engine: Callable[..., Engine]) -> None:
    e = make_engine(replicas=2, slots=4)
    _load_on_r0(e)
    e.handle(SessionStart("s", "t", "a", WorkflowHints(home_replica="r0")))
    # r0 runs two other calls, r1 none: without the adopted prefix r1 looks cheaper
    assert _replica(e.handle(CallSubmitted("c1", "s", SESSION_PROMPT, 100))) == "r0"


def test_call_hint_adoption_keeps_the_session_home_under_load(
    make_engine: Callable[..., Engine], clock: VirtualClock
) -> None:
    e = make_engine(replicas=2, slots=4)
    e.handle(SessionStart("s", "t", "a", WorkflowHints(home_replica="r1")))
    assert _replica(e.handle(CallSubmitted("c1", "s", Prompt(100, (1,), 16), 10))) == "r1"
    clock.advance(1)
    e.handle(CallCompleted("c1", Usage(100, 0, 10), "stop"))
    _load_on_r0(e)
    # another process moved the session to r0 and ran its long context there
    assert _replica(e.handle(CallSubmitted("c2", "s", SESSION_PROMPT, 100, home_replica="r0"))) == "r0"


def _load_on_r0(e: Engine) -> None:
    """Two running calls of other sessions (4000-token prompts, no shared prefix) on r0."""
    for j in range(2):
        e.handle(SessionStart(f"o{j}", "t", "a", WorkflowHints(home_replica="r0")))
        e.handle(
            CallSubmitted(
                f"oc{j}", f"o{j}", Prompt(4000, tuple(range(10_000 * j + 1, 10_000 * j + 251)), 16), 500
            )
        )
        assert e.sessions[f"o{j}"].home == "r0"
