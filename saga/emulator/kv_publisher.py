"""Publishes an emulated replica's KV cache events the way SGLang's ``ZmqEventPublisher`` does.

``saga emulate --kv-events-config '{"publisher": "zmq", "endpoint": "tcp://*:5557"}'`` (the
same flag and JSON as SGLang, :class:`saga.kv_events.KvEventsConfig`): every time the replica
runtime advances its model, the model's recorded KV events (``ReplicaModel.drain_kv_events``)
become one ``KVEventBatch`` sent as ``[topic, seq, payload]`` on a ZMQ PUB socket (format:
:mod:`saga.kv_events`; events as maps, as SGLang 0.5.20 on, or as arrays, as up to 0.5.19:
``KvEventsConfig.wire``, ``saga emulate --kv-events-wire``). Replica ``i`` of
``saga emulate --replicas N`` publishes on the TCP port + ``i``, as SGLang's data-parallel rank
``i`` does. The PUB socket never blocks the event loop: a batch that finds the high-water mark
reached is dropped (the subscriber sees a sequence gap), as with SGLang.

Events map one to one: a stored radix node is one ``BlockStored`` with all its page keys (the
emulator's chained page keys are its block hashes, the previous page's key the parent, the
pages' token ids as ``token_ids``), an evicted node one ``BlockRemoved``, a flush
``AllBlocksCleared``. SGLang sends one ``BlockStored`` per page; both shapes are valid
``KVEventBatch`` messages and the subscriber handles both.

Replay: with ``replay_endpoint`` set, a ZMQ ROUTER answers ``[b"", start_seq]`` with every
buffered batch from ``start_seq`` on (at most ``buffer_steps`` kept) and the end marker; rank
``i`` serves it on the replay endpoint's port + ``i``, as SGLang does. ``drop_next`` (a fault
knob) makes the next batches miss the PUB socket but not the replay buffer.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Sequence

import zmq
import zmq.asyncio

from saga.emulator.core import AllBlocksCleared, BlockRemoved, BlockStored, KVEvent
from saga.kv_events import (
    END_SEQ,
    KvEventsConfig,
    WireEvent,
    binds,
    encode_batch,
    offset_endpoint,
    parse_seq,
    seq_bytes,
)
from saga.kv_events import AllBlocksCleared as WireCleared
from saga.kv_events import BlockRemoved as WireRemoved
from saga.kv_events import BlockStored as WireStored

log = logging.getLogger(__name__)


def to_wire(events: Sequence[KVEvent]) -> list[WireEvent]:
    """The model's KV events as SGLang wire events (stored pages without token ids, i.e. from
    pre-hashed requests, are left out: SGLang always knows its tokens)."""
    out: list[WireEvent] = []
    for e in events:
        if isinstance(e, BlockStored):
            if e.token_ids is not None:
                out.append(WireStored(e.block_hashes, e.parent_block_hash, e.token_ids, e.block_size))
        elif isinstance(e, BlockRemoved):
            out.append(WireRemoved(e.block_hashes))
        elif isinstance(e, AllBlocksCleared):
            out.append(WireCleared())
    return out


class KvEventPublisher:
    """One replica's PUB socket (and optional replay ROUTER); see the module docstring."""

    def __init__(self, config: KvEventsConfig, rank: int = 0) -> None:
        self.config = config
        self.endpoint = offset_endpoint(config.endpoint, rank) or config.endpoint
        self.replay_endpoint = offset_endpoint(config.replay_endpoint, rank)
        self._topic = config.topic.encode()
        self._seq = 0
        self._buffer: collections.deque[tuple[int, bytes]] = collections.deque(maxlen=config.buffer_steps)
        self.dropped = 0
        # Fault knob: the next this many batches are numbered and kept for replay but not
        # sent, as when the PUB socket's high-water mark is reached (a sequence gap on demand).
        self.drop_next = 0
        self._sync_ctx = zmq.Context()  # PUB: plain socket, sent from the runtime's callbacks
        self._ctx = zmq.asyncio.Context()  # replay ROUTER: served by a task
        self._pub: zmq.Socket[bytes] = self._sync_ctx.socket(zmq.PUB)
        self._pub.set_hwm(config.hwm)
        self._pub.linger = 0
        if binds(self.endpoint):
            self._pub.bind(self.endpoint)
        else:
            self._pub.connect(self.endpoint)
        self._router: zmq.asyncio.Socket | None = None
        self._replay_task: asyncio.Task[None] | None = None
        if self.replay_endpoint is not None:
            self._router = self._ctx.socket(zmq.ROUTER)
            self._router.linger = 0
            self._router.bind(self.replay_endpoint)
            self._replay_task = asyncio.get_running_loop().create_task(self._serve_replay())

    @property
    def bound_endpoint(self) -> str:
        """The PUB socket's address as bound (``tcp://127.0.0.1:*`` binds a free port)."""
        last = self._pub.get(zmq.LAST_ENDPOINT)
        return last.decode() if isinstance(last, bytes) and last else self.endpoint

    @property
    def bound_replay_endpoint(self) -> str | None:
        if self._router is None:
            return None
        last = self._router.get(zmq.LAST_ENDPOINT)
        return last.decode() if isinstance(last, bytes) and last else self.replay_endpoint

    @property
    def next_seq(self) -> int:
        return self._seq

    def publish(self, events: Sequence[KVEvent]) -> None:
        batch = to_wire(events)
        if not batch:
            return
        seq = self._seq
        self._seq += 1
        payload = encode_batch(time.time(), batch, wire=self.config.wire)
        self._buffer.append((seq, payload))
        if self.drop_next > 0:
            self.drop_next -= 1
            self.dropped += 1
            return
        try:
            # A PUB socket never blocks; NOBLOCK makes a full queue raise instead of waiting.
            self._pub.send_multipart([self._topic, seq_bytes(seq), payload], flags=zmq.NOBLOCK)
        except zmq.Again:
            self.dropped += 1

    async def _serve_replay(self) -> None:
        assert self._router is not None
        while True:
            try:
                frames = await self._router.recv_multipart()
            except (asyncio.CancelledError, zmq.ZMQError):
                return
            if len(frames) != 3:
                log.warning("kv events: invalid replay request (%d frames)", len(frames))
                continue
            client, _empty, start = frames
            try:
                start_seq = parse_seq(start)
            except ValueError:
                log.warning("kv events: invalid replay start sequence")
                continue
            for seq, payload in list(self._buffer):
                if seq >= start_seq:
                    await self._router.send_multipart([client, b"", seq_bytes(seq), payload])
            await self._router.send_multipart([client, b"", seq_bytes(END_SEQ), b""])

    async def close(self) -> None:
        if self._replay_task is not None:
            self._replay_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._replay_task
        self._pub.close(linger=0)
        if self._router is not None:
            self._router.close(linger=0)
        self._ctx.term()
        self._sync_ctx.term()
