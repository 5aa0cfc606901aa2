"""MemoryStore specifics on an injected wall clock: binding TTL, sweep, closed store."""

from __future__ import annotations

import pytest

from saga.service.state.api import InvalidState, SessionBinding
from saga.service.state.memory import MemoryStore

pytestmark = pytest.mark.unit


def b(sid: str) -> SessionBinding:
    return SessionBinding(session_id=sid, tenant="t", agent_type="a", replica_id="r1")


async def test_binding_expires_after_ttl_without_writes() -> None:
    now = [0.0]
    s = MemoryStore(binding_ttl_s=10.0, wall=lambda: now[0])
    out = await s.bind(b("s1"), expected_version=0)
    now[0] = 9.0
    out2 = await s.bind(b("s1"), expected_version=1)  # a write refreshes the TTL
    assert out.won
    assert out2.won
    now[0] = 18.0
    assert await s.get_binding("s1") is not None
    now[0] = 19.5
    assert await s.get_binding("s1") is None
    # an expired binding counts as absent for a create
    assert (await s.bind(b("s1"), expected_version=0)).won


async def test_sweep_bounds_memory_without_reads() -> None:
    now = [0.0]
    s = MemoryStore(binding_ttl_s=1.0, wall=lambda: now[0], sweep_every=4)
    for i in range(3):
        await s.bind(b(f"old{i}"), expected_version=0)
    now[0] = 5.0
    await s.bind(b("new"), expected_version=0)  # 4th write sweeps
    assert len(s._bindings) == 1


async def test_heartbeat_expiry() -> None:
    now = [0.0]
    s = MemoryStore(wall=lambda: now[0])
    await s.heartbeat("p1", 5.0)
    await s.heartbeat("p2", 50.0)
    now[0] = 10.0
    assert await s.live_processes() == ["p2"]


async def test_closed_store_refuses() -> None:
    s = MemoryStore()
    await s.close()
    assert not await s.ping()
    with pytest.raises(InvalidState, match="closed"):
        await s.get_binding("x")


def test_bad_ttl() -> None:
    with pytest.raises(ValueError, match="binding_ttl_s"):
        MemoryStore(binding_ttl_s=0)
