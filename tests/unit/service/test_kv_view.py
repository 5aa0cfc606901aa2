"""SGLang KV event wire format, and the mapping of replica blocks to SAGA's block hashes."""

from __future__ import annotations

import msgpack
import pytest

from saga.cli import main
from saga.emulator.core import ReplicaConfig, ReplicaModel, Request, output_token_ids
from saga.emulator.kv_publisher import to_wire
from saga.kv_events import (
    AllBlocksCleared,
    BlockRemoved,
    BlockStored,
    KvEventBatch,
    KvEventDecodeError,
    KvEventsConfig,
    KvEventsConfigError,
    WireEvent,
    binds,
    decode_batch,
    encode_batch,
    offset_endpoint,
    parse_seq,
    seq_bytes,
)
from saga.service.kv_view import ApplyStats, ReplicaKvView
from saga.service.tokens import ids_prompt

pytestmark = pytest.mark.unit

BS = 16


def saga_hashes(ids: list[int]) -> tuple[int, ...]:
    return ids_prompt(ids, block_size=BS, max_blocks=1 << 20).block_hashes


def sglang_pages(
    ids: list[int], page: int, first_hash: int = 1000, parent: int | None = None
) -> list[BlockStored]:
    """One BlockStored per page, chained by parent hash, as SGLang's radix cache sends them."""
    out = []
    for i in range(len(ids) // page):
        h = first_hash + i
        out.append(BlockStored((h,), parent, tuple(ids[i * page : (i + 1) * page]), page))
        parent = h
    return out


def batch(*events: WireEvent) -> KvEventBatch:
    return KvEventBatch(0.0, events)


# ----------------------------------------------------------------------------- wire format


@pytest.mark.parametrize("wire", ["map", "array"])
def test_roundtrip_and_sglang_shapes(wire: str) -> None:
    evs: list[WireEvent] = [
        BlockStored((1, 2), None, (5, 6, 7, 8), 2),
        BlockRemoved((2,)),
        AllBlocksCleared(),
    ]
    assert decode_batch(encode_batch(1.5, evs, wire=wire)) == KvEventBatch(1.5, tuple(evs))
    first = msgpack.unpackb(encode_batch(1.5, evs, wire=wire))[1][0]
    assert isinstance(first, dict if wire == "map" else list)
    # a later SGLang: BlockStored/BlockRemoved end with `medium`, the batch with attn_dp_rank
    later = msgpack.packb(
        [2.0, [["BlockStored", [-7], 3, [1, 2], 2, None, "GPU"], ["BlockRemoved", [-7], "GPU"]], 0]
    )
    assert decode_batch(later).events == (BlockStored((-7,), 3, (1, 2), 2), BlockRemoved((-7,)))
    # SGLang 0.5.20 on: tagged maps with optional fields omitted or added (session_id, medium)
    maps = msgpack.packb(
        [
            2.0,
            [
                {
                    "type": "BlockStored",
                    "block_hashes": [-7],
                    "parent_block_hash": 3,
                    "token_ids": [1, 2],
                    "block_size": 2,
                    "lora_id": None,
                    "session_id": "s",
                    "medium": "GPU",
                },
                {"type": "BlockRemoved", "block_hashes": [-7]},
                {"type": "AllBlocksCleared"},
            ],
            1,
        ]
    )
    assert decode_batch(maps).events == (
        BlockStored((-7,), 3, (1, 2), 2),
        BlockRemoved((-7,)),
        AllBlocksCleared(),
    )
    with pytest.raises(ValueError, match="wire"):
        encode_batch(1.0, evs, wire="json")
    assert parse_seq(seq_bytes(41)) == 41
    assert parse_seq(seq_bytes(-1)) == -1


@pytest.mark.parametrize(
    "payload",
    [
        b"\xc1garbage",
        msgpack.packb({"ts": 1, "events": []}),
        msgpack.packb([1.0]),
        msgpack.packb(["x", []]),
        msgpack.packb([1.0, "events"]),
        msgpack.packb([1.0, [["Nope"]]]),
        msgpack.packb([1.0, [[]]]),
        msgpack.packb([1.0, [["BlockStored", [1], None, [1, 2, 3], 2, None]]]),  # 3 ids, 1 block of 2
        msgpack.packb([1.0, [["BlockStored", ["a"], None, [1, 2], 2, None]]]),
        msgpack.packb([1.0, [["BlockStored", [1], "p", [1, 2], 2, None]]]),
        msgpack.packb([1.0, [["BlockStored", [1], None, [1, 2], 0, None]]]),
        msgpack.packb([1.0, [["BlockRemoved"]]]),
        msgpack.packb([1.0, [{"block_hashes": [1]}]]),  # a map without its type
        msgpack.packb([1.0, [{"type": "Nope"}]]),
        msgpack.packb([1.0, [{"type": "BlockRemoved"}]]),
        msgpack.packb([1.0, [{"type": "BlockStored", "block_hashes": [1], "token_ids": [1, 2]}]]),
        msgpack.packb(
            [1.0, [{"type": "BlockStored", "block_hashes": [1], "token_ids": [1], "block_size": 2}]]
        ),
    ],
)
def test_bad_payloads_raise(payload: bytes) -> None:
    with pytest.raises(KvEventDecodeError):
        decode_batch(payload)


def test_bad_sequence_frame() -> None:
    with pytest.raises(KvEventDecodeError):
        parse_seq(b"\x00\x01")


def test_config_like_sglang() -> None:
    cfg = KvEventsConfig.from_json('{"publisher": "zmq", "endpoint": "tcp://*:5557", "topic": "kv"}')
    assert (cfg.publisher, cfg.endpoint, cfg.topic, cfg.buffer_steps) == ("zmq", "tcp://*:5557", "kv", 10_000)
    assert offset_endpoint("tcp://*:5557", 2) == "tcp://*:5559"
    assert offset_endpoint("inproc://kv", 1) == "inproc://kv_dp1"
    # SGLang's ZmqEventPublisher binds wildcards (0.0.0.0 too, from 0.5.17) and connects the rest
    for ep in ("tcp://*:5557", "tcp://0.0.0.0:5557", "tcp://[::]:5557", "ipc:///tmp/kv", "inproc://kv"):
        assert binds(ep), ep
    assert not binds("tcp://127.0.0.1:5557")
    assert not binds("tcp://saga-scheduler:5557")
    for bad in ("[]", "{", '{"publisher": "kafka"}', '{"hwm": 0}', '{"nope": 1}', '{"endpoint": 5}'):
        with pytest.raises(KvEventsConfigError):
            KvEventsConfig.from_json(bad)


# ----------------------------------------------------------------------------- mapping


@pytest.mark.parametrize("page", [1, 4, 16, 24])
def test_sglang_pages_map_to_saga_hashes(page: int) -> None:
    ids = list(range(7, 7 + 96))
    v = ReplicaKvView("r0", BS)
    ev = v.apply(batch(*sglang_pages(ids, page)))
    full = (len(ids) // page) * page
    assert set(ev.stored) == set(saga_hashes(ids[:full]))
    assert v.cached_hashes == set(saga_hashes(ids[:full]))


def test_one_event_with_many_blocks_and_a_branch() -> None:
    ids = list(range(100, 164))  # 64 tokens
    v = ReplicaKvView("r0", BS)
    v.apply(batch(BlockStored(tuple(range(1, 9)), None, tuple(ids[:32]), 4)))  # one node of 8 pages
    branch = ids[:32] + [9] * 32
    ev = v.apply(batch(BlockStored((50, 51, 52, 53), 8, tuple(branch[32:48]), 4)))  # child of page 8
    assert set(ev.stored) == {saga_hashes(branch)[2]}
    assert v.cached_hashes == set(saga_hashes(branch[:48]))


def test_removal_uncaches_the_blocks_ending_in_the_page() -> None:
    ids = list(range(64))
    v = ReplicaKvView("r0", BS)
    v.apply(batch(*sglang_pages(ids, 8)))  # pages 1000..1007; SAGA block j ends in page 2j+1
    h = saga_hashes(ids)
    ev = v.apply(batch(BlockRemoved((1007,)), BlockRemoved((1006,))))
    assert ev.removed == (h[3],)
    assert not ev.stored
    ev = v.apply(batch(BlockRemoved((1005,)), BlockRemoved((999_999,))))
    assert ev.removed == (h[2],)
    assert v.cached_hashes == set(h[:2])


def test_store_then_remove_in_one_batch_and_split_reinsert() -> None:
    ids = list(range(32))
    v = ReplicaKvView("r0", BS)
    pages = sglang_pages(ids, 16)
    ev = v.apply(batch(*pages, BlockRemoved((1001,))))
    assert ev.stored == (saga_hashes(ids)[0],)
    assert saga_hashes(ids)[1] in ev.removed
    # SGLang's node split: remove + store of the same pages; stays cached, counted once
    v.apply(batch(pages[1]))
    ev = v.apply(batch(BlockRemoved((1001,)), pages[1]))
    assert v.cached_hashes == set(saga_hashes(ids))
    assert not ev.removed
    v.apply(batch(pages[1]))  # stored twice: still one reference
    v.apply(batch(BlockRemoved((1001,))))
    assert v.cached_hashes == {saga_hashes(ids)[0]}


def test_unknown_parent_is_unmapped_and_cleared_resets() -> None:
    v = ReplicaKvView("r0", BS)
    st = ApplyStats()
    ev = v.apply(batch(BlockStored((5, 6), 77, tuple(range(32)), 16)), st)
    assert st.unmapped_blocks == 2
    assert not ev.stored
    v.apply(batch(*sglang_pages(list(range(32)), 16)))
    ev = v.apply(batch(AllBlocksCleared()))
    assert ev.cleared
    assert not v.cached_hashes
    assert v.tracked_blocks == 0


def test_reset_keeps_chain_states() -> None:
    ids = list(range(64))
    v = ReplicaKvView("r0", BS)
    pages = sglang_pages(ids, 16)
    v.apply(batch(*pages[:2]))
    assert v.reset().cleared
    assert not v.cached_hashes
    ev = v.apply(batch(pages[2]))  # child of a block stored before the gap: still maps
    assert ev.stored == (saga_hashes(ids)[2],)
    v.apply(batch(BlockRemoved((1000,))))  # stored before the reset: not counted, nothing to remove
    assert v.cached_hashes == {saga_hashes(ids)[2]}
    snap = v.snapshot()
    assert snap.cleared
    assert snap.stored == (saga_hashes(ids)[2],)


def test_bad_token_ids_and_tracking_bound() -> None:
    v = ReplicaKvView("r0", BS, max_tracked_blocks=2)
    with pytest.raises(KvEventDecodeError):
        v.apply(batch(BlockStored((1,), None, (-1,) * 16, 16)))
    ids = list(range(48))
    ev = v.apply(batch(*sglang_pages(ids, 16)))
    assert v.tracked_blocks == 2
    assert v.cached_hashes == set(saga_hashes(ids)[1:])  # the oldest block was dropped
    assert saga_hashes(ids)[0] not in ev.stored


def test_emulator_events_map_to_the_prompts_saga_hashes() -> None:
    """The emulator's own KV events (prompt pages at prefill, output pages at finish) give the
    SAGA hashes of the prompt, and of prompt + output for the session's next call."""
    for page in (1, 16):
        m = ReplicaModel(ReplicaConfig(page_size=page), "r0", record_kv_events=True)
        ids = [(i * 7) % 500 for i in range(200)]
        req = Request.from_tokens("c1", ids, 40, page, seed=3)
        m.submit(req, 0.0)
        t = 0.0
        while (nt := m.next_event_time()) is not None:
            t = nt
            m.advance(t)
        v = ReplicaKvView("r0", BS)
        v.apply(batch(*to_wire(m.drain_kv_events())))
        out = output_token_ids(3, 40)  # every output token, the last one included
        expected = saga_hashes((ids + out)[: ((len(ids) + 40) // page) * page])
        assert v.cached_hashes == set(expected)
        assert set(saga_hashes(ids)) <= v.cached_hashes


def test_saga_emulate_refuses_a_bad_kv_events_config(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["emulate", "--kv-events-config", '{"publisher": "kafka"}']) == 2
    assert "unknown publisher 'kafka'" in capsys.readouterr().err
