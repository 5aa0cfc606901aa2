"""Reader for the WEKA Claude Code traces (``weka_cc_traces*.jsonl[.xz]``, kv-cache-tester format).

One JSON object per line is one session: ``id``, ``block_size``, ``tool_tokens``,
``system_tokens`` and ``requests[]``. How it maps onto :mod:`saga.graphs.trace`:

- **Calls.** Each request becomes an :class:`LLMCall` at ``t`` (seconds since the session
  start) lasting ``api_time``, with ``in``/``out`` tokens, ``stop``, ``model`` and ``ttft``.
  The trace does not report cached tokens (``cached_tokens`` stays ``None``).
- **Gaps.** The client-side gap before request ``i > 0`` (``think_time``; when absent,
  ``t[i] − (t[i−1] + api_time[i−1])`` clipped at 0) becomes a :class:`ToolCall` ending at
  ``t[i]`` and requested by call ``i − 1``. It is named ``"tool"`` (the trace does not name
  tools) after a ``tool_use`` response or an empty stop, and ``"human"`` after ``end_turn``.
- **Prefix hashes.** ``hash_ids`` are local to one session (sub-agents share the parent's
  namespace). They are namespaced as ``(ns << 32) | local_id`` where ``ns`` is the first 31 bits
  of BLAKE2b(trace id): equal ids then mean equal content across the whole workload, and every
  hash still fits a signed 64-bit integer. Two of the 710 public traces collide with
  probability ≈ 710²/2³² ≈ 1e-4. Local ids must be in ``[0, 2³²)``.
- **Shared prefix.** ``tool_tokens + system_tokens`` (the Claude Code tool block and system
  prompt) is kept as ``shared_prefix_tokens``; the trace cannot tell which blocks they are.
- **Sub-agents.** A request of ``type: "subagent"`` is a nested session (``agent_id``,
  ``subagent_type``, its own ``requests[]`` timed from its own start). Its marker ``t`` is the
  *completion* time in the parent's timeline, so it starts at ``t − duration_ms/1000``; it is
  attached after the last parent call that started before that moment. Its agent type is
  ``claude-code/<subagent_type>``, its id ``<trace id>/<agent_id>``.

A session with a bad field raises :class:`TraceError` (file, line, field such as
``requests[3].hash_ids``) or, with ``skip_bad``, is skipped whole and counted.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from saga.graphs.ingest._common import Fields, IngestResult, iter_json_lines
from saga.graphs.trace import (
    STOP_END_TURN,
    TOOL_HUMAN,
    TOOL_UNKNOWN,
    LLMCall,
    SessionTrace,
    SubAgent,
    ToolCall,
    TraceError,
    validate_session,
)

AGENT_TYPE = "claude-code"  # agent type of the top-level sessions of these traces
_LOCAL_ID_LIMIT = 1 << 32


def namespace_of(trace_id: str) -> int:
    """The 31-bit namespace mixed into a trace's session-local hash ids."""
    digest = hashlib.blake2b(trace_id.encode("utf-8"), digest_size=4).digest()
    return int.from_bytes(digest, "big") & 0x7FFFFFFF


def read_weka_traces(path: str | Path, *, skip_bad: bool = False) -> IngestResult:
    """Read a WEKA Claude Code trace file (plain or ``.xz``/``.gz``) into session traces."""
    result = IngestResult()
    name = str(path)
    for line_no, obj in iter_json_lines(path):
        try:
            if isinstance(obj, TraceError):
                raise obj
            session = parse_session(obj, file=name, line=line_no)
        except TraceError as e:
            result.record_error(e, skip_bad=skip_bad)
            continue
        result.sessions.append(session)
    return result


def parse_session(obj: Any, *, file: str, line: int) -> SessionTrace:
    """One trace line (a top-level session) into a validated :class:`SessionTrace`."""
    f = Fields(obj, file=file, line=line)
    trace_id = f.string("id")
    if not trace_id:
        raise f.error("id", "empty trace id")
    ns = namespace_of(trace_id) << 32
    session = _parse_agent(
        f,
        session_id=trace_id,
        agent_type=AGENT_TYPE,
        block_size=f.integer("block_size", 0),
        ns=ns,
        parent_id=None,
    )
    try:
        validate_session(session)
    except TraceError as e:
        raise TraceError(str(e), file=file, line=line, field_name=e.field_name) from e
    return session


