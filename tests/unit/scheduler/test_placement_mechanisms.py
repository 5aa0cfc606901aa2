"""Session affinity bounded by load, shared-prefix accounting, sibling batching, prefix awareness."""

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
    ReplicaCache,
    ReplicaHealth,
    SessionStart,
    Usage,
    WorkflowHints,
)
from saga.scheduler.engine import Engine
from saga.scheduler.settings import EngineSettings, StealingSettings
from saga.scheduler.state import SharedTokens, sample_hashes

pytestmark = pytest.mark.unit


def _dispatch(acts: Sequence[Action]) -> Dispatch:
    ds = [a for a in acts if isinstance(a, Dispatch)]
    assert len(ds) == 1, acts
    return ds[0]


def _hashes(prefix: int, n: int) -> tuple[int, ...]:
    return tuple(prefix * 1_000_000 + i for i in range(n))


def test_affinity_keeps_session_on_its_replica(
    make_engine: Callable[..., Engine], clock: VirtualClock
) -> None:
    e = make_engine(replicas=4)
    e.handle(SessionStart("s", "t", "a"))
    d1 = _dispatch(e.handle(CallSubmitted("c1", "s", Prompt(1600, _hashes(1, 100), 16), 100)))
    clock.advance(1)
    e.handle(CallCompleted("c1", Usage(1600, 0, 100), "tool_use"))
    # load the other replicas' neighbours: affinity must still win
    for i in range(3):
        e.handle(SessionStart(f"o{i}", "t", "a"))
        e.handle(CallSubmitted(f"x{i}", f"o{i}", Prompt(100), 10))
    clock.advance(1)
    d2 = _dispatch(e.handle(CallSubmitted("c2", "s", Prompt(2000, _hashes(1, 120), 16), 100)))
    assert d2.replica_id == d1.replica_id
    assert d2.reason == "affinity"
    assert d2.engine_session == "s"


def test_affinity_is_bounded_by_load(make_engine: Callable[..., Engine]) -> None:
    e = make_engine(replicas=2, slots=2, settings=EngineSettings(stealing=StealingSettings(enabled=False)))
    e.handle(SessionStart("s", "t", "a"))
    d1 = _dispatch(e.handle(CallSubmitted("c1", "s", Prompt(320, _hashes(1, 20), 16), 10)))
    e.handle(CallCompleted("c1", Usage(320, 0, 10), "tool_use"))
    home = d1.replica_id
    other = "r1" if home == "r0" else "r0"
    # fill the home replica's slots and queue with other sessions' calls
    e.handle(ReplicaHealth(other, False))
    for i in range(4):
        e.handle(SessionStart(f"o{i}", "t", "a"))
        e.handle(CallSubmitted(f"x{i}", f"o{i}", Prompt(320), 10))
    e.handle(ReplicaHealth(other, True))
    assert e.replicas[home].load >= 1.0
    d2 = _dispatch(e.handle(CallSubmitted("c2", "s", Prompt(352, _hashes(1, 22), 16), 10)))
    assert d2.replica_id == other  # waiting behind a full replica costs more than 320 tokens
    assert d2.reason == "cost"


def test_shared_prefixes_are_counted_once() -> None:
    st = SharedTokens()
    shared = _hashes(7, 640)  # 10,240 tokens at 16 tokens/block
    a = shared + _hashes(1, 64)
    b = shared + _hashes(2, 64)
    ha, unit = sample_hashes(a, 16, 1024)
    hb, _ = sample_hashes(b, 16, 1024)
    st.put("a", ha, unit, len(a) * 16)
    st.put("b", hb, unit, len(b) * 16)
    total_contexts = (len(a) + len(b)) * 16
    assert st.total < total_contexts
    assert st.total <= (640 + 64 + 64) * 16 + 2 * unit  # one unit of slack per item (sampling)
    assert st.extra_for(hb, unit, len(b) * 16) <= 64 * 16 + unit
    st.remove("a")
    st.remove("b")
    assert st.total == 0


def test_engine_commits_shared_prefix_once(make_engine: Callable[..., Engine]) -> None:
    e = make_engine(replicas=1, kv=1_000_000, slots=8)
    shared = _hashes(9, 1000)  # 16k shared tokens
    for i in range(4):
        e.handle(SessionStart(f"s{i}", "t", "a"))
        e.handle(
            CallSubmitted(f"c{i}", f"s{i}", Prompt(16_000 + 1600, shared + _hashes(i + 1, 100), 16), 100)
        )
    r = e.replicas["r0"]
    assert len(r.inflight) == 4
    assert r.committed_tokens < 2 * (16_000 + 1600 + 100)  # not 4x the contexts


def test_subagents_batch_on_parent_replica(make_engine: Callable[..., Engine], clock: VirtualClock) -> None:
    e = make_engine(replicas=4, slots=8)
    e.handle(SessionStart("p", "t", "a"))
    dp = _dispatch(e.handle(CallSubmitted("p1", "p", Prompt(1600, _hashes(3, 100), 16), 50)))
    clock.advance(1)
    e.handle(CallCompleted("p1", Usage(1600, 0, 50), "tool_use"))
    for k in range(3):
        e.handle(SessionStart(f"sub{k}", "t", "a", WorkflowHints(parent_session_id="p")))
        d = _dispatch(e.handle(CallSubmitted(f"k{k}", f"sub{k}", Prompt(800, _hashes(3, 50), 16), 50)))
        assert d.replica_id == dp.replica_id
        assert d.reason in ("batch", "affinity")


def test_new_session_goes_where_its_prefix_is_cached(make_engine: Callable[..., Engine]) -> None:
    e = make_engine(replicas=3, kv=1_000_000)
    prefix = _hashes(5, 2000)  # 32k tokens cached on r2 only
    e.handle(ReplicaCache("r2", stored=prefix))
    e.handle(SessionStart("s", "t", "a"))
    d = _dispatch(e.handle(CallSubmitted("c", "s", Prompt(33_000, prefix + _hashes(6, 60), 16), 10)))
    assert d.replica_id == "r2"
