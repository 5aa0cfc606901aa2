"""SGLang's KV cache events on the wire: the publisher config and the batch format.

What SGLang 0.5 does (``python/sglang/srt/disaggregation/kv_events.py``, started by
``--kv-events-config '<JSON>'``; the radix cache's events come from ``_record_store_event`` /
``_record_remove_event`` in ``python/sglang/srt/mem_cache/``):

- Config: a JSON object, SGLang's ``KVEventsConfig``: ``publisher`` (``"null"`` or ``"zmq"``),
  ``endpoint`` (``"tcp://*:5557"``: a ``*``, ``::``, ``ipc://`` or ``inproc://`` endpoint is
  bound, any other connected), ``replay_endpoint`` (optional ZMQ ROUTER for replays),
  ``buffer_steps`` (batches kept for replay, 10,000), ``hwm`` (PUB high-water mark, 100,000),
  ``max_queue_size`` (100,000), ``topic`` (``""``). With data-parallel attention, rank ``r``
  adds ``r`` to the TCP ports (``offset_endpoint_port``).
- Messages: a ZMQ PUB multipart ``[topic, seq, payload]``; ``seq`` is an 8-byte big-endian
  unsigned counter from 0, one per batch; ``payload`` is a msgpack ``KVEventBatch``, which
  msgspec encodes as an array (``array_like=True``): ``[ts, [event, ...]]`` (later releases
  append an optional ``attn_dp_rank``). Each event is a tagged msgspec struct, in one of two
  shapes (read from the releases' own ``kv_events.py``; contract test
  ``tests/contract/sglang/test_kv_events_wire.py``):

  * **array** (up to 0.5.19): ``[tag, fields...]``:
    ``["BlockStored", block_hashes, parent_block_hash, token_ids, block_size, lora_id]``
    (later releases append ``medium``), ``["BlockRemoved", block_hashes]`` (+ ``medium``),
    ``["AllBlocksCleared"]``;
  * **map** (0.5.20 on, vLLM's encoding): ``{"type": tag, field: value, ...}`` with the same
    field names, optional fields left at their default omitted (``medium``, ``cache_salt``,
    ``session_id``).

  :func:`decode_batch` reads both; :func:`encode_batch` writes either (``wire``).
- Replay: a client sends ``[b"", start_seq]`` (8-byte big-endian) to the ROUTER; it answers
  ``[b"", seq, payload]`` for every buffered batch from ``start_seq`` on, then
  ``[b"", -1 (8-byte signed), b""]``.
- Hashes: SGLang publishes one ``BlockStored`` per radix page, ``token_ids`` being the page's
  tokens and ``parent_block_hash`` the previous page's hash. Releases with
  ``compute_node_hash_values`` chain the hashes (SHA-256 of the page's ids and the parent's
  hash, cut to a signed 64-bit int), so a hash names a whole prefix; earlier 0.5 releases
  published ``hash(tuple(page tokens))`` of the page alone with no parent, which names no
  prefix. SAGA therefore never compares SGLang's hashes with its own: it re-hashes the
  published token ids into its own prefix-block hashes (:mod:`saga.service.kv_view`).

Decoding is strict about shape (a batch that is not ``[number, list]``, an event with an
unknown tag or a wrong field type raises :class:`KvEventDecodeError`) and lenient about
additions (trailing fields and unknown keys of later releases are ignored). The emulator
publishes with :func:`encode_batch` (``KvEventsConfig.wire``, map by default, as the current
releases); the service reads with :func:`decode_batch`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import msgpack

END_SEQ = -1
"""Sequence number of a replay's end marker."""


class KvEventDecodeError(ValueError):
    """A KV event message that is not SGLang's format."""


class KvEventsConfigError(ValueError):
    """A ``--kv-events-config`` document that SGLang would refuse."""


