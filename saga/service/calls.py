"""Forwarders: how one dispatched call is sent to a replica and read back.

Each forwarder is an async generator given the replica client, the engine's ``Dispatch`` and
a :class:`~saga.service.core.CallResult` to fill (usage, stop reason). It adds SGLang's
scheduling fields (``rid`` = the engine call id, ``priority``, the engine session) and
measures the time spent waiting on the replica, so the proxy overhead metric can subtract it.

SGLang's native ``/generate`` stream carries the *cumulative* text in every chunk (its docs
print ``text[prev:]``); :func:`native_stream` turns that into deltas, and passes a chunk
through unchanged when it does not extend the previous one (an incremental-output build).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

from saga.scheduler.api import Dispatch, Usage
from saga.service.backend.api import ReplicaProtocolError
from saga.service.core import CallResult, EngineClient


@dataclass(slots=True)
class Timer:
    """Seconds spent waiting on the replica during one call."""

    replica_s: float = 0.0


@dataclass(frozen=True, slots=True)
class NativeChunk:
    text: str
    output_ids: list[int]
    finish_reason: str
    usage: Usage | None


def _int(meta: Mapping[str, Any], key: str) -> int:
    v = meta.get(key, 0)
    return int(v) if isinstance(v, int | float) and not isinstance(v, bool) and v >= 0 else 0


def native_usage(obj: Mapping[str, Any], replica_id: str) -> tuple[Usage, str]:
    meta = obj.get("meta_info")
    if not isinstance(meta, dict):
        raise ReplicaProtocolError("/generate answer has no meta_info object", replica_id=replica_id)
    usage = Usage(_int(meta, "prompt_tokens"), _int(meta, "cached_tokens"), _int(meta, "completion_tokens"))
    fr = meta.get("finish_reason")
    if isinstance(fr, dict):
        reason = str(fr.get("type") or "")
    elif isinstance(fr, str):
        reason = fr
    else:
        reason = ""
    return usage, reason


def _text(obj: Mapping[str, Any], replica_id: str) -> str:
    text = obj.get("text", "")
    if not isinstance(text, str):
        raise ReplicaProtocolError("/generate answer's text is not a string", replica_id=replica_id)
    return text


def _ids(obj: Mapping[str, Any]) -> list[int]:
    ids = obj.get("output_ids")
    if isinstance(ids, list) and all(isinstance(i, int) and i >= 0 for i in ids):
        return ids
    return []


def native_payload(
    *, text: str | None, input_ids: list[int] | None, sampling: dict[str, Any]
) -> dict[str, Any]:
    body: dict[str, Any] = {"sampling_params": sampling}
    if input_ids is not None:
        body["input_ids"] = input_ids
    else:
        body["text"] = text or ""
    return body


def native_unary(payload: dict[str, Any], timer: Timer) -> Any:
    async def forward(client: EngineClient, d: Dispatch, result: CallResult) -> AsyncIterator[NativeChunk]:
        body = client.engine_fields(
            payload, rid=d.call_id, priority=d.priority, engine_session=d.engine_session
        )
        t0 = time.perf_counter()
        try:
            out = await client.generate(body)
        finally:
            timer.replica_s += time.perf_counter() - t0
        usage, reason = native_usage(out, d.replica_id)
        result.usage = usage
        yield NativeChunk(_text(out, d.replica_id), _ids(out), reason or "stop", usage)

    return forward


def native_stream(payload: dict[str, Any], timer: Timer) -> Any:
    async def forward(client: EngineClient, d: Dispatch, result: CallResult) -> AsyncIterator[NativeChunk]:
        body = client.engine_fields(
            payload, rid=d.call_id, priority=d.priority, engine_session=d.engine_session
        )
        prev_text = ""
        prev_ids: list[int] = []
        t0 = time.perf_counter()
        agen = client.generate_stream(body)
        try:
            async for obj in agen:
                timer.replica_s += time.perf_counter() - t0
                text = _text(obj, d.replica_id)
                ids = _ids(obj)
                delta = text[len(prev_text) :] if text.startswith(prev_text) else text
                dids = ids[len(prev_ids) :] if ids[: len(prev_ids)] == prev_ids else ids
                prev_text, prev_ids = (text, ids) if text.startswith(prev_text) else (prev_text + text, ids)
                usage, reason = None, ""
                meta = obj.get("meta_info")
                if isinstance(meta, dict) and meta.get("finish_reason"):
                    usage, reason = native_usage(obj, d.replica_id)
                    result.usage = usage
                yield NativeChunk(delta, dids, reason, usage)
                t0 = time.perf_counter()
        finally:
            aclose = getattr(agen, "aclose", None)
            if aclose is not None:
                await aclose()

    return forward
