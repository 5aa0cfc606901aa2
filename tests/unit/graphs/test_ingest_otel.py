"""OTLP JSON (OpenTelemetry GenAI semantic conventions) ingestion."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from saga.graphs.ingest.otel import read_otlp_json
from saga.graphs.trace import TraceError

pytestmark = pytest.mark.unit

S = 1_000_000_000  # ns per second
T0 = 1_700_000_000 * S


def _attr(k: str, v: Any) -> dict[str, Any]:
    if isinstance(v, bool):
        return {"key": k, "value": {"boolValue": v}}
    if isinstance(v, int):
        return {"key": k, "value": {"intValue": str(v)}}
    if isinstance(v, float):
        return {"key": k, "value": {"doubleValue": v}}
    if isinstance(v, list):
        return {"key": k, "value": {"arrayValue": {"values": [{"stringValue": x} for x in v]}}}
    return {"key": k, "value": {"stringValue": v}}


def _span(
    sid: str,
    parent: str,
    name: str,
    start: float,
    end: float,
    attrs: dict[str, Any] | None = None,
    *,
    trace: str = "t1",
    error: bool = False,
) -> dict[str, Any]:
    sp: dict[str, Any] = {
        "traceId": trace,
        "spanId": sid,
        "parentSpanId": parent,
        "name": name,
        "kind": 3,
        "startTimeUnixNano": str(T0 + int(start * S)),
        "endTimeUnixNano": str(T0 + int(end * S)),
        "attributes": [_attr(k, v) for k, v in (attrs or {}).items()],
    }
    if error:
        sp["status"] = {"code": 2}
    return sp


def _doc(spans: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "resourceSpans": [
            {
                "resource": {"attributes": [_attr("service.name", "svc"), _attr("saga.tenant", "acme")]},
                "scopeSpans": [{"scope": {"name": "x"}, "spans": spans}],
            }
        ]
    }


def _chat(
    sid: str,
    parent: str,
    start: float,
    end: float,
    stop: str,
    attrs: dict[str, Any] | None = None,
    *,
    trace: str = "t1",
) -> dict[str, Any]:
    return _span(
        sid,
        parent,
        "chat gpt-x",
        start,
        end,
        {
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": "gpt-x",
            "gen_ai.usage.input_tokens": 100,
            "gen_ai.usage.output_tokens": 20,
            "gen_ai.response.finish_reasons": [stop],
            **(attrs or {}),
        },
        trace=trace,
    )


def _agent_spans() -> list[dict[str, Any]]:
    return [
        _span(
            "a",
            "",
            "invoke_agent coder",
            0,
            30,
            {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "coder"},
        ),
        _chat("c1", "a", 0, 2, "tool_calls", {"gen_ai.usage.cache_read.input_tokens": 40}),
        _span(
            "t1",
            "a",
            "execute_tool bash",
            2,
            5,
            {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "bash"},
        ),
        _chat("c2", "a", 5, 7, "tool_calls"),
        _span("t2", "a", "execute_tool search", 7, 20, error=True),  # name from the span name
        _span("h", "t2", "GET /x", 7.5, 8),  # not GenAI: ignored, but still a link
        _span(
            "sub",
            "h",
            "invoke_agent explorer",
            8,
            19,
            {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "explorer"},
        ),
        _chat("sc1", "sub", 8, 9, "stop"),
        _chat("c3", "a", 20, 21, "stop"),
    ]


def test_agent_tools_and_subagent(tmp_path: Path) -> None:
    p = tmp_path / "spans.json"
    p.write_text(json.dumps(_doc(_agent_spans())))
    res = read_otlp_json(p)
    assert res.skipped == 0
    (s,) = res.sessions
    assert s.agent_type == "coder"
    assert s.tenant == "acme"
    assert s.session_id == "t1"
    assert s.start_s == pytest.approx(T0 / S)
    assert [c.start_s for c in s.calls] == [0.0, 5.0, 20.0]
    assert [c.stop for c in s.calls] == ["tool_use", "tool_use", "end_turn"]
    assert s.calls[0].cached_tokens == 40
    assert s.calls[0].prompt_tokens == 100
    assert s.calls[0].model == "gpt-x"
    assert [(t.name, t.after_call, t.status) for t in s.tools] == [("bash", 0, "ok"), ("search", 1, "error")]
    (sub,) = s.subagents
    assert sub.session.agent_type == "explorer"
    assert sub.after_call == 1
    assert sub.start_s == pytest.approx(8.0)
    assert sub.session.parent_id == "t1"


def test_conversation_id_joins_traces_and_json_lines(tmp_path: Path) -> None:
    conv = {"gen_ai.conversation.id": "conv-9"}
    d1 = _doc([_chat("x", "", 0, 1, "stop", conv, trace="A")])
    d2 = _doc([_chat("y", "", 60, 61, "stop", conv, trace="B")])
    p = tmp_path / "spans.jsonl"
    p.write_text(json.dumps(d1) + "\n" + json.dumps(d2) + "\n")
    (s,) = read_otlp_json(p).sessions
    assert s.session_id == "conv-9"
    assert [c.start_s for c in s.calls] == [0.0, 60.0]


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"startTimeUnixNano": "soon"}, "startTimeUnixNano"),
        ({"endTimeUnixNano": str(T0 - S)}, "endTimeUnixNano"),
        ({"traceId": ""}, "traceId"),
        ({"attributes": "nope"}, "attributes"),
    ],
)
def test_bad_span(tmp_path: Path, patch: dict[str, Any], field: str) -> None:
    spans = _agent_spans()
    spans[3] = {**spans[3], **patch}
    p = tmp_path / "spans.json"
    p.write_text(json.dumps(_doc(spans)))
    with pytest.raises(TraceError) as ei:
        read_otlp_json(p)
    assert ei.value.file == str(p)
    assert ei.value.line == 1
    assert ei.value.field_name == f"resourceSpans[0].scopeSpans[0].spans[3].{field}"
    res = read_otlp_json(p, skip_bad=True)
    assert res.skipped == 1
    assert len(res.sessions[0].calls) == 2


def test_bad_token_attribute(tmp_path: Path) -> None:
    spans = [_chat("c", "", 0, 1, "stop", {"gen_ai.usage.output_tokens": "many"})]
    p = tmp_path / "spans.json"
    p.write_text(json.dumps(_doc(spans)))
    with pytest.raises(TraceError, match=r"gen_ai\.usage\.output_tokens"):
        read_otlp_json(p)
    assert read_otlp_json(p, skip_bad=True).skipped == 1


def test_not_otlp(tmp_path: Path) -> None:
    p = tmp_path / "x.json"
    p.write_text('{"foo": 1}')
    with pytest.raises(TraceError, match="resourceSpans"):
        read_otlp_json(p)