@dataclass(frozen=True, slots=True)
class KvEventsConfig:
    """SGLang's ``KVEventsConfig`` fields and defaults (see the module docstring)."""

    publisher: str = "null"
    endpoint: str = "tcp://*:5557"
    replay_endpoint: str | None = None
    buffer_steps: int = 10_000
    hwm: int = 100_000
    max_queue_size: int = 100_000
    topic: str = ""
    # Not SGLang's (never read from the JSON): the emulator's event encoding, "map" (SGLang
    # 0.5.20 on) or "array" (up to 0.5.19); see the module docstring.
    wire: str = "map"

    @classmethod
    def from_json(cls, text: str) -> KvEventsConfig:
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise KvEventsConfigError(f"--kv-events-config: not JSON: {exc}") from exc
        if not isinstance(doc, dict):
            raise KvEventsConfigError("--kv-events-config: expected a JSON object")
        known = {f.name for f in fields(cls)} - {"wire"}
        unknown = sorted(set(doc) - known)
        if unknown:
            raise KvEventsConfigError(f"--kv-events-config: unknown field(s) {', '.join(unknown)}")
        for name in ("publisher", "endpoint", "topic"):
            if name in doc and not isinstance(doc[name], str):
                raise KvEventsConfigError(f"--kv-events-config: {name} must be a string")
        rep = doc.get("replay_endpoint")
        if rep is not None and not isinstance(rep, str):
            raise KvEventsConfigError("--kv-events-config: replay_endpoint must be a string or null")
        for name in ("buffer_steps", "hwm", "max_queue_size"):
            v = doc.get(name, 1)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise KvEventsConfigError(f"--kv-events-config: {name} must be an integer >= 1")
        cfg = cls(**doc)
        if cfg.publisher not in ("null", "zmq"):
            raise KvEventsConfigError(f"--kv-events-config: unknown publisher {cfg.publisher!r}")
        return cfg


def offset_endpoint(endpoint: str | None, rank: int) -> str | None:
    """SGLang's ``offset_endpoint_port``: rank ``r`` publishes on the TCP port + ``r``."""
    if not endpoint or rank == 0:
        return endpoint
    if "inproc" in endpoint:
        return f"{endpoint}_dp{rank}"
    base, sep, port = endpoint.rpartition(":")
    if endpoint.startswith("tcp") and sep and port.isdigit():
        return f"{base}:{int(port) + rank}"
    return endpoint


def binds(endpoint: str) -> bool:
    """SGLang's rule (``ZmqEventPublisher``, 0.5.17+): bind a wildcard (``*``, ``0.0.0.0``),
    IPv6-any, ipc or inproc endpoint; connect any other (``tcp://127.0.0.1:5557`` connects, to
    a subscriber that binds)."""
    wildcard = "*" in endpoint or "::" in endpoint or "0.0.0.0" in endpoint
    return wildcard or endpoint.startswith(("ipc://", "inproc://"))


# --------------------------------------------------------------------------- wire types


@dataclass(frozen=True, slots=True)
class BlockStored:
    block_hashes: tuple[int, ...]
    parent_block_hash: int | None
    token_ids: tuple[int, ...]
    block_size: int


@dataclass(frozen=True, slots=True)
class BlockRemoved:
    block_hashes: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class AllBlocksCleared:
    pass


WireEvent = BlockStored | BlockRemoved | AllBlocksCleared


@dataclass(frozen=True, slots=True)
class KvEventBatch:
    ts: float
    events: tuple[WireEvent, ...]


WIRES = ("map", "array")


def _encode_event(e: WireEvent, wire: str) -> Any:
    if isinstance(e, BlockStored):
        stored = {
            "block_hashes": list(e.block_hashes),
            "parent_block_hash": e.parent_block_hash,
            "token_ids": list(e.token_ids),
            "block_size": e.block_size,
            "lora_id": None,
        }
        return {"type": "BlockStored", **stored} if wire == "map" else ["BlockStored", *stored.values()]
    if isinstance(e, BlockRemoved):
        hashes = list(e.block_hashes)
        return {"type": "BlockRemoved", "block_hashes": hashes} if wire == "map" else ["BlockRemoved", hashes]
    return {"type": "AllBlocksCleared"} if wire == "map" else ["AllBlocksCleared"]


def encode_batch(ts: float, events: Sequence[WireEvent], *, wire: str = "map") -> bytes:
    """msgpack bytes of a ``KVEventBatch``, as msgspec encodes SGLang's structs in the ``wire``
    shape of the module docstring ("map": 0.5.20 on; "array": up to 0.5.19)."""
    if wire not in WIRES:
        raise ValueError(f"wire must be one of {', '.join(WIRES)}, got {wire!r}")
    packed: bytes = msgpack.packb([ts, [_encode_event(e, wire) for e in events]])
    return packed


