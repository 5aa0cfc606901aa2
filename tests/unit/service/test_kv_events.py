"""The KV event subscriber's message handling: sequence gaps, restarts, malformed messages."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import zmq.asyncio
from prometheus_client import CollectorRegistry

from saga.kv_events import AllBlocksCleared, BlockRemoved, BlockStored, encode_batch, seq_bytes
from saga.scheduler.api import ReplicaCache
from saga.service.config import KvEventSettings
from saga.service.kv_events import KvEventSubscriber, KvEventSubscribers
from saga.service.kv_view import ReplicaKvView
from saga.service.metrics import ServiceMetrics
from saga.service.tokens import ids_prompt

pytestmark = pytest.mark.unit

IDS = list(range(64))
H = ids_prompt(IDS, block_size=16, max_blocks=64).block_hashes


def page(i: int) -> BlockStored:
    return BlockStored((100 + i,), None if i == 0 else 99 + i, tuple(IDS[i * 16 : (i + 1) * 16]), 16)


def msg(seq: int, *events: object) -> list[bytes]:
    return [b"", seq_bytes(seq), encode_batch(0.0, events)]  # type: ignore[arg-type]


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
        sub = subs.subscribers["r0"]
        await sub.handle(msg(0, page(0), page(1)))
        sink.accept = True
        subs.on_replica_added("r0")
        assert sink.events[-1] == ReplicaCache("r0", stored=(H[0], H[1]), cleared=True)
        subs.on_replica_added("unknown")  # no subscription: nothing
        assert len(sink.events) == 2
    finally:
        await subs.stop()
