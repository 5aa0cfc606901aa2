"""Conformance suite every StateStore passes (MemoryStore and RedisStore)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from saga.service.state.api import InvalidState, SessionBinding, StateStore, TenantUsage

pytestmark = pytest.mark.contract


def b(sid: str = "s1", replica: str | None = "r1", **kw: Any) -> SessionBinding:
    return SessionBinding(session_id=sid, tenant="acme", agent_type="swe", replica_id=replica, **kw)


async def test_is_a_state_store(store: StateStore) -> None:
    assert isinstance(store, StateStore)
    assert await store.ping()


async def test_create_read_update_delete(store: StateStore) -> None:
    assert await store.get_binding("s1") is None
    out = await store.bind(b(pinned_until=123.5, engine_session="e1"), expected_version=0)
    assert out.won
    assert out.binding is not None
    assert out.binding.version == 1
    assert out.binding.owner == "p1"
    got = await store.get_binding("s1")
    assert got == out.binding
    assert (got.replica_id, got.pinned_until, got.engine_session) == ("r1", 123.5, "e1")
    out2 = await store.bind(b(replica="r2"), expected_version=1)
    assert out2.won
    assert out2.binding is not None
    assert (out2.binding.version, out2.binding.replica_id) == (2, "r2")
    assert not await store.delete_binding("s1", expected_version=1)
    assert await store.delete_binding("s1", expected_version=2)
    assert await store.get_binding("s1") is None
    assert not await store.delete_binding("s1")


async def test_first_binder_wins_and_loser_adopts(store: StateStore) -> None:
    first = await store.bind(b(replica="r1"), expected_version=0)
    second = await store.bind(b(replica="r2"), expected_version=0)
    assert first.won
    assert not second.won
    assert second.binding == first.binding  # the loser sees what to adopt
    stale = await store.bind(b(replica="r3"), expected_version=5)
    assert not stale.won
    assert stale.binding is not None
    assert stale.binding.replica_id == "r1"


async def test_concurrent_binders_one_winner(store: StateStore) -> None:
    outs = await asyncio.gather(*(store.bind(b(replica=f"r{i}"), expected_version=0) for i in range(20)))
    winners = [o for o in outs if o.won]
    assert len(winners) == 1
    assert winners[0].binding is not None
    stored = await store.get_binding("s1")
    assert stored is not None
    assert stored.replica_id == winners[0].binding.replica_id
    assert all(o.binding == stored for o in outs)


async def test_unplaced_binding_and_listing(store: StateStore) -> None:
    await store.bind(b("a", None), expected_version=0)
    await store.bind(b("b", "r1"), expected_version=0)
    await store.bind(b("c", "r2"), expected_version=0)
    assert {x.session_id for x in await store.list_bindings()} == {"a", "b", "c"}
    assert [x.session_id for x in await store.list_bindings("r2")] == ["c"]
    got = await store.get_binding("a")
    assert got is not None
    assert got.replica_id is None


async def test_bad_input_is_rejected(store: StateStore) -> None:
    with pytest.raises(InvalidState):
        await store.bind(b(""), expected_version=0)
    with pytest.raises(InvalidState):
        await store.bind(b(), expected_version=-1)
    with pytest.raises(InvalidState):
        await store.add_usage("acme", service_s=-1.0)
    with pytest.raises(InvalidState):
        await store.add_usage("", service_s=1.0)
    with pytest.raises(InvalidState):
        await store.put_graph("swe", [1, 2])  # type: ignore[arg-type]  # deliberately not a document
    with pytest.raises(InvalidState):
        await store.heartbeat("p1", 0)


async def test_usage_accumulates_atomically(store: StateStore) -> None:
    assert await store.get_usage("acme") == TenantUsage("acme")
    await asyncio.gather(*(store.add_usage("acme", service_s=0.5) for _ in range(10)))
    after = await store.add_usage("acme", completed_tasks=2, task_time_s=30.0)
    assert after.attained_service_s == pytest.approx(5.0)
    assert (after.completed_tasks, after.task_time_s) == (2, 30.0)
    await store.add_usage("beta", service_s=1.0)
    every = await store.all_usage()
    assert set(every) == {"acme", "beta"}
    assert every["acme"] == after
    assert await store.get_usage("acme") == after


async def test_graph_versions(store: StateStore) -> None:
    assert await store.get_graph("swe") is None
    assert await store.graph_versions() == {}
    doc = {"nodes": [{"id": "n1", "tool": "pytest"}], "edges": []}
    assert await store.put_graph("swe", doc) == 1
    got = await store.get_graph("swe")
    assert got is not None
    assert (got.version, got.document) == (1, doc)
    got.document["nodes"].clear()  # callers cannot corrupt the stored copy
    again = await store.get_graph("swe")
    assert again is not None
    assert again.document == doc
    assert await store.put_graph("swe", {"v": 2}, expected_version=1) == 2
    assert await store.put_graph("swe", {"v": 3}, expected_version=1) == 2  # lost the race
    latest = await store.get_graph("swe")
    assert latest is not None
    assert latest.document == {"v": 2}
    assert await store.put_graph("web", {}, expected_version=0) == 1
    assert await store.graph_versions() == {"swe": 2, "web": 1}


async def test_delete_graph(store: StateStore) -> None:
    assert not await store.delete_graph("swe")  # absent
    assert await store.put_graph("swe", {"v": 1}) == 1
    assert await store.put_graph("swe", {"v": 2}) == 2
    assert await store.put_graph("web", {"w": 1}) == 1
    assert not await store.delete_graph("swe", expected_version=1)  # moved on meanwhile
    assert await store.get_graph("swe") is not None
    assert await store.delete_graph("swe", expected_version=2)
    assert await store.get_graph("swe") is None
    assert await store.graph_versions() == {"web": 1}  # pollers see the type go
    assert not await store.delete_graph("swe")
    # Absent again: a compare-and-set create works and numbering restarts.
    assert await store.put_graph("swe", {"v": 9}, expected_version=0) == 1
    assert await store.graph_versions() == {"swe": 1, "web": 1}
    assert await store.delete_graph("web")
    assert await store.graph_versions() == {"swe": 1}
    with pytest.raises(InvalidState):
        await store.delete_graph("")


async def test_heartbeats(store: StateStore) -> None:
    await store.heartbeat("p1", 30.0)
    await store.heartbeat("p2", 30.0)
    assert await store.live_processes() == ["p1", "p2"]