def seq_bytes(seq: int) -> bytes:
    return seq.to_bytes(8, "big", signed=seq < 0)


def parse_seq(frame: bytes) -> int:
    """A batch's sequence number (8-byte big-endian); ``-1`` is the replay end marker."""
    if len(frame) != 8:
        raise KvEventDecodeError(f"sequence frame has {len(frame)} bytes, expected 8")
    if frame == seq_bytes(END_SEQ):
        return END_SEQ
    return int.from_bytes(frame, "big")


def _ints(v: Any, what: str) -> tuple[int, ...]:
    if not isinstance(v, list) or any(isinstance(x, bool) or not isinstance(x, int) for x in v):
        raise KvEventDecodeError(f"{what}: expected a list of integers")
    return tuple(v)


_FIELDS = {  # positional order of each event's fields in the array shape
    "BlockStored": ("block_hashes", "parent_block_hash", "token_ids", "block_size"),
    "BlockRemoved": ("block_hashes",),
    "AllBlocksCleared": (),
}


def _named(raw: Any, i: int) -> tuple[str, dict[str, Any]]:
    """An event's tag and fields by name, from either shape (module docstring)."""
    if isinstance(raw, dict):
        tag = raw.get("type")
        if not isinstance(tag, str):
            raise KvEventDecodeError(f"events[{i}]: a map event needs a string 'type'")
        if tag not in _FIELDS:
            raise KvEventDecodeError(f"events[{i}]: unknown event tag {tag!r}")
        missing = [f for f in _FIELDS[tag] if f not in raw and f != "parent_block_hash"]
        if missing:
            raise KvEventDecodeError(f"events[{i}]: {tag} lacks {', '.join(missing)}")
        return tag, raw
    if not isinstance(raw, list) or not raw or not isinstance(raw[0], str):
        raise KvEventDecodeError(f"events[{i}]: expected a tagged array [tag, fields...] or a map")
    tag = raw[0]
    if tag not in _FIELDS:
        raise KvEventDecodeError(f"events[{i}]: unknown event tag {tag!r}")
    want = _FIELDS[tag]
    if len(raw) - 1 < len(want):
        raise KvEventDecodeError(f"events[{i}]: {tag} has {len(raw) - 1} fields, expected >= {len(want)}")
    return tag, dict(zip(want, raw[1:], strict=False))


def _event(raw: Any, i: int) -> WireEvent:
    tag, f = _named(raw, i)
    if tag == "BlockStored":
        hashes = _ints(f["block_hashes"], f"events[{i}].block_hashes")
        parent = f.get("parent_block_hash")
        if parent is not None and (isinstance(parent, bool) or not isinstance(parent, int)):
            raise KvEventDecodeError(f"events[{i}].parent_block_hash: expected an integer or nil")
        tokens = _ints(f["token_ids"], f"events[{i}].token_ids")
        size = f["block_size"]
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise KvEventDecodeError(f"events[{i}].block_size: expected an integer >= 1")
        if len(tokens) != len(hashes) * size:
            raise KvEventDecodeError(
                f"events[{i}]: {len(tokens)} token ids for {len(hashes)} blocks of {size} tokens"
            )
        return BlockStored(hashes, parent, tokens, size)
    if tag == "BlockRemoved":
        return BlockRemoved(_ints(f["block_hashes"], f"events[{i}].block_hashes"))
    return AllBlocksCleared()


def decode_batch(payload: bytes) -> KvEventBatch:
    """Decode one ``KVEventBatch`` payload; :class:`KvEventDecodeError` on anything else."""
    try:
        doc = msgpack.unpackb(payload, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises several unrelated types on garbage
        raise KvEventDecodeError(f"not msgpack: {type(exc).__name__}: {exc}") from exc
    if not isinstance(doc, list) or len(doc) < 2:
        raise KvEventDecodeError("batch: expected an array [ts, events, ...]")
    ts, events = doc[0], doc[1]
    if isinstance(ts, bool) or not isinstance(ts, int | float):
        raise KvEventDecodeError("batch.ts: expected a number")
    if not isinstance(events, list):
        raise KvEventDecodeError("batch.events: expected an array")
    return KvEventBatch(float(ts), tuple(_event(e, i) for i, e in enumerate(events)))
