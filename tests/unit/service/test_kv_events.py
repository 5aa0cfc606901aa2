"""The KV event subscriber's message handling: sequence gaps, restarts, malformed messages;
subscriptions of discovered replicas opened and closed with the pool's events."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import zmq.asyncio
from prometheus_client import CollectorRegistry

from saga.kv_events import AllBlocksCleared, BlockRemoved, BlockStored, WireEvent, encode_batch, seq_bytes
from saga.scheduler.api import ReplicaCache
from saga.service.config import KvEventSettings
from saga.service.kv_events import KvEventSubscriber, KvEventSubscribers, discovered_endpoint
from saga.service.kv_view import ReplicaKvView
from saga.service.metrics import ServiceMetrics
from saga.service.tokens import ids_prompt

pytestmark = pytest.mark.unit

IDS = list(range(64))
H = ids_prompt(IDS, block_size=16, max_blocks=64).block_hashes


def page(i: int) -> BlockStored:
    return BlockStored((100 + i,), None if i == 0 else 99 + i, tuple(IDS[i * 16 : (i + 1) * 16]), 16)


def msg(seq: int, *events: WireEvent) -> list[bytes]:
    return [b"", seq_bytes(seq), encode_batch(0.0, events)]


class Sink:
    def __init__(self) -> None:
        self.events: list[ReplicaCache] = []
        self.accept = True

    def __call__(self, e: ReplicaCache) -> bool:
        self.events.append(e)
        return self.accept


@pytest.fixture
async def ctx() -> AsyncIterator[zmq.asyncio.Context]:
    c = zmq.asyncio.Context()
    yield c
    c.term()


def make(ctx: zmq.asyncio.Context) -> tuple[KvEventSubscriber, Sink, ServiceMetrics]:
    sink = Sink()
    metrics = ServiceMetrics(CollectorRegistry())
    sub = KvEventSubscriber(ReplicaKvView("r0", 16), "tcp://127.0.0.1:1", sink, metrics, ctx=ctx)
    return sub, sink, metrics


def count(m: ServiceMetrics, outcome: str) -> float:
    v = m.registry.get_sample_value("saga_kv_events_total", {"outcome": outcome})
    return v or 0.0


async def test_in_order_batches_reach_the_engine(ctx: zmq.asyncio.Context) -> None:
    sub, sink, m = make(ctx)
    await sub.handle(msg(5, page(0)))  # a late joiner starts wherever the publisher is
    await sub.handle(msg(6, page(1), BlockRemoved((101,))))
    await sub.handle(msg(7))  # an empty batch: counted, nothing sent
    assert [e.stored for e in sink.events] == [(H[0],), ()]
    assert sink.events[1].removed == (H[1],)
    assert count(m, "applied") == 3
    assert sub.last_seq == 7


async def test_gap_without_replay_clears_then_rebuilds(ctx: zmq.asyncio.Context) -> None:
    sub, sink, m = make(ctx)
    await sub.handle(msg(0, page(0)))
    await sub.handle(msg(3, page(1)))  # 1 and 2 lost
    assert sink.events[1] == ReplicaCache("r0", cleared=True)
    assert sink.events[2].stored == (H[1],)  # its parent's chain state survived the reset
    assert sub.view.cached_hashes == {H[1]}
    assert count(m, "gap") == 1
    assert sub.last_seq == 3


async def test_restart_and_cleared(ctx: zmq.asyncio.Context) -> None:
    sub, sink, m = make(ctx)
    await sub.handle(msg(10, page(0)))
    await sub.handle(msg(0, page(0)))  # publisher restarted
    assert count(m, "restart") == 1
    assert sink.events[1].cleared
    assert sink.events[2].stored == (H[0],)
    await sub.handle(msg(1, AllBlocksCleared()))
    assert sink.events[-1] == ReplicaCache("r0", cleared=True)
    assert not sub.view.cached_hashes


async def test_malformed_messages_are_counted_and_become_a_gap(ctx: zmq.asyncio.Context) -> None:
    sub, sink, m = make(ctx)
    await sub.handle(msg(0, page(0)))
    await sub.handle([b"", seq_bytes(1)])  # two frames
    await sub.handle([b"", b"\x01", b""])  # bad sequence frame
    await sub.handle([b"", seq_bytes(1), b"\xc1\xc1"])  # not msgpack
    await sub.handle(msg(1, BlockStored((9,), None, (-5,) * 16, 16)))  # token id out of range
    assert count(m, "malformed") == 4
    assert sink.events[-1].cleared
    assert sub.last_seq == 1
    await sub.handle(msg(2, page(0)))
    assert sink.events[-1].stored == (H[0],)


async def test_refused_batches_are_resent_when_the_replica_is_announced() -> None:
    sink = Sink()
    sink.accept = False
    subs = KvEventSubscribers(
        KvEventSettings(endpoints={"r0": "tcp://127.0.0.1:1"}), 16, sink, ServiceMetrics(CollectorRegistry())
    )
    try:
        sub = subs.replicas["r0"].ranks[0]
        await sub.handle(msg(0, page(0), page(1)))
        sink.accept = True
        subs.on_replica_added("r0")
        assert sink.events[-1] == ReplicaCache("r0", stored=(H[0], H[1]), cleared=True)
        subs.on_replica_added("unknown")  # no subscription: nothing
        assert len(sink.events) == 2
    finally:
        await subs.stop()


def test_discovered_endpoint_is_the_replicas_host_at_the_port() -> None:
    assert discovered_endpoint("http://10.0.0.7:30000", 5557) == "tcp://10.0.0.7:5557"
    assert discovered_endpoint("https://pod.llm.svc:443", 6000) == "tcp://pod.llm.svc:6000"
    assert discovered_endpoint("http://[fd00::7]:30000", 5557) == "tcp://[fd00::7]:5557"
    assert discovered_endpoint("not a url", 5557) is None


async def test_discovered_replicas_come_and_go_static_ones_stay() -> None:
    sink = Sink()
    settings = KvEventSettings(endpoints={"r0": "tcp://127.0.0.1:1"}, discovered_port=2)
    subs = KvEventSubscribers(settings, 16, sink, ServiceMetrics(CollectorRegistry()))
    try:
        subs.on_replica_added("r1", "http://127.0.0.1:30000")  # before start(): no task yet
        assert subs.replicas["r1"].ranks[0].endpoint == "tcp://127.0.0.1:2"
        assert subs.replicas["r1"].ranks[0].replay_endpoint is None
        assert not subs.replicas["r1"].tasks
        subs.start()
        assert {rid: list(sub.tasks) for rid, sub in subs.replicas.items()} == {"r0": [0], "r1": [0]}
        static, static_task = subs.replicas["r0"].ranks[0], subs.replicas["r0"].tasks[0]
        # A static replica announced by discovery keeps its configured endpoint.
        subs.on_replica_added("r0", "http://127.0.0.9:30000")
        assert subs.replicas["r0"].ranks[0] is static
        assert static.endpoint == "tcp://127.0.0.1:1"

        old, old_task = subs.replicas["r1"].ranks[0], subs.replicas["r1"].tasks[0]
        await old.handle(msg(0, page(0)))
        subs.on_replica_removed("r1")
        assert "r1" not in subs.replicas
        await asyncio.wait([old_task])
        assert old_task.cancelled()
        subs.on_replica_removed("r0")  # static: keeps running
        assert subs.replicas["r0"].tasks[0] is static_task
        assert not static_task.done()

        # Back at a new address: a fresh subscription with an empty view, nothing re-sent.
        sent = len(sink.events)
        subs.on_replica_added("r1", "http://[::1]:30000")
        new = subs.replicas["r1"].ranks[0]
        assert new is not old
        assert new.endpoint == "tcp://[::1]:2"
        assert new.last_seq is None
        assert not new.view.cached_hashes
        assert subs.replicas["r1"].tasks[0] is not old_task
        assert len(sink.events) == sent
        retired = subs.replicas["r1"].tasks[0]
        subs.on_replica_removed("r1")  # stop() still waits for it to end
    finally:
        await subs.stop()
    assert retired.cancelled()
    assert static_task.cancelled()


async def test_no_discovered_port_no_discovered_subscription() -> None:
    sink = Sink()
    subs = KvEventSubscribers(KvEventSettings(), 16, sink, ServiceMetrics(CollectorRegistry()))
    try:
        subs.start()
        subs.on_replica_added("r1", "http://127.0.0.1:30000")
        subs.on_replica_removed("r1")
        subs.on_replica_removed("never-added")
        assert not subs.replicas
        assert not sink.events
    finally:
        await subs.stop()


async def test_a_discovered_replicas_named_kv_events_port_wins() -> None:
    """Pools may publish on different ports: the replica's EndpointSlice port named
    ``discovered_port_name`` is used, ``discovered_port`` only when its slice has none."""
    settings = KvEventSettings(discovered_port=5557)
    subs = KvEventSubscribers(settings, 16, Sink(), ServiceMetrics(CollectorRegistry()))
    try:
        subs.on_replica_added("a", "http://10.0.0.7:30000", (("http", 30000), ("kv-events", 6001)))
        subs.on_replica_added("b", "http://10.0.0.8:30000", (("http", 30000),))
        assert subs.replicas["a"].ranks[0].endpoint == "tcp://10.0.0.7:6001"
        assert subs.replicas["b"].ranks[0].endpoint == "tcp://10.0.0.8:5557"
    finally:
        await subs.stop()
    off = KvEventSettings(discovered_port=5557, discovered_port_name="")
    subs = KvEventSubscribers(off, 16, Sink(), ServiceMetrics(CollectorRegistry()))
    try:
        subs.on_replica_added("a", "http://10.0.0.7:30000", (("kv-events", 6001),))
        assert subs.replicas["a"].ranks[0].endpoint == "tcp://10.0.0.7:5557"
    finally:
        await subs.stop()
    none = KvEventSettings()  # discovered_port 0 is the switch: a named port alone does nothing
    subs = KvEventSubscribers(none, 16, Sink(), ServiceMetrics(CollectorRegistry()))
    try:
        subs.on_replica_added("a", "http://10.0.0.7:30000", (("kv-events", 6001),))
        assert not subs.replicas
    finally:
        await subs.stop()
