"""RedisStore against a real redis-server: races between processes' clients, outages."""

from __future__ import annotations

import asyncio
import logging

import pytest
import redis.asyncio as aioredis

from saga.service.state.api import InvalidState, SessionBinding, StateUnavailable
from saga.service.state.redis_server import RedisServer
from saga.service.state.redis_store import RedisStore

pytestmark = pytest.mark.integration


def b(sid: str, replica: str | None) -> SessionBinding:
    return SessionBinding(session_id=sid, tenant="acme", agent_type="swe", replica_id=replica)


async def test_two_clients_racing_get_one_winner(redis_server: RedisServer) -> None:
    a = RedisStore(redis_server.url, process_id="sched-a")
    c = RedisStore(redis_server.url, process_id="sched-b")
    try:
        for i in range(50):
            sid = f"s{i}"
            oa, oc = await asyncio.gather(
                a.bind(b(sid, "r-a"), expected_version=0), c.bind(b(sid, "r-b"), expected_version=0)
            )
            assert oa.won != oc.won
            assert oa.binding == oc.binding  # the loser adopts the winner's binding
            winner = oa if oa.won else oc
            assert winner.binding is not None
            assert winner.binding.owner == ("sched-a" if oa.won else "sched-b")
            # whichever process gets the session's next call sees the same replica
            ga, gc = await a.get_binding(sid), await c.get_binding(sid)
            assert ga == gc == winner.binding
        # a rebind by one process is a CAS on the version both read
        cur = await a.get_binding("s0")
        assert cur is not None
        moved, late = await asyncio.gather(
            a.bind(b("s0", "r-new-a"), expected_version=cur.version),
            c.bind(b("s0", "r-new-b"), expected_version=cur.version),
        )
        assert moved.won != late.won
    finally:
        await a.close()
        await c.close()


async def test_binding_expires_and_ttl_is_set(redis_server: RedisServer) -> None:
    s = RedisStore(redis_server.url, process_id="p", binding_ttl_s=60.0, namespace="ttl")
    raw = aioredis.Redis.from_url(redis_server.url)
    try:
        await s.bind(b("s1", "r1"), expected_version=0)
        pttl = await raw.pttl("ttl:b:s1")
        assert 0 < pttl <= 60_000
    finally:
        await raw.aclose()
        await s.close()


async def test_corrupt_stored_values_are_named(redis_server: RedisServer) -> None:
    s = RedisStore(redis_server.url, process_id="p", namespace="bad")
    raw = aioredis.Redis.from_url(redis_server.url)
    try:
        await raw.hset("bad:b:s1", mapping={"v": 1, "d": "{not json"})
        with pytest.raises(InvalidState, match="bad:b:s1"):
            await s.get_binding("s1")
        await raw.hset("bad:g:swe", mapping={"v": 1, "d": "[1]"})
        with pytest.raises(InvalidState, match="bad:g:swe"):
            await s.get_graph("swe")
    finally:
        await raw.aclose()
        await s.close()


async def test_heartbeat_expiry_uses_the_wall_clock(redis_server: RedisServer) -> None:
    now = [1000.0]
    s = RedisStore(redis_server.url, process_id="p", namespace="hb", wall=lambda: now[0])
    try:
        await s.heartbeat("p1", 5.0)
        await s.heartbeat("p2", 20.0)
        assert await s.live_processes() == ["p1", "p2"]
        now[0] += 10.0
        assert await s.live_processes() == ["p2"]
    finally:
        await s.close()


async def test_fail_mode_raises_when_redis_is_gone(redis_server: RedisServer) -> None:
    s = RedisStore(redis_server.url, process_id="p", on_outage="fail", op_timeout_s=0.3)
    try:
        await s.bind(b("s1", "r1"), expected_version=0)
        redis_server.stop()
        with pytest.raises(StateUnavailable):
            await s.get_binding("s1")
        with pytest.raises(StateUnavailable):
            await s.add_usage("acme", service_s=1.0)
        assert not await s.ping()
    finally:
        await s.close()


async def test_degrade_serves_locally_then_reconciles_with_redis_winning(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    a = RedisStore(redis_server.url, process_id="a", op_timeout_s=0.3, retry_interval_s=0.05)
    try:
        known = await a.bind(b("known", "r1"), expected_version=0)
        await a.add_usage("acme", service_s=1.0)
        await a.put_graph("gone", {"x": 1})
        port = redis_server.port
        redis_server.stop()
        with caplog.at_level(logging.WARNING):
            # a session seen before the outage keeps its replica
            assert await a.get_binding("known") == known.binding
            assert "redis unreachable" in caplog.text
        assert a.degraded
        # new placements and usage keep working locally
        local_new = await a.bind(b("new", "r2"), expected_version=0)
        assert local_new.won
        clash = await a.bind(b("clash", "r-local"), expected_version=0)
        assert clash.won
        usage = await a.add_usage("acme", service_s=2.0, completed_tasks=1)
        assert usage.attained_service_s == pytest.approx(3.0)
        await a.put_graph("swe", {"v": "local"})
        assert await a.delete_graph("gone")  # deleted locally, replayed on recovery
        assert await a.get_graph("gone") is None

        # Redis comes back (empty: no persistence); another process bound "clash" first.
        back = RedisServer(port=port).start()
        other = RedisStore(back.url, process_id="b")
        try:
            theirs = await other.bind(b("clash", "r-remote"), expected_version=0)
            await other.add_usage("acme", service_s=10.0)
            await other.put_graph("gone", {"x": 1})  # what a persistent Redis would still hold

            async def recovered() -> None:
                while a.degraded:
                    await a.get_binding("new")
                    await asyncio.sleep(0.01)

            await asyncio.wait_for(recovered(), timeout=5.0)
            # local-only writes were replayed; the conflicting one adopted Redis's binding
            got_new = await other.get_binding("new")
            assert got_new is not None
            assert got_new.replica_id == "r2"
            assert await a.get_binding("clash") == theirs.binding
            total = await other.get_usage("acme")
            assert total.attained_service_s == pytest.approx(12.0)  # 10 + the outage's 2
            assert total.completed_tasks == 1
            graph = await other.get_graph("swe")
            assert graph is not None
            assert graph.document == {"v": "local"}
            assert await other.get_graph("gone") is None
            assert "gone" not in await other.graph_versions()
        finally:
            await other.close()
            back.stop()
    finally:
        await a.close()


async def test_each_heartbeat_tells_the_quota_ledger_how_many_processes_live(
    redis_server: RedisServer,
) -> None:
    """The ledger's outage share follows the heartbeats, without a checked claim."""
    now = [1000.0]
    s = RedisStore(redis_server.url, process_id="p1", namespace="hbq", wall=lambda: now[0])
    ledger = s.quota_ledger("p1")
    seen = [ledger.live_processes]
    try:
        await s.heartbeat("p1", 15.0)
        seen.append(ledger.live_processes)
        raw = aioredis.Redis.from_url(redis_server.url)
        await raw.zadd("hbq:hb", {"p2": now[0] + 15.0, "p3": now[0] + 30.0})
        await raw.aclose()
        await s.heartbeat("p1", 15.0)
        seen.append(ledger.live_processes)
        now[0] += 20.0  # p2's heartbeat expired
        await s.heartbeat("p1", 15.0)
        seen.append(ledger.live_processes)
        assert seen == [None, 1, 3, 2]
    finally:
        await ledger.close()
        await s.close()
