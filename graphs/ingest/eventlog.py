"""SAGA's own event log: a versioned JSON-lines record of agent sessions (schema, builder, reader).

The SDK writes one JSON object per line as things happen; this module defines the records,
builds them (pure functions returning dicts / lines: the SDK does the file I/O) and reads a
log back into :class:`~saga.graphs.trace.SessionTrace` objects.

Schema, version ``EVENTLOG_VERSION = 1``. Every record has ``"v": 1``, ``"type"``, ``"session"``
(the session id) and ``"t"`` (seconds on the writer's clock: any origin, as long as one log
uses one clock). Types and their other fields:

=================  ==========================================================================
``session_start``  ``agent_type`` (str), ``tenant`` (str, default ``"default"``), ``parent``
                   (parent session id or null), ``block_size`` (int, 0 = no hashes),
                   ``shared_prefix_tokens`` (int, default 0), ``after_call`` (optional int:
                   the parent call index that spawned this sub-agent)
``llm_call``       ``duration_s``, ``prompt_tokens``, ``output_tokens``, ``cached_tokens``
                   (int or null), ``block_hashes`` (list of int, default []), ``stop``
                   (``tool_use``/``end_turn``/``""``), ``model`` (str), ``ttft_s`` (float or null)
``tool_call``      ``name`` (str), ``end`` (seconds, same clock as ``t``), ``status`` (str),
                   ``after_call`` (optional int: index of the requesting LLM call)
``session_end``    ``status`` (str, e.g. ``ok``, ``error``, ``cancelled``)
=================  ==========================================================================

Rules the reader enforces (violations raise :class:`TraceError` with file, line and field, or
are skipped and counted under ``skip_bad``): a known ``v`` (a newer version is refused, not
guessed at), a known ``type``, ``session_start`` before any other record of its session and
only once, ``t`` never going backwards within a session, a tool ending no earlier than it
starts, and a parent that was started before its child. A tool call is attached after the
session's latest LLM call and a child session after its parent's latest call at the child's
start, unless the record names ``after_call`` (which must be a call already logged).
Sessions without ``session_end`` are still returned (a crash must not hide their calls), with
``attributes["complete"] = "false"``; a session that never made an LLM call is reported as an
error since the trace model needs at least one.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from saga.graphs.ingest._common import Fields, IngestResult, iter_json_lines
from saga.graphs.trace import LLMCall, SessionTrace, SubAgent, ToolCall, TraceError, validate_session

EVENTLOG_VERSION = 1
RECORD_TYPES = ("session_start", "llm_call", "tool_call", "session_end")

# ---------------------------------------------------------------- writer side (pure builders)


def session_start(
    session: str,
    t: float,
    *,
    agent_type: str,
    tenant: str = "default",
    parent: str | None = None,
    block_size: int = 0,
    shared_prefix_tokens: int = 0,
    after_call: int | None = None,
) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "v": EVENTLOG_VERSION,
        "type": "session_start",
        "session": session,
        "t": t,
        "agent_type": agent_type,
        "tenant": tenant,
        "parent": parent,
        "block_size": block_size,
        "shared_prefix_tokens": shared_prefix_tokens,
    }
    if after_call is not None:
        rec["after_call"] = after_call
    return rec


def llm_call(
    session: str,
    t: float,
    *,
    duration_s: float,
    prompt_tokens: int,
    output_tokens: int,
    cached_tokens: int | None = None,
    block_hashes: Sequence[int] = (),
    stop: str = "",
    model: str = "",
    ttft_s: float | None = None,
) -> dict[str, Any]:
    return {
        "v": EVENTLOG_VERSION,
        "type": "llm_call",
        "session": session,
        "t": t,
        "duration_s": duration_s,
        "prompt_tokens": prompt_tokens,
        "output_tokens": output_tokens,
        "cached_tokens": cached_tokens,
        "block_hashes": list(block_hashes),
        "stop": stop,
        "model": model,
        "ttft_s": ttft_s,
    }


def tool_call(
    session: str, t: float, *, name: str, end: float, status: str = "ok", after_call: int | None = None
) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "v": EVENTLOG_VERSION,
        "type": "tool_call",
        "session": session,
        "t": t,
        "name": name,
        "end": end,
        "status": status,
    }
    if after_call is not None:
        rec["after_call"] = after_call
    return rec


def session_end(session: str, t: float, *, status: str = "ok") -> dict[str, Any]:
    return {"v": EVENTLOG_VERSION, "type": "session_end", "session": session, "t": t, "status": status}


def encode(record: dict[str, Any]) -> str:
    """One record as one log line (compact JSON, newline-terminated)."""
    return json.dumps(record, separators=(",", ":")) + "\n"


def session_to_events(s: SessionTrace, *, origin_s: float | None = None) -> list[dict[str, Any]]:
    """A finished :class:`SessionTrace` (and its sub-agents) as event records, in time order.

    The inverse of :func:`read_eventlog` (used to export traces of other formats and in tests).
    """
    base = s.start_s if origin_s is None else origin_s
    # stable sort by time: at equal times the generation order (parent before child, a session's
    # start before its calls) is kept
    return sorted(_events(s, base, parent=None, after=None), key=lambda r: float(r["t"]))


def _events(s: SessionTrace, base: float, parent: str | None, after: int | None) -> list[dict[str, Any]]:
    out = [
        session_start(
            s.session_id,
            base,
            agent_type=s.agent_type,
            tenant=s.tenant,
            parent=parent,
            block_size=s.block_size,
            shared_prefix_tokens=s.shared_prefix_tokens,
            after_call=after,
        )
    ]
    for c in s.calls:
        out.append(
            llm_call(
                s.session_id,
                base + c.start_s,
                duration_s=c.duration_s,
                prompt_tokens=c.prompt_tokens,
                output_tokens=c.output_tokens,
                cached_tokens=c.cached_tokens,
                block_hashes=c.block_hashes,
                stop=c.stop,
                model=c.model,
                ttft_s=c.ttft_s,
            )
        )
    out += [
        tool_call(
            s.session_id,
            base + t.start_s,
            name=t.name,
            end=base + t.end_s,
            status=t.status,
            after_call=t.after_call,
        )
        for t in s.tools
    ]
    for sub in s.subagents:
        out += _events(sub.session, base + sub.start_s, parent=s.session_id, after=sub.after_call)
    out.append(session_end(s.session_id, base + s.duration_s))
    return out


# ---------------------------------------------------------------- reader


@dataclass(slots=True)
class _Open:
    start: Fields
    t0: float
    last_t: float
    calls: list[LLMCall] = field(default_factory=list)
    tools: list[ToolCall] = field(default_factory=list)
    children: list[tuple[str, int, float]] = field(default_factory=list)  # (id, after_call, start)
    ended: bool = False
    bad: bool = False


def read_eventlog(path: str | Path, *, skip_bad: bool = False) -> IngestResult:
    """Read a SAGA event log into session traces (see the module docstring for the rules)."""
    name = str(path)
    result = IngestResult()
    sessions: dict[str, _Open] = {}
    order: list[str] = []
    for line_no, obj in iter_json_lines(path):
        try:
            if isinstance(obj, TraceError):
                raise obj
            _apply(Fields(obj, file=name, line=line_no), sessions, order)
        except TraceError as e:
            result.record_error(e, skip_bad=skip_bad)
    built: dict[str, SessionTrace] = {}
    for sid in reversed(order):  # children were started after their parents: build them first
        st = sessions[sid]
        try:
            built[sid] = _build(sid, st, sessions, built)
        except TraceError as e:
            result.record_error(e, skip_bad=skip_bad)
    for sid in order:
        st = sessions[sid]
        parent = st.start.raw("parent")
        if parent is None and sid in built:
            result.sessions.append(built[sid])
    return result


def _apply(f: Fields, sessions: dict[str, _Open], order: list[str]) -> None:
    v = f.integer("v")
    if v != EVENTLOG_VERSION:
        raise f.error("v", f"unsupported event-log version {v} (this reader knows {EVENTLOG_VERSION})")
    kind = f.string("type")
    if kind not in RECORD_TYPES:
        raise f.error("type", f"unknown record type {kind!r}")
    sid = f.string("session")
    if not sid:
        raise f.error("session", "empty session id")
    t = f.number("t", min_value=None)
    if kind == "session_start":
        if sid in sessions:
            raise f.error("session", f"session {sid!r} started twice")
        f.string("agent_type")
        parent = f.raw("parent")
        if parent is not None:
            if not isinstance(parent, str) or parent not in sessions:
                raise f.error("parent", f"parent {parent!r} was not started before this session")
            p = sessions[parent]
            p.children.append((sid, _after_call(f, len(p.calls)), t - p.t0))
        f.integer("block_size", 0)
        f.integer("shared_prefix_tokens", 0)
        f.string("tenant", "default")
        sessions[sid] = _Open(start=f, t0=t, last_t=t)
        order.append(sid)
        return
    st = sessions.get(sid)
    if st is None:
        raise f.error("session", f"record for session {sid!r} before its session_start")
    if st.ended:
        raise f.error("type", f"{kind} after session_end")
    if t < st.last_t:
        raise f.error("t", f"time goes backwards ({t} < {st.last_t})")
    if kind == "llm_call":
        prompt = f.integer("prompt_tokens")
        cached = f.integer("cached_tokens") if f.has("cached_tokens") else None
        if cached is not None and cached > prompt:
            raise f.error("cached_tokens", "more cached than prompt tokens")
        st.calls.append(
            LLMCall(
                start_s=t - st.t0,
                duration_s=f.number("duration_s", 0.0),
                prompt_tokens=prompt,
                output_tokens=f.integer("output_tokens"),
                cached_tokens=cached,
                block_hashes=tuple(f.int_list("block_hashes", [])),
                stop=f.string("stop", ""),
                model=f.string("model", ""),
                ttft_s=f.number("ttft_s") if f.has("ttft_s") else None,
            )
        )
    elif kind == "tool_call":
        end = f.number("end", min_value=None)
        if end < t:
            raise f.error("end", f"tool ends before it starts ({end} < {t})")
        st.tools.append(
            ToolCall(
                name=f.string("name"),
                start_s=t - st.t0,
                end_s=end - st.t0,
                after_call=_after_call(f, len(st.calls)),
                status=f.string("status", "ok"),
            )
        )
    else:
        st.ended = True
    st.last_t = t


def _after_call(f: Fields, n_calls: int) -> int:
    if not f.has("after_call"):
        return n_calls - 1
    after = f.integer("after_call", min_value=-1)
    if after >= n_calls:
        raise f.error("after_call", f"call {after} has not been logged yet ({n_calls} so far)")
    return after


def _build(sid: str, st: _Open, sessions: dict[str, _Open], built: dict[str, SessionTrace]) -> SessionTrace:
    f = st.start
    subs = tuple(
        SubAgent(after_call=after, start_s=start, session=built[cid])
        for cid, after, start in st.children
        if cid in built
    )
    parent = f.raw("parent")
    s = SessionTrace(
        session_id=sid,
        agent_type=f.string("agent_type"),
        calls=tuple(st.calls),
        tools=tuple(st.tools),
        subagents=subs,
        tenant=f.string("tenant", "default"),
        start_s=st.t0 if parent is None else 0.0,
        block_size=f.integer("block_size", 0),
        parent_id=parent if isinstance(parent, str) else None,
        shared_prefix_tokens=f.integer("shared_prefix_tokens", 0),
        source=f"{f.file}:{f.line}",
        attributes={"complete": "true" if st.ended else "false"},
    )
    try:
        validate_session(s)
    except TraceError as e:
        raise TraceError(str(e), file=f.file, line=f.line, field_name=e.field_name) from e
    return s
