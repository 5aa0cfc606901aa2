"""Reader for OpenTelemetry trace exports that follow the GenAI semantic conventions (OTLP JSON).

Input: OTLP/JSON ``ExportTraceServiceRequest`` documents (``{"resourceSpans": [{"resource":
{...}, "scopeSpans": [{"spans": [...]}]}]}``), either one document per file or one per line
(what the OpenTelemetry Collector's file exporter writes). Attribute values use OTLP's
``AnyValue`` encoding (``stringValue``, ``intValue`` as a decimal string, ``doubleValue``,
``boolValue``, ``arrayValue``); times are ``startTimeUnixNano``/``endTimeUnixNano``.

Which spans matter (``gen_ai.operation.name``, or the span name's first word when absent):

- LLM calls: ``chat``, ``text_completion``, ``generate_content``. Tokens from
  ``gen_ai.usage.input_tokens`` / ``gen_ai.usage.output_tokens`` (the deprecated
  ``gen_ai.usage.prompt_tokens`` / ``completion_tokens`` are accepted), cached tokens from
  ``gen_ai.usage.cache_read.input_tokens`` (or the older ``gen_ai.usage.cache_read_input_tokens``),
  stop from ``gen_ai.response.finish_reasons`` (``tool_calls``/``tool_use`` → ``tool_use``,
  ``stop``/``end_turn`` → ``end_turn``), model from ``gen_ai.response.model`` or
  ``gen_ai.request.model``.
- Tool calls: ``execute_tool``; name from ``gen_ai.tool.name`` (else the span name after
  ``execute_tool``); status ``error`` when the span status code is ERROR (2) or ``error.type``
  is set.
- Agents: ``invoke_agent``; ``gen_ai.agent.name`` is the agent type.

Other spans (HTTP, database, framework internals) are not GenAI records and are ignored; they
still serve as links in the parent chain.

Sessions: every GenAI span belongs to its nearest ``invoke_agent`` ancestor. A top-level agent
(or, without agent spans, a whole trace) is a session keyed by ``gen_ai.conversation.id`` when
any of its spans carries one, else by the trace id, so the turns of one conversation traced as
separate traces form one session. An ``invoke_agent`` span nested in another agent's subtree is
a :class:`SubAgent` of that agent's session. Agent type: ``gen_ai.agent.name``, else the
resource's ``service.name``, else ``"otel"``; tenant: the resource attribute ``saga.tenant``.
A tool span is attached after the last LLM call that started before it.

Bad spans (missing ids or times, end before start, non-numeric tokens) raise
:class:`TraceError` naming the file, line and the span's JSON path, or with ``skip_bad`` are
skipped and counted.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from saga.graphs.ingest._common import Fields, IngestResult, iter_json_lines, open_text
from saga.graphs.trace import (
    STOP_END_TURN,
    STOP_NONE,
    STOP_TOOL_USE,
    TOOL_UNKNOWN,
    LLMCall,
    SessionTrace,
    SubAgent,
    ToolCall,
    TraceError,
    validate_session,
)

LLM_OPERATIONS = frozenset({"chat", "text_completion", "generate_content"})
TOOL_OPERATION = "execute_tool"
AGENT_OPERATION = "invoke_agent"
_FINISH_TO_STOP = {
    "tool_calls": STOP_TOOL_USE,
    "tool_use": STOP_TOOL_USE,
    "function_call": STOP_TOOL_USE,
    "stop": STOP_END_TURN,
    "end_turn": STOP_END_TURN,
}
_STATUS_ERROR = 2


@dataclass(slots=True)
class _Span:
    trace_id: str
    span_id: str
    parent_id: str
    name: str
    op: str
    start_ns: int
    end_ns: int
    attrs: dict[str, Any]
    resource: dict[str, Any]
    error: bool
    where: Fields  # for error messages


@dataclass(slots=True)
class _Group:
    key: str
    agent: _Span | None
    llm: list[_Span] = field(default_factory=list)
    tools: list[_Span] = field(default_factory=list)
    children: list[_Group] = field(default_factory=list)


def read_otlp_json(
    path: str | Path, *, skip_bad: bool = False, default_agent_type: str = "otel"
) -> IngestResult:
    """Read an OTLP JSON span export into session traces (see the module docstring)."""
    name = str(path)
    result = IngestResult()
    spans: list[_Span] = []
    for line_no, doc in _documents(path):
        if isinstance(doc, TraceError):
            result.record_error(doc, skip_bad=skip_bad)
            continue
        try:
            root = Fields(doc, file=name, line=line_no)
            resource_spans = root.obj_list("resourceSpans")
        except TraceError as e:
            result.record_error(e, skip_bad=skip_bad)
            continue
        for i, rs_raw in enumerate(resource_spans):
            try:
                rs = root.sub(rs_raw, f"resourceSpans[{i}]")
                res_obj = rs.raw("resource", {})
                resource = _attributes(rs.sub(res_obj, "resource"), "attributes") if res_obj else {}
                scope_spans = rs.obj_list("scopeSpans") if rs.has("scopeSpans") else []
            except TraceError as e:
                result.record_error(e, skip_bad=skip_bad)
                continue
            for j, ss_raw in enumerate(scope_spans):
                try:
                    ss = rs.sub(ss_raw, f"scopeSpans[{j}]")
                    raw_spans = ss.obj_list("spans") if ss.has("spans") else []
                except TraceError as e:
                    result.record_error(e, skip_bad=skip_bad)
                    continue
                for k, sp_raw in enumerate(raw_spans):
                    try:
                        spans.append(_parse_span(ss.sub(sp_raw, f"spans[{k}]"), resource))
                    except TraceError as e:
                        result.record_error(e, skip_bad=skip_bad)
    for group in _group(spans):
        try:
            session = _to_session(group, default_agent_type, parent=None, parent_t0_ns=0)
            validate_session(session)
        except TraceError as e:
            result.record_error(e, skip_bad=skip_bad)
            continue
        result.sessions.append(session)
    return result


def _documents(path: str | Path) -> list[tuple[int, Any | TraceError]]:
    """The file as one JSON document (line 1) or, failing that, one document per line."""
    with open_text(path) as f:
        text = f.read()
    try:
        return [(1, json.loads(text))]
    except json.JSONDecodeError:
        return list(iter_json_lines(path))


def _any_value(v: Any) -> Any:
    if not isinstance(v, dict):
        return v
    if "stringValue" in v:
        return v["stringValue"]
    if "intValue" in v:
        return int(v["intValue"])  # OTLP JSON writes int64 as a decimal string
    if "doubleValue" in v:
        return float(v["doubleValue"])
    if "boolValue" in v:
        return bool(v["boolValue"])
    if "arrayValue" in v:
        return [_any_value(x) for x in v["arrayValue"].get("values", [])]
    return None


def _attributes(f: Fields, key: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    raw = f.raw(key, [])
    if not isinstance(raw, list):
        raise f.error(key, "expected a list of {key, value}")
    for i, kv in enumerate(raw):
        if not isinstance(kv, dict) or not isinstance(kv.get("key"), str):
            raise f.error(f"{key}[{i}]", "expected {key, value}")
        try:
            out[kv["key"]] = _any_value(kv.get("value"))
        except (ValueError, TypeError, AttributeError) as e:
            raise f.error(f"{key}[{i}].value", f"bad attribute value: {e}") from e
    return out


def _parse_span(f: Fields, resource: dict[str, Any]) -> _Span:
    trace_id = f.string("traceId")
    span_id = f.string("spanId")
    if not trace_id or not span_id:
        raise f.error("traceId" if not trace_id else "spanId", "empty id")
    start = _nanos(f, "startTimeUnixNano")
    end = _nanos(f, "endTimeUnixNano")
    if end < start:
        raise f.error("endTimeUnixNano", "span ends before it starts")
    attrs = _attributes(f, "attributes")
    name = f.string("name", "")
    op = attrs.get("gen_ai.operation.name")
    if not isinstance(op, str) or not op:
        op = name.split(" ", 1)[0] if name else ""
    status = f.raw("status", {})
    code = status.get("code", 0) if isinstance(status, dict) else 0
    error = code in (_STATUS_ERROR, "STATUS_CODE_ERROR") or "error.type" in attrs
    return _Span(
        trace_id, span_id, f.string("parentSpanId", ""), name, op, start, end, attrs, resource, error, f
    )


def _nanos(f: Fields, key: str) -> int:
    v = f.raw(key)
    try:
        n = int(v)
    except (TypeError, ValueError) as e:
        raise f.error(key, f"expected nanoseconds, got {v!r}") from e
    if n < 0:
        raise f.error(key, "negative time")
    return n


def _group(spans: list[_Span]) -> list[_Group]:
    by_id = {(s.trace_id, s.span_id): s for s in spans}

    def owner(s: _Span) -> _Span | None:
        seen = 0
        p = by_id.get((s.trace_id, s.parent_id))
        while p is not None and seen < 10_000:
            if p.op == AGENT_OPERATION:
                return p
            p = by_id.get((p.trace_id, p.parent_id))
            seen += 1
        return None

    conv_of_trace: dict[str, str] = {}
    for s in spans:
        c = s.attrs.get("gen_ai.conversation.id")
        if isinstance(c, str) and c:
            conv_of_trace.setdefault(s.trace_id, c)
    tops: dict[str, _Group] = {}
    agent_groups: dict[tuple[str, str], _Group] = {}
    ordered = sorted(spans, key=lambda s: s.start_ns)
    for s in ordered:  # agents first, so children find their parents
        if s.op != AGENT_OPERATION:
            continue
        parent_agent = owner(s)
        g = _Group(key=s.span_id, agent=s)
        agent_groups[(s.trace_id, s.span_id)] = g
        if parent_agent is None:
            key = conv_of_trace.get(s.trace_id, s.trace_id)
            if key in tops:
                tops[key].children.append(g)  # later turns: merged below
            else:
                tops[key] = _Group(key=key, agent=s)
                tops[key].children.append(g)
        else:
            agent_groups[(parent_agent.trace_id, parent_agent.span_id)].children.append(g)
    for s in ordered:
        if s.op not in LLM_OPERATIONS and s.op != TOOL_OPERATION:
            continue
        a = owner(s)
        if a is not None:
            g = agent_groups[(a.trace_id, a.span_id)]
        else:
            key = conv_of_trace.get(s.trace_id, s.trace_id)
            g = tops.setdefault(key, _Group(key=key, agent=None))
        (g.llm if s.op in LLM_OPERATIONS else g.tools).append(s)
    # a top-level group holds its top-level agent spans as "children": fold them into one session
    out: list[_Group] = []
    for top in tops.values():
        merged = _Group(key=top.key, agent=top.agent, llm=list(top.llm), tools=list(top.tools))
        for turn in top.children:
            merged.llm += turn.llm
            merged.tools += turn.tools
            merged.children += turn.children
        if merged.llm or merged.children:
            out.append(merged)
    return out


def _to_session(g: _Group, default_agent_type: str, parent: str | None, parent_t0_ns: int) -> SessionTrace:
    llm = sorted(g.llm, key=lambda s: s.start_ns)
    tools = sorted(g.tools, key=lambda s: s.start_ns)
    starts = [s.start_ns for s in llm + tools] + ([g.agent.start_ns] if g.agent else [])
    t0 = min(starts) if starts else parent_t0_ns
    calls = [_call(s, t0) for s in llm]
    where = llm[0].where if llm else (g.agent.where if g.agent else None)
    if not calls:
        raise TraceError(
            "agent has no LLM spans",
            file=where.file if where else None,
            field_name=where.prefix if where else None,
        )
    tool_calls = []
    for s in tools:
        name = s.attrs.get("gen_ai.tool.name")
        if not isinstance(name, str) or not name:
            name = s.name.split(" ", 1)[1] if " " in s.name else TOOL_UNKNOWN
        tool_calls.append(
            ToolCall(
                name=name,
                start_s=(s.start_ns - t0) / 1e9,
                end_s=(s.end_ns - t0) / 1e9,
                after_call=_after(calls, (s.start_ns - t0) / 1e9),
                status="error" if s.error else "ok",
            )
        )
    session_id = g.key if parent is None else f"{parent}/{g.key}"
    subs = []
    for child in sorted(g.children, key=lambda c: c.agent.start_ns if c.agent else 0):
        sub = _to_session(child, default_agent_type, parent=session_id, parent_t0_ns=t0)
        start = max(0.0, ((child.agent.start_ns if child.agent else t0) - t0) / 1e9)
        subs.append(SubAgent(after_call=_after(calls, start), start_s=start, session=sub))
    first = g.agent or llm[0]
    agent_type = (
        first.attrs.get("gen_ai.agent.name") or first.resource.get("service.name") or default_agent_type
    )
    tenant = first.resource.get("saga.tenant") or "default"
    return SessionTrace(
        session_id=session_id,
        agent_type=str(agent_type),
        calls=tuple(calls),
        tools=tuple(tool_calls),
        subagents=tuple(subs),
        tenant=str(tenant),
        start_s=t0 / 1e9 if parent is None else 0.0,
        parent_id=parent,
        source=f"{where.file}:{where.line}" if where else "",
    )


def _call(s: _Span, t0: int) -> LLMCall:
    a = s.attrs
    f = s.where

    def tokens(*keys: str, required: bool = True) -> int | None:
        for k in keys:
            if k in a and a[k] is not None:
                v = a[k]
                if isinstance(v, bool) or not isinstance(v, int | float) or v < 0:
                    raise f.error(f"attributes[{k}]", f"expected a token count, got {v!r}")
                return int(v)
        return 0 if required else None

    prompt = tokens("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens") or 0
    cached = tokens(
        "gen_ai.usage.cache_read.input_tokens", "gen_ai.usage.cache_read_input_tokens", required=False
    )
    if cached is not None and cached > prompt:
        raise f.error("attributes[gen_ai.usage.cache_read.input_tokens]", "more cached than input tokens")
    reasons = a.get("gen_ai.response.finish_reasons") or []
    if isinstance(reasons, str):
        reasons = [reasons]
    stops = {_FINISH_TO_STOP.get(str(r), STOP_NONE) for r in reasons}
    stop = (
        STOP_TOOL_USE if STOP_TOOL_USE in stops else (STOP_END_TURN if STOP_END_TURN in stops else STOP_NONE)
    )
    model = a.get("gen_ai.response.model") or a.get("gen_ai.request.model") or ""
    return LLMCall(
        start_s=(s.start_ns - t0) / 1e9,
        duration_s=(s.end_ns - s.start_ns) / 1e9,
        prompt_tokens=prompt,
        output_tokens=tokens("gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens") or 0,
        cached_tokens=cached,
        stop=stop,
        model=str(model),
    )


def _after(calls: list[LLMCall], t: float) -> int:
    after = -1
    for i, c in enumerate(calls):
        if c.start_s <= t:
            after = i
    return after
