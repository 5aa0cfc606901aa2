"""ReplicaPool over real HTTP against fake replicas: announce, load, health, removal."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import pytest

from saga.scheduler.api import ReplicaAdded, ReplicaHealth, ReplicaLoad, ReplicaRemoved, UnknownReplica
from saga.service.backend.api import ClientSettings, ClientTimeouts, PoolSettings, ReplicaEvent, ReplicaSpec
from saga.service.backend.discovery import StaticDiscovery
from saga.service.backend.pool import ReplicaPool

from .conftest import FakeKnobs

pytestmark = pytest.mark.integration

FAST = PoolSettings(
    health_interval_s=0.05,
    load_interval_s=0.05,
    metrics_interval_s=0.05,
    discovery_interval_s=0.05,
    unhealthy_after=2,
    healthy_after=1,
)
CLIENT = ClientSettings(
    timeouts=ClientTimeouts(connect_s=0.5, first_byte_s=1, idle_s=1, total_s=2, probe_s=0.5)
)


async def until(pred: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not pred():
            await asyncio.sleep(0.01)


class MutableDiscovery:
    def __init__(self, specs: list[ReplicaSpec]) -> None:
        self.specs = specs
        self.fail = False

    async def discover(self) -> list[ReplicaSpec]:
        if self.fail:
            raise RuntimeError("api server down")
        return list(self.specs)

    async def close(self) -> None:
        return None


def of(events: list[ReplicaEvent], kind: type, rid: str | None = None) -> list[Any]:
    return [e for e in events if isinstance(e, kind) and (rid is None or e.replica_id == rid)]


async def test_announce_load_and_metrics(fake_factory: Any) -> None:
    a, b = await fake_factory(), await fake_factory()
    events: list[ReplicaEvent] = []
    pool = ReplicaPool(
        StaticDiscovery([f"a={a.url}", f"b={b.url}"]), events.append, settings=FAST, client_settings=CLIENT
    )
    await pool.start()
    try:
        await pool.wait_announced(["a", "b"], timeout_s=5)
        added = {e.replica_id: e for e in of(events, ReplicaAdded)}
        assert added["a"] == ReplicaAdded("a", kv_total_tokens=2000, max_running_requests=64, page_size=16)
        await until(lambda: len(of(events, ReplicaLoad, "a")) >= 2 and len(of(events, ReplicaLoad, "b")) >= 1)
        load = of(events, ReplicaLoad, "a")[-1]
        assert (load.running, load.waiting, load.kv_used_tokens, load.kv_total_tokens) == (5, 1, 400, 2000)
        # no load event may precede the replica's announcement
        first_a = events.index(added["a"])
        assert all(events.index(e) > first_a for e in of(events, ReplicaLoad, "a"))
        assert pool.healthy_ids() == ["a", "b"]
        assert pool.client("a").base_url == a.url
        await until(lambda: pool.replicas()["a"].metrics.get("sglang:num_running_reqs") == 2.0)
        with pytest.raises(UnknownReplica):
            pool.client("zzz")
    finally:
        await pool.stop()


async def test_garbage_loads_make_replica_unhealthy_then_recover(
    fake: Any, caplog: pytest.LogCaptureFixture
) -> None:
    events: list[ReplicaEvent] = []
    pool = ReplicaPool(
        StaticDiscovery([f"r={fake.url}"]), events.append, settings=FAST, client_settings=CLIENT
    )
    await pool.start()
    try:
        await pool.wait_announced(["r"], timeout_s=5)
        with caplog.at_level(logging.WARNING):
            fake.knobs.loads_body = {"loads": "nonsense"}
            await until(lambda: ReplicaHealth("r", healthy=False) in events)
        assert "unhealthy" in caplog.text
        assert "/v1/loads" in pool.replicas()["r"].last_error
        assert pool.healthy_ids() == []
        fake.knobs.loads_body = None
        await until(lambda: events[-1] == ReplicaHealth("r", healthy=True) or pool.healthy_ids() == ["r"])
        assert of(events, ReplicaHealth)[-1] == ReplicaHealth("r", healthy=True)
    finally:
        await pool.stop()


async def test_killed_replica_turns_unhealthy(fake_factory: Any) -> None:
    a = await fake_factory()
    events: list[ReplicaEvent] = []
    pool = ReplicaPool(StaticDiscovery([f"a={a.url}"]), events.append, settings=FAST, client_settings=CLIENT)
    await pool.start()
    try:
        await pool.wait_announced(["a"], timeout_s=5)
        await a.stop()
        await until(lambda: ReplicaHealth("a", healthy=False) in events)
        assert "a" not in pool.healthy_ids()
    finally:
        await pool.stop()


async def test_unready_replica_is_not_announced(fake_factory: Any, dead_url: str) -> None:
    sick = await fake_factory()
    sick.knobs.healthy = False
    events: list[ReplicaEvent] = []
    pool = ReplicaPool(
        StaticDiscovery([f"sick={sick.url}", f"dead={dead_url}"]),
        events.append,
        settings=FAST,
        client_settings=CLIENT,
    )
    await pool.start()
    try:
        await until(
            lambda: pool.replicas()["sick"].health_fails >= 3 and pool.replicas()["dead"].health_fails >= 3
        )
        assert events == []
        sick.knobs.healthy = True
        await pool.wait_announced(["sick"], timeout_s=5)
        assert of(events, ReplicaAdded)[0].replica_id == "sick"
    finally:
        await pool.stop()


async def test_discovery_removal_url_change_and_failure(fake_factory: Any) -> None:
    a, b = await fake_factory(), await fake_factory()
    disc = MutableDiscovery([ReplicaSpec("a", a.url), ReplicaSpec("b", b.url)])
    events: list[ReplicaEvent] = []

    def sink(e: ReplicaEvent) -> None:
        events.append(e)
        if isinstance(e, ReplicaLoad):
            raise RuntimeError("a buggy sink must not stop the pool")

    pool = ReplicaPool(disc, sink, settings=FAST, client_settings=CLIENT)
    await pool.start()
    try:
        await pool.wait_announced(["a", "b"], timeout_s=5)
        disc.fail = True
        await asyncio.wait_for(pool.refresh(), 5)
        assert set(pool.replicas()) == {"a", "b"}  # a failing discovery keeps the list
        disc.fail = False
        disc.specs = [ReplicaSpec("a", b.url)]  # b gone; a moved to a new address
        await until(lambda: ReplicaRemoved("b") in events and ReplicaRemoved("a") in events)
        await pool.wait_announced(["a"], timeout_s=5)
        assert pool.client("a").base_url == b.url
        assert len(of(events, ReplicaAdded, "a")) == 2
        n = len(of(events, ReplicaLoad, "a"))
        await until(lambda: len(of(events, ReplicaLoad, "a")) > n + 2)  # still polling despite the sink
        # same address, a named port moved (KV events): re-announced, so subscribers follow it
        disc.specs = [ReplicaSpec("a", b.url, named_ports=(("kv-events", 6000),))]
        await until(lambda: len(of(events, ReplicaAdded, "a")) == 3)
        assert events.count(ReplicaRemoved("a")) == 2
    finally:
        await pool.stop()


async def test_a_replica_that_cannot_keep_sessions_is_announced_as_such(
    fake_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    old = await fake_factory(FakeKnobs(server_info_extra={"version": "0.5.10.post1"}))
    off = await fake_factory(FakeKnobs(server_info_extra={"enable_session_radix_cache": False}))
    ok = await fake_factory(
        FakeKnobs(server_info_extra={"version": "0.5.20", "enable_session_radix_cache": True})
    )
    events: list[ReplicaEvent] = []
    specs = [f"old={old.url}", f"off={off.url}", f"ok={ok.url}"]
    pool = ReplicaPool(StaticDiscovery(specs), events.append, settings=FAST, client_settings=CLIENT)
    await pool.start()
    try:
        await pool.wait_announced(["old", "off", "ok"], timeout_s=5)
        added = {e.replica_id: e.keeps_sessions for e in of(events, ReplicaAdded)}
        assert added == {"old": False, "off": False, "ok": True}
        warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
        assert any("old" in m and "0.5.17 or later" in m for m in warned)
        assert any("off" in m and "--enable-session-radix-cache" in m for m in warned)
    finally:
        await pool.stop()


async def test_longest_prompt_is_the_largest_over_announced_replicas(fake_factory: Any) -> None:
    small = await fake_factory(FakeKnobs(server_info_extra={"max_req_input_len": 1000}))
    big = await fake_factory(FakeKnobs(server_info_extra={"max_req_input_len": 4000}))
    big.knobs.healthy = False  # not ready: its limit does not count yet
    specs = [f"small={small.url}", f"big={big.url}"]
    pool = ReplicaPool(StaticDiscovery(specs), lambda _: None, settings=FAST, client_settings=CLIENT)
    assert pool.max_input_tokens() is None
    await pool.start()
    try:
        await pool.wait_announced(["small"], timeout_s=5)
        assert pool.max_input_tokens() == 999  # SGLang refuses max_req_input_len tokens or more
        big.knobs.healthy = True
        await pool.wait_announced(["big"], timeout_s=5)
        assert pool.max_input_tokens() == 3999
    finally:
        await pool.stop()