def _parse_agent(
    f: Fields, *, session_id: str, agent_type: str, block_size: int, ns: int, parent_id: str | None
) -> SessionTrace:
    calls: list[LLMCall] = []
    tools: list[ToolCall] = []
    subs: list[SubAgent] = []
    seen: dict[int, int] = {}  # one int object per distinct hash: the calls' tuples share them
    requests = f.obj_list("requests")
    for i, raw in enumerate(requests):
        r = f.sub(raw, f"requests[{i}]")
        if r.has("type") and r.string("type") == "subagent":
            subs.append(_parse_subagent(r, calls, session_id=session_id, block_size=block_size, ns=ns))
            continue
        t = r.number("t")
        api_time = r.number("api_time", 0.0)
        if calls and t < calls[-1].start_s:
            raise r.error("t", f"time goes backwards ({t} < {calls[-1].start_s})")
        if calls:
            prev = calls[-1]
            gap = r.number("think_time") if r.has("think_time") else max(0.0, t - prev.end_s)
            name = TOOL_HUMAN if prev.stop == STOP_END_TURN else TOOL_UNKNOWN
            tools.append(ToolCall(name=name, start_s=max(0.0, t - gap), end_s=t, after_call=len(calls) - 1))
        calls.append(
            LLMCall(
                start_s=t,
                duration_s=api_time,
                prompt_tokens=r.integer("in"),
                output_tokens=r.integer("out"),
                block_hashes=_namespaced(r, ns, seen),
                stop=r.string("stop", ""),
                model=r.string("model", ""),
                ttft_s=r.number("ttft") if r.has("ttft") else None,
            )
        )
    return SessionTrace(
        session_id=session_id,
        agent_type=agent_type,
        calls=tuple(calls),
        tools=tuple(tools),
        subagents=tuple(subs),
        block_size=block_size,
        parent_id=parent_id,
        shared_prefix_tokens=f.integer("tool_tokens", 0) + f.integer("system_tokens", 0),
        source=f"{f.file}:{f.line}" + (f" {f.prefix}" if f.prefix else ""),
    )


def _parse_subagent(
    r: Fields, parent_calls: list[LLMCall], *, session_id: str, block_size: int, ns: int
) -> SubAgent:
    marker_t = r.number("t")
    duration_s = r.number("duration_ms", 0.0) / 1000.0
    start = max(0.0, marker_t - duration_s)
    agent_id = r.string("agent_id")
    kind = r.string("subagent_type", "subagent") or "subagent"
    after = -1
    for j, c in enumerate(parent_calls):
        if c.start_s <= start:
            after = j
    child = _parse_agent(
        r,
        session_id=f"{session_id}/{agent_id}",
        agent_type=f"{AGENT_TYPE}/{kind}",
        block_size=block_size,
        ns=ns,
        parent_id=session_id,
    )
    if not child.calls:
        raise r.error("requests", "sub-agent has no LLM calls")
    return SubAgent(after_call=after, start_s=start, session=child)


def _namespaced(r: Fields, ns: int, seen: dict[int, int]) -> tuple[int, ...]:
    ids = r.raw("hash_ids", [])
    if not isinstance(ids, list):
        raise r.error("hash_ids", "expected a list of integers")
    if not ids:
        return ()
    try:
        arr = np.asarray(ids)
    except (ValueError, TypeError, OverflowError) as e:
        raise r.error("hash_ids", "expected a list of integers") from e
    if arr.ndim != 1 or arr.dtype.kind not in "iu":
        raise r.error("hash_ids", "expected a list of integers")
    if int(arr.min()) < 0 or int(arr.max()) >= _LOCAL_ID_LIMIT:
        raise r.error("hash_ids", "hash id outside [0, 2^32)")
    return tuple(seen.setdefault(h, h) for h in (arr | ns).tolist())
