"""Conformance suite every QuotaLedger passes (LocalQuotaLedger and RedisQuotaLedger), then
what only a shared ledger does: several processes on one Redis share a tenant's quotas, a
dead process stops counting, an unreachable Redis falls back to local counts (each process held
to its share of each quota). Virtual time."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator

import pytest
import redis
import redis.asyncio as aioredis

from saga.clock import VirtualClock
from saga.service.state.quota_api import NO_QUOTA, Claim, Quota, QuotaLedger, Verdict
from saga.service.state.redis_quotas import RedisQuotaLedger
from saga.service.state.redis_server import RedisServer, free_port

from .conftest import Processes

pytestmark = pytest.mark.contract

CALL = Claim(call=True)


def opens(sid: str) -> Claim:
    return Claim(sid, open=True)


def kv(tokens: int, sid: str | None = None) -> Claim:
    return Claim(sid, kv_tokens=tokens, call=True)


# --------------------------------------------------------------------------- every ledger


async def test_is_a_quota_ledger(processes: Processes) -> None:
    assert isinstance(processes.ledger("p1"), QuotaLedger)


async def test_sessions_are_counted_once_and_refused_at_the_quota(processes: Processes) -> None:
    led, q, now = processes.ledger("p1"), Quota(max_active_sessions=2), 0.0
    assert await led.claim("acme", opens("a"), q, now) == Verdict(True)
    assert (await led.claim("acme", opens("b"), q, now)).admitted
    v = await led.claim("acme", opens("c"), q, now)
    assert (v.admitted, v.refused_by, v.held, v.fallback) == (False, "sessions", 2, "")
    assert led.held("acme") == (2, 0)  # the refusal counted nothing
    assert (await led.claim("other", opens("a"), q, now)).admitted  # per tenant
    led.close_session("acme", q, "a")
    led.close_session("acme", q, "a")  # an ended session is uncounted once
    led.close_session("acme", q, "never-opened")
    assert led.held("acme") == (1, 0)
    assert (await led.claim("acme", opens("c"), q, now)).admitted
    led.adopt("acme", q, "d")  # started by another process: counted, never refused
    led.adopt("acme", q, "d")  # opened twice (racing first requests): one session, two closes
    assert led.held("acme") == (3, 0)
    assert not (await led.claim("acme", opens("e"), Quota(max_active_sessions=3), now)).admitted
    assert (await led.claim("acme", opens("e"), Quota(max_active_sessions=4), now)).admitted  # per claim
    assert (await led.claim("acme", opens("f"), NO_QUOTA, now)).admitted  # unlimited
    assert led.held("acme") == (5, 0)
    led.close_session("acme", q, "d")
    assert led.held("acme") == (5, 0)
    led.close_session("acme", q, "d")
    assert led.held("acme") == (4, 0)


async def test_kv_is_each_sessions_context_plus_session_less_calls(processes: Processes) -> None:
    led, q = processes.ledger("p1"), Quota(max_kv_tokens=1000)
    assert (await led.claim("acme", opens("s"), q, 0.0)).admitted
    assert (await led.claim("acme", kv(600, "s"), q, 0.0)).admitted
    v = await led.claim("acme", kv(500, "s"), q, 0.0)
    assert (v.admitted, v.refused_by, v.held) == (False, "kv_tokens", 1100)
    assert led.held("acme") == (1, 600)  # the refusal counted nothing
    assert (await led.claim("acme", kv(0, "s"), q, 0.0)).admitted  # adds nothing: never refused
    led.add_kv("acme", q, "s", 250)  # the call's output joined the context, unchecked
    assert (await led.claim("acme", kv(150), q, 0.0)).admitted  # session-less: its prompt
    assert led.held("acme") == (1, 1000)
    assert not (await led.claim("acme", kv(1), q, 0.0)).admitted
    led.add_kv("acme", q, None, -150)  # the session-less call finished
    led.close_session("acme", q, "s")  # the session's context goes with it
    assert led.held("acme") == (0, 0)
    led.add_kv("acme", q, None, -50)  # never below 0
    led.add_kv("acme", q, "s", 300)  # a session that ended meanwhile counts nothing
    assert led.held("acme") == (0, 0)
    assert (await led.claim("acme", kv(1000), q, 0.0)).admitted


async def test_call_rate_is_a_token_bucket_with_one_second_of_burst(processes: Processes) -> None:
    led, q = processes.ledger("p1"), Quota(max_calls_per_second=2.0)
    clock = processes.clock
    assert (await led.claim("acme", CALL, q, clock.now())).admitted
    assert (await led.claim("acme", CALL, q, clock.now())).admitted
    v = await led.claim("acme", CALL, q, clock.now())
    assert (v.admitted, v.refused_by) == (False, "calls")
    assert v.retry_after_s == pytest.approx(0.5)
    clock.advance(0.5)
    assert (await led.claim("acme", CALL, q, clock.now())).admitted
    assert not (await led.claim("acme", CALL, q, clock.now())).admitted
    clock.advance(10.0)  # never more than the burst
    assert (await led.claim("acme", CALL, q, clock.now())).admitted
    assert (await led.claim("acme", CALL, q, clock.now())).admitted
    assert not (await led.claim("acme", CALL, q, clock.now())).admitted
    slow = await led.claim("acme", CALL, Quota(max_calls_per_second=0.25), clock.now())
    assert slow.admitted  # a changed rate starts a full bucket (of one token)
    v = await led.claim("acme", CALL, Quota(max_calls_per_second=0.25), clock.now())
    assert v.retry_after_s == pytest.approx(4.0)
    assert (await led.claim("acme", CALL, NO_QUOTA, clock.now())).admitted


async def test_a_refusal_spends_nothing(processes: Processes) -> None:
    led, q = processes.ledger("p1"), Quota(max_calls_per_second=1.0, max_kv_tokens=100)
    v = await led.claim("acme", kv(200), q, 0.0)
    assert v.refused_by == "kv_tokens"
    assert (await led.claim("acme", kv(50), q, 0.0)).admitted  # the KV refusal took no token
    v = await led.claim("acme", kv(10), q, 0.0)
    assert v.refused_by == "calls"
    assert led.held("acme") == (0, 50)  # the rate refusal counted no KV


async def test_concurrent_claims_never_overshoot_nor_undershoot(processes: Processes) -> None:
    led, q = processes.ledger("p1"), Quota(max_active_sessions=5, max_kv_tokens=1000)
    outs = await asyncio.gather(*(led.claim("acme", opens(f"s{i}"), q, 0.0) for i in range(20)))
    assert sum(v.admitted for v in outs) == 5
    outs = await asyncio.gather(*(led.claim("acme", Claim(kv_tokens=300), q, 0.0) for _ in range(10)))
    assert sum(v.admitted for v in outs) == 3
    assert led.held("acme") == (5, 900)


# --------------------------------------------------------------------------- shared (Redis)


async def test_two_processes_share_a_tenants_sessions_and_kv(shared: Processes) -> None:
    a, b = shared.ledger("sched-a"), shared.ledger("sched-b")
    for pid in ("sched-a", "sched-b"):
        await shared.heartbeat(pid, 15.0)
    q = Quota(max_active_sessions=3, max_kv_tokens=1000)
    assert (await a.claim("acme", opens("s1"), q, 0.0)).admitted
    assert (await a.claim("acme", opens("s2"), q, 0.0)).admitted
    assert (await b.claim("acme", opens("s3"), q, 0.0)).admitted
    for led in (a, b):
        v = await led.claim("acme", opens("s4"), q, 0.0)
        assert (v.admitted, v.held, v.fallback) == (False, 3, "")
    assert (a.held("acme"), b.held("acme")) == ((2, 0), (1, 0))
    a.close_session("acme", q, "s1")  # published in the background
    await shared.flush()
    assert (await b.claim("acme", opens("s4"), q, 0.0)).admitted
    assert (await a.claim("acme", kv(700, "s2"), q, 0.0)).admitted
    v = await b.claim("acme", kv(400, "s3"), q, 0.0)
    assert (v.refused_by, v.held) == ("kv_tokens", 1100)
    b.add_kv("acme", q, "s3", 250)  # s3's context grew after a call: unchecked, counted
    await shared.flush()
    v = await a.claim("acme", kv(100), q, 0.0)
    assert (v.refused_by, v.held) == ("kv_tokens", 1050)
    await shared.assert_totals_match("acme")


async def test_a_session_served_by_two_processes_counts_once(shared: Processes) -> None:
    a, b = shared.ledger("sched-a"), shared.ledger("sched-b")
    for pid in ("sched-a", "sched-b"):
        await shared.heartbeat(pid, 15.0)
    q = Quota(max_active_sessions=2, max_kv_tokens=3000)
    assert (await a.claim("acme", opens("s1"), q, 0.0)).admitted
    assert (await a.claim("acme", kv(1000, "s1"), q, 0.0)).admitted
    b.adopt("acme", q, "s1")  # its next call reached b
    assert (await b.claim("acme", kv(1200, "s1"), q, 0.0)).admitted  # the resent context
    assert (await b.claim("acme", opens("s2"), q, 0.0)).admitted  # s1 counts once
    v = await b.claim("acme", kv(1900, "s2"), q, 0.0)
    assert (v.refused_by, v.held) == ("kv_tokens", 3100)  # s1's 1200 (not 1000 + 1200) + 1900
    b.close_session("acme", q, "s1")  # ended through b: a still has it open, uncounted anyway
    await shared.flush()
    assert (await a.claim("acme", opens("s3"), q, 0.0)).admitted
    assert (await b.claim("acme", kv(1900, "s2"), q, 0.0)).admitted
    await shared.assert_totals_match("acme")


async def test_a_session_ended_during_its_check_leaves_nothing_behind(shared: Processes) -> None:
    a = shared.ledger("sched-a")
    q = Quota(max_kv_tokens=1000)
    assert (await a.claim("acme", opens("s1"), q, 0.0)).admitted
    check = asyncio.create_task(a.claim("acme", kv(400, "s1"), q, 0.0))
    await asyncio.sleep(0)  # the check is waiting for Redis
    a.close_session("acme", q, "s1")  # the client ended the session meanwhile
    assert (await check).admitted
    await shared.flush()
    assert a.held("acme") == (0, 0)
    assert shared.redis is not None
    assert await shared.redis.hgetall(f"{shared.ns}:quota:held:acme") == {}


async def test_two_processes_share_one_call_rate_bucket(shared: Processes) -> None:
    a, b = shared.ledger("sched-a"), shared.ledger("sched-b")
    q, clock = Quota(max_calls_per_second=2.0), shared.clock
    assert (await a.claim("acme", CALL, q, clock.now())).admitted
    assert (await b.claim("acme", CALL, q, clock.now())).admitted
    v = await a.claim("acme", CALL, q, clock.now())
    assert v.refused_by == "calls"
    assert v.retry_after_s == pytest.approx(0.5)
    assert not (await b.claim("acme", CALL, q, clock.now())).admitted
    clock.advance(0.5)
    assert (await b.claim("acme", CALL, q, clock.now())).admitted
    assert not (await a.claim("acme", CALL, q, clock.now())).admitted


async def test_a_dead_process_stops_counting_when_its_heartbeat_expires(shared: Processes) -> None:
    a, b = shared.ledger("sched-a"), shared.ledger("sched-b")
    await shared.heartbeat("sched-a", 15.0)
    q = Quota(max_active_sessions=2, max_kv_tokens=1000)
    assert (await a.claim("acme", opens("s1"), q, shared.clock.now())).admitted
    assert (await a.claim("acme", kv(900), q, shared.clock.now())).admitted  # in flight
    assert (await a.claim("acme", opens("s2"), q, shared.clock.now())).admitted
    await shared.heartbeat("sched-b", 15.0)
    assert not (await b.claim("acme", opens("s3"), q, shared.clock.now())).admitted
    shared.clock.advance(10.0)
    await shared.heartbeat("sched-b", 15.0)  # b keeps beating, a has crashed
    assert not (await b.claim("acme", opens("s3"), q, shared.clock.now())).admitted
    assert not (await b.claim("acme", kv(200), q, shared.clock.now())).admitted
    shared.clock.advance(6.0)  # a's heartbeat expired (15 s)
    assert (await b.claim("acme", opens("s3"), q, shared.clock.now())).admitted
    assert (await b.claim("acme", kv(200), q, shared.clock.now())).admitted
    assert shared.redis is not None
    sessions = await shared.redis.hgetall(f"{shared.ns}:quota:held:acme")
    assert sessions == {b"s:s3": b"0 sched-b"}  # a's are gone, and a's totals
    totals = await shared.redis.hgetall(f"{shared.ns}:quota:procs:acme")
    assert totals == {b"S:sched-b": b"1", b"K:sched-b": b"0", b"p:sched-b": b"200"}
    await shared.assert_totals_match("acme")


async def test_a_process_pruned_while_alive_counts_its_sessions_again(shared: Processes) -> None:
    a, b = shared.ledger("sched-a"), shared.ledger("sched-b")
    q = Quota(max_active_sessions=3, max_kv_tokens=10_000)
    await shared.heartbeat("sched-a", 15.0)
    await shared.heartbeat("sched-b", 60.0)
    for sid in ("s1", "s2"):
        assert (await a.claim("acme", opens(sid), q, shared.clock.now())).admitted
    shared.clock.advance(20.0)  # a stalled past its heartbeat: b's next check prunes it
    assert (await b.claim("acme", opens("s3"), q, shared.clock.now())).admitted
    await shared.heartbeat("sched-a", 15.0)  # a is back
    a.close_session("acme", q, "s1")  # its field is gone already: nothing to uncount
    assert (await a.claim("acme", kv(500, "s2"), q, shared.clock.now())).admitted  # s2 again
    await shared.flush()
    await shared.assert_totals_match("acme")
    assert (await b.claim("acme", opens("s4"), q, shared.clock.now())).admitted
    v = await b.claim("acme", opens("s5"), q, shared.clock.now())
    assert (v.refused_by, v.held) == ("sessions", 3)  # s2 (a), s3, s4 (b)
    await shared.assert_totals_match("acme")


async def test_tenants_without_a_quota_cost_no_round_trip(shared: Processes) -> None:
    a = shared.ledger("sched-a")
    assert (await a.claim("free", opens("s1"), NO_QUOTA, 0.0)).admitted
    assert (await a.claim("free", kv(500, "s1"), NO_QUOTA, 0.0)).admitted
    a.add_kv("free", NO_QUOTA, "s1", -100)
    a.adopt("free", NO_QUOTA, "s2")
    await shared.flush()
    assert shared.redis is not None
    assert await shared.redis.keys(f"{shared.ns}:*") == []
    assert a.held("free") == (2, 400)
    # Once the tenant has a quota, its sessions are written as they are counted: with the check
    # of a claim its quota can refuse, else in the background.
    q = Quota(max_active_sessions=5)
    assert (await a.claim("free", opens("s3"), q, 0.0)).admitted
    assert (await a.claim("free", kv(50, "s1"), q, 0.0)).admitted  # no quota can refuse it
    key = f"{shared.ns}:quota:held:free"
    await shared.flush()
    assert await shared.redis.hgetall(key) == {b"s:s3": b"0 sched-a", b"s:s1": b"450 sched-a"}
    # The quota goes: what this process wrote follows its counts down to nothing.
    for sid in ("s1", "s2", "s3"):
        a.close_session("free", NO_QUOTA, sid)
    await shared.flush()
    assert await shared.redis.exists(key) == 0
    a.adopt("free", NO_QUOTA, "s4")
    a.close_session("free", NO_QUOTA, "s4")
    await shared.flush()
    assert await shared.redis.keys(f"{shared.ns}:*") == []  # untracked again: no more writes


async def test_unreachable_redis_falls_back_to_local_counts_then_republishes(
    shared: Processes, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    client = _store_client(f"redis://127.0.0.1:{port}")
    a = shared.ledger("sched-a", client=client)
    assert isinstance(a, RedisQuotaLedger)
    q = Quota(max_active_sessions=2, max_calls_per_second=1.0)
    try:
        with caplog.at_level(logging.WARNING):
            v = await a.claim("acme", opens("s1"), q, 0.0)
            assert (v.admitted, v.fallback) == (True, "unreachable")
            assert a.degraded
            assert (await a.claim("acme", opens("s2"), q, 0.0)).fallback == "unreachable"
            v = await a.claim("acme", opens("s3"), q, 0.0)  # local limits still hold
            assert (v.admitted, v.refused_by, v.fallback) == (False, "sessions", "unreachable")
            assert (await a.claim("acme", CALL, q, 0.0)).admitted  # a local bucket
            assert (await a.claim("acme", CALL, q, 0.0)).refused_by == "calls"
            a.close_session("acme", q, "s2")  # kept for the republish
        assert caplog.text.count("redis unreachable") == 1  # logged once
        server = RedisServer(port=port).start()
        try:
            await asyncio.wait_for(_until(lambda: not a.degraded), timeout=5.0)
            await a.flush()
            got = await client.hgetall(f"{shared.ns}:quota:held:acme")
            assert got == {b"s:s1": b"0 sched-a"}  # what it counted meanwhile, published
            assert (await a.claim("acme", opens("s2"), q, 0.0)) == Verdict(True)  # shared again
            v = await a.claim("acme", opens("s3"), q, 0.0)
            assert (v.admitted, v.held, v.fallback) == (False, 2, "")
        finally:
            await a.close()
            server.stop()
    finally:
        await client.aclose()


@pytest.fixture
def own_redis(redis_url: str) -> Iterator[RedisServer]:
    """A redis-server of the test's own, to stop and start again (``redis_url``: the skip)."""
    server = RedisServer().start()
    yield server
    server.stop()


