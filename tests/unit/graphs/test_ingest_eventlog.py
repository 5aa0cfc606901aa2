"""SAGA event log: builder/reader round trip, versioning and bad input."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from saga.graphs.ingest import eventlog as ev
from saga.graphs.trace import LLMCall, SessionTrace, SubAgent, ToolCall, TraceError

pytestmark = pytest.mark.unit


def _session() -> SessionTrace:
    child = SessionTrace(
        session_id="s1/c",
        agent_type="coder/explore",
        calls=(LLMCall(0.0, 1.0, 50, 5, stop="end_turn"),),
        parent_id="s1",
    )
    return SessionTrace(
        session_id="s1",
        agent_type="coder",
        tenant="acme",
        start_s=1000.0,
        block_size=16,
        shared_prefix_tokens=32,
        calls=(
            LLMCall(0.0, 2.0, 100, 10, cached_tokens=0, block_hashes=(1, 2, 3), stop="tool_use", model="m"),
            LLMCall(
                5.0, 2.0, 150, 10, cached_tokens=96, block_hashes=(1, 2, 3, 4), stop="tool_use", ttft_s=0.1
            ),
            LLMCall(20.0, 1.0, 200, 7, stop="end_turn"),
        ),
        tools=(
            ToolCall("bash", 2.0, 5.0, after_call=0),
            ToolCall("task", 7.0, 20.0, after_call=1, status="error"),
        ),
        subagents=(SubAgent(after_call=1, start_s=8.0, session=child),),
    )


def _strip(s: SessionTrace) -> SessionTrace:
    """``s`` without its ``source`` (where it was read from), recursively."""
    subs = tuple(replace(x, session=_strip(x.session)) for x in s.subagents)
    return replace(s, source="", subagents=subs)


def _write(tmp_path: Path, recs: list[Any]) -> Path:
    p = tmp_path / "events.jsonl"
    p.write_text("".join(r if isinstance(r, str) else ev.encode(r) for r in recs))
    return p


def test_round_trip(tmp_path: Path) -> None:
    s = _session()
    res = ev.read_eventlog(_write(tmp_path, ev.session_to_events(s)))
    assert res.skipped == 0
    (back,) = res.sessions
    assert _strip(back) == s
    assert back.attributes["complete"] == "true"
    assert back.subagents[0].session.calls == s.subagents[0].session.calls


def test_builders_are_pure_and_versioned() -> None:
    rec = ev.llm_call("x", 1.0, duration_s=0.5, prompt_tokens=3, output_tokens=1)
    assert rec["v"] == ev.EVENTLOG_VERSION
    assert rec["type"] == "llm_call"
    line = ev.encode(rec)
    assert line.endswith("\n")
    assert json.loads(line) == rec


def test_incomplete_session_kept(tmp_path: Path) -> None:
    recs = [
        ev.session_start("a", 0.0, agent_type="t"),
        ev.llm_call("a", 0.0, duration_s=1.0, prompt_tokens=5, output_tokens=1, stop="tool_use"),
    ]
    (s,) = ev.read_eventlog(_write(tmp_path, recs)).sessions
    assert s.attributes["complete"] == "false"


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        ({**ev.session_end("a", 9.0), "v": 2}, "v"),
        ({**ev.session_end("a", 9.0), "type": "nope"}, "type"),
        (ev.llm_call("zz", 9.0, duration_s=0, prompt_tokens=1, output_tokens=1), "session"),
        (ev.llm_call("a", 0.5, duration_s=0, prompt_tokens=1, output_tokens=1), "t"),  # backwards
        (ev.llm_call("a", 9.0, duration_s=0, prompt_tokens=1, output_tokens=-1), "output_tokens"),
        (
            ev.llm_call("a", 9.0, duration_s=0, prompt_tokens=1, output_tokens=1, cached_tokens=5),
            "cached_tokens",
        ),
        (ev.tool_call("a", 9.0, name="x", end=8.0), "end"),
        (ev.session_start("b", 9.0, agent_type="t", parent="nobody"), "parent"),
        ('{"v": 1, "type": "llm_call", "session": "a", "t": 9', None),  # bad JSON
    ],
)
def test_bad_records(tmp_path: Path, bad: Any, field: str | None) -> None:
    recs = [
        ev.session_start("a", 0.0, agent_type="t"),
        ev.llm_call("a", 1.0, duration_s=1.0, prompt_tokens=5, output_tokens=1),
        bad if isinstance(bad, dict) else bad + "\n",
        ev.session_end("a", 10.0),
    ]
    p = _write(tmp_path, recs)
    with pytest.raises(TraceError) as ei:
        ev.read_eventlog(p)
    assert (ei.value.file, ei.value.line, ei.value.field_name) == (str(p), 3, field)
    res = ev.read_eventlog(p, skip_bad=True)
    assert res.skipped == 1
    assert len(res.sessions) == 1
    assert len(res.sessions[0].calls) == 1
