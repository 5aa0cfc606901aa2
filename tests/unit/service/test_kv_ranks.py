"""KV events of data-parallel attention ranks: one view per replica holding the union of its
ranks' caches, one subscriber per rank (own sequence, own gaps), rank endpoints at the ports +
rank, and discovered replicas' replay endpoints from their EndpointSlice's named port."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import zmq.asyncio
from prometheus_client import CollectorRegistry

from saga.kv_events import (
    AllBlocksCleared,
    BlockRemoved,
    BlockStored,
    KvEventBatch,
    WireEvent,
    encode_batch,
    seq_bytes,
)
from saga.scheduler.api import ReplicaCache
from saga.service.config import KvEventSettings
from saga.service.kv_events import KvEventSubscriber, KvEventSubscribers, rank_endpoint
from saga.service.kv_view import ReplicaKvView
from saga.service.metrics import ServiceMetrics
from saga.service.tokens import ids_prompt

pytestmark = pytest.mark.unit

BS = 16
A = list(range(64))  # prefix A: 4 SAGA blocks
B = list(range(1000, 1032))  # prefix B: 2 SAGA blocks
HA = ids_prompt(A, block_size=BS, max_blocks=64).block_hashes
HB = ids_prompt(B, block_size=BS, max_blocks=64).block_hashes


def chain(ids: list[int], base: int) -> list[BlockStored]:
    """SGLang-style pages of 16 tokens, hashes ``base + i``, each the parent of the next."""
    return [
        BlockStored((base + i,), None if i == 0 else base + i - 1, tuple(ids[i * BS : (i + 1) * BS]), BS)
        for i in range(len(ids) // BS)
    ]


def batch(*events: WireEvent) -> KvEventBatch:
    return KvEventBatch(0.0, events)


def test_ranks_merge_into_one_union() -> None:
    v = ReplicaKvView("r0", BS)
    # SGLang's chained hashes name a prefix, so both ranks may publish the same hashes.
    e0 = v.apply(batch(*chain(A, 100)), rank=0)
    e1 = v.apply(batch(*chain(A[:32], 100), *chain(B, 500)), rank=1)
    assert set(e0.stored) == set(HA)
    assert set(e1.stored) == set(HA[:2]) | set(HB)
    assert v.cached_hashes == set(HA) | set(HB)
    assert v.ranks == (0, 1)
    assert v.rank_hashes(1) == set(HA[:2]) | set(HB)
    # Rank 0 evicts A's first two pages' subtree: rank 1 still holds A[:32].
    e = v.apply(batch(BlockRemoved((103,)), BlockRemoved((102,)), BlockRemoved((101,))), rank=0)
    assert set(e.removed) == {HA[2], HA[3]}  # HA[1] is still on rank 1
    assert not e.cleared
    assert v.cached_hashes == set(HA[:2]) | set(HB)
    # Rank 1 evicts its copy of A[16:32]: rank 0 still has page 100 (A[:16]) only.
    e = v.apply(batch(BlockRemoved((101,))), rank=1)
    assert e.removed == (HA[1],)
    assert v.cached_hashes == {HA[0]} | set(HB)


def test_a_ranks_reset_or_clear_removes_only_what_it_alone_held() -> None:
    v = ReplicaKvView("r0", BS)
    v.apply(batch(*chain(A[:32], 100)), rank=0)
    v.apply(batch(*chain(A, 100), *chain(B, 500)), rank=1)
    e = v.reset(1)  # a gap on rank 1: rank 0's blocks stay known
    assert not e.cleared
    assert set(e.removed) == set(HA[2:]) | set(HB)
    assert v.cached_hashes == set(HA[:2])
    # After the reset rank 1's chain states survive: a block extending B still maps.
    e = v.apply(batch(BlockStored((502,), 501, tuple(range(2000, 2016)), BS)), rank=1)
    assert len(e.stored) == 1
    # AllBlocksCleared of rank 0 (rank 1 holds something): not a replica-wide clear either.
    e = v.apply(batch(AllBlocksCleared()), rank=0)
    assert not e.cleared
    assert set(e.removed) == set(HA[:2])
    assert v.cached_hashes == v.rank_hashes(1)
    assert len(v.cached_hashes) == 1
    # The last rank holding anything clears: that is the whole replica.
    e = v.apply(batch(AllBlocksCleared()), rank=1)
    assert e == ReplicaCache("r0", cleared=True)
    assert not v.cached_hashes
    v.apply(batch(*chain(B, 500)), rank=1)
    assert v.reset(1) == ReplicaCache("r0", cleared=True)


def test_max_tracked_blocks_counts_every_rank() -> None:
    v = ReplicaKvView("r0", BS, max_tracked_blocks=3)
    v.apply(batch(*chain(A[:32], 100)), rank=0)
    e = v.apply(batch(*chain(B, 500)), rank=1)  # 4 blocks > 3: rank 1's oldest goes
    assert v.tracked_blocks == 3
    assert (e.stored, e.removed) == ((HB[1],), (HB[0],))  # HB[0] stored, then dropped
    assert v.cached_hashes == set(HA[:2]) | {HB[1]}


@pytest.fixture
async def ctx() -> AsyncIterator[zmq.asyncio.Context]:
    c = zmq.asyncio.Context()
    yield c
    c.term()


def msg(seq: int, *events: WireEvent) -> list[bytes]:
    return [b"", seq_bytes(seq), encode_batch(0.0, events)]


async def test_a_gap_on_one_rank_resets_that_rank_only(ctx: zmq.asyncio.Context) -> None:
    sent: list[ReplicaCache] = []

    def sink(e: ReplicaCache) -> bool:
        sent.append(e)
        return True

    m = ServiceMetrics(CollectorRegistry())
    view = ReplicaKvView("r0", BS)
    r0 = KvEventSubscriber(view, "tcp://127.0.0.1:1", sink, m, ctx=ctx)
    r1 = KvEventSubscriber(view, "tcp://127.0.0.1:2", sink, m, ctx=ctx, rank=1)
    assert (r0.replica_id, r1.replica_id) == ("r0", "r0 rank 1")
    await r0.handle(msg(7, *chain(A, 100)))  # each rank numbers its own batches
    await r1.handle(msg(0, *chain(B, 500)))
    await r1.handle(msg(1, BlockStored((900,), None, tuple(range(16)), BS)))  # A[:16] on rank 1 too
    await r1.handle(msg(5))  # rank 1 lost 2..4, no replay endpoint
    assert sent[-1] == ReplicaCache("r0", removed=tuple(HB))  # A[:16] is still on rank 0
    assert view.cached_hashes == set(HA)
    assert (r0.last_seq, r1.last_seq) == (7, 5)
    await r0.handle(msg(8, BlockRemoved((100,))))  # rank 0 evicts A's root: A[:16] was rank 1's too
    assert sent[-1].removed == (HA[0],)  # rank 1's copy was reset: nothing holds it


async def test_discovered_replica_with_dp_ranks_and_replay_port() -> None:
    settings = KvEventSettings(discovered_port=5557)
    subs = KvEventSubscribers(settings, BS, lambda e: True, ServiceMetrics(CollectorRegistry()))
    ports = (("http", 30000), ("kv-events", 6001), ("kv-replay", 6101))
    try:
        subs.on_replica_added("a", "http://10.0.0.7:30000", ports, dp_ranks=2)
        subs.on_replica_added("b", "http://[fd00::8]:30000", (("http", 30000),), dp_ranks=1)
        subs.start()
        a, b = subs.replicas["a"], subs.replicas["b"]
        got = [(s.rank, s.endpoint, s.replay_endpoint) for s in a.ranks]
        assert got == [
            (0, "tcp://10.0.0.7:6001", "tcp://10.0.0.7:6101"),
            (1, "tcp://10.0.0.7:6002", "tcp://10.0.0.7:6102"),
        ]
        assert all(s.view is a.view for s in a.ranks)  # one merged view per replica
        assert sorted(a.tasks) == [0, 1]
        assert [(s.endpoint, s.replay_endpoint) for s in b.ranks] == [("tcp://[fd00::8]:5557", None)]
        tasks = list(a.tasks.values())
        subs.on_replica_removed("a")  # every rank's task goes
        assert "a" not in subs.replicas
        await asyncio.wait(tasks)
        assert all(t.cancelled() for t in tasks)
    finally:
        await subs.stop()
    off = KvEventSettings(discovered_port=5557, discovered_replay_port_name="")
    subs = KvEventSubscribers(off, BS, lambda e: True, ServiceMetrics(CollectorRegistry()))
    try:
        subs.on_replica_added("a", "http://10.0.0.7:30000", ports)
        assert subs.replicas["a"].ranks[0].replay_endpoint is None
    finally:
        await subs.stop()


async def test_static_replica_reads_its_other_ranks_once_announced() -> None:
    sent: list[ReplicaCache] = []

    def sink(e: ReplicaCache) -> bool:
        sent.append(e)
        return True

    settings = KvEventSettings(
        endpoints={"r0": "tcp://127.0.0.1:7000"}, replay_endpoints={"r0": "tcp://127.0.0.1:7100"}
    )
    subs = KvEventSubscribers(settings, BS, sink, ServiceMetrics(CollectorRegistry()))
    try:
        subs.start()
        sub = subs.replicas["r0"]
        assert [s.endpoint for s in sub.ranks] == ["tcp://127.0.0.1:7000"]
        await sub.ranks[0].handle(msg(0, *chain(A[:16], 100)))
        subs.on_replica_added("r0", "http://127.0.0.1:30000", (), dp_ranks=3)
        got = [(s.endpoint, s.replay_endpoint) for s in sub.ranks]
        assert got == [
            ("tcp://127.0.0.1:7000", "tcp://127.0.0.1:7100"),
            ("tcp://127.0.0.1:7001", "tcp://127.0.0.1:7101"),
            ("tcp://127.0.0.1:7002", "tcp://127.0.0.1:7102"),
        ]
        assert sorted(sub.tasks) == [0, 1, 2]
        assert sent[-1] == ReplicaCache("r0", stored=(HA[0],), cleared=True)  # the view re-sent
        subs.on_replica_added("r0", dp_ranks=2)  # never fewer: extra ranks just stay quiet
        assert len(sub.ranks) == 3
    finally:
        await subs.stop()


def test_rank_endpoints_follow_sglang() -> None:
    assert rank_endpoint("tcp://10.0.0.7:5557", 0) == "tcp://10.0.0.7:5557"
    assert rank_endpoint("tcp://10.0.0.7:5557", 3) == "tcp://10.0.0.7:5560"
    assert rank_endpoint("tcp://[fd00::7]:5557", 1) == "tcp://[fd00::7]:5558"
    assert rank_endpoint("inproc://kv", 2) == "inproc://kv_dp2"
    assert rank_endpoint("tcp://10.0.0.7:65535", 1) is None  # no such port
    assert rank_endpoint("ipc:///tmp/kv", 1) is None  # SGLang refuses it for a rank > 0
    assert rank_endpoint("ipc:///tmp/kv", 0) == "ipc:///tmp/kv"