async def test_during_an_outage_each_process_holds_to_its_share_of_each_quota(
    own_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    procs = Processes("redis", VirtualClock(), own_redis.url)
    clients = [_store_client(own_redis.url) for _ in range(3)]
    a, b, c = (_shared_ledger(procs, f"sched-{x}", cl) for x, cl in zip("abc", clients, strict=True))
    q = Quota(max_active_sessions=4, max_calls_per_second=4.0, max_kv_tokens=1000)
    try:
        for pid in ("sched-a", "sched-b"):
            await procs.heartbeat(pid, 15.0)
        for led in (a, b):  # a check of another tenant: each sees both processes' heartbeats
            assert (await led.claim("other", opens("x"), q, 0.0)).fallback == ""
        assert (a.live_processes, b.live_processes, c.live_processes) == (2, 2, None)
        own_redis.stop()
        with caplog.at_level(logging.WARNING):
            for led, p in ((a, "a"), (b, "b")):  # 1/2 of each quota
                for sid in (f"{p}1", f"{p}2"):
                    v = await led.claim("acme", opens(sid), q, 0.0)
                    assert (v.admitted, v.fallback, v.processes) == (True, "unreachable", 2)
                v = await led.claim("acme", opens(f"{p}3"), q, 0.0)
                assert (v.admitted, v.refused_by, v.held, v.processes) == (False, "sessions", 2, 2)
                assert (await led.claim("acme", kv(500), q, 0.0)).admitted  # 500 KV tokens
                v = await led.claim("acme", kv(1), q, 0.0)
                assert (v.refused_by, v.held) == ("kv_tokens", 501)
                assert (await led.claim("acme", CALL, q, 0.0)).admitted  # 2 calls/s, burst 2
                v = await led.claim("acme", CALL, q, 0.0)
                assert v.refused_by == "calls"
                assert v.retry_after_s == pytest.approx(0.5)
            for i in range(4):  # c never reached Redis: the whole quota, as one process
                v = await c.claim("acme", opens(f"c{i}"), q, 0.0)
                assert (v.admitted, v.fallback, v.processes) == (True, "unreachable", 1)
            assert (await c.claim("acme", opens("c4"), q, 0.0)).refused_by == "sessions"
        assert caplog.text.count("against 1/2 of each quota (2 live processes last seen)") == 2
        assert caplog.text.count("against the whole of each quota (no live processes seen yet)") == 1
        own_redis.start()  # empty, as a restarted Redis: the heartbeats are back before the probes
        with redis.Redis.from_url(own_redis.url) as sync:
            sync.zadd(f"{procs.ns}:hb", {f"sched-{x}": procs.wall() + 15.0 for x in "abc"})
        await asyncio.wait_for(_until(lambda: not (a.degraded or b.degraded or c.degraded)), 5.0)
        await procs.flush()  # what each counted meanwhile: 2 + 2 + 4 sessions
        v = await a.claim("acme", opens("a3"), q, 0.0)
        assert (v.admitted, v.refused_by, v.held, v.fallback) == (False, "sessions", 8, "")
        assert a.live_processes == 3
        for led, sids in ((b, ("b1", "b2")), (c, ("c0", "c1", "c2"))):
            for sid in sids:
                led.close_session("acme", q, sid)
        await procs.flush()  # a1, a2 and c3 left
        assert await a.claim("acme", opens("a3"), q, 0.0) == Verdict(True)  # shared again
        assert (await b.claim("acme", opens("b3"), q, 0.0)).held == 4
        assert procs.redis is not None
        await procs.redis.connection_pool.disconnect()  # its connection died with the server
        await procs.assert_totals_match("acme")
    finally:
        await procs.close()
        for cl in clients:
            await cl.aclose()


def _store_client(url: str) -> aioredis.Redis:
    """A client as the state store makes it: no retries of its own."""
    return aioredis.Redis.from_url(
        url,
        socket_timeout=0.3,
        socket_connect_timeout=0.3,
        retry=None,
        retry_on_error=[],
        retry_on_timeout=False,
    )


def _shared_ledger(procs: Processes, process_id: str, client: aioredis.Redis) -> RedisQuotaLedger:
    led = procs.ledger(process_id, client=client)
    assert isinstance(led, RedisQuotaLedger)
    return led


async def _until(cond: Callable[[], bool]) -> None:
    while not cond():
        await asyncio.sleep(0.01)
