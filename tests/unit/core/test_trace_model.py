"""Invariants of the session-trace model (graphs/trace.py)."""

from __future__ import annotations

from typing import Any

import pytest

from saga.graphs.trace import LLMCall, SessionTrace, SubAgent, ToolCall, TraceError, validate_session

pytestmark = pytest.mark.unit


def _call(t: float, prompt: int = 100, **kw: Any) -> LLMCall:
    return LLMCall(start_s=t, duration_s=1.0, prompt_tokens=prompt, output_tokens=10, **kw)


def test_valid_session_with_subagent_walks_depth_first() -> None:
    child = SessionTrace(session_id="s/a", agent_type="Explore", calls=(_call(0.0),), parent_id="s")
    s = SessionTrace(
        session_id="s",
        agent_type="coder",
        calls=(_call(0.0), _call(5.0, prompt=200)),
        tools=(ToolCall(name="pytest", start_s=1.0, end_s=5.0, after_call=0),),
        subagents=(SubAgent(after_call=0, start_s=1.0, session=child),),
    )
    validate_session(s)
    assert [x.session_id for x in s.walk()] == ["s", "s/a"]
    assert s.total_calls == 3
    assert s.duration_s == pytest.approx(6.0)


def test_time_going_backwards_names_the_field() -> None:
    s = SessionTrace(session_id="s", agent_type="a", calls=(_call(5.0), _call(1.0)), source="f.jsonl:3")
    with pytest.raises(TraceError) as exc:
        validate_session(s)
    assert exc.value.field_name == "calls[1].start_s"
    assert "f.jsonl:3" in str(exc.value)


@pytest.mark.parametrize(
    ("session", "field"),
    [
        (SessionTrace(session_id="s", agent_type="a", calls=()), "calls"),
        (SessionTrace(session_id="", agent_type="a", calls=(_call(0),)), "session_id"),
        (
            SessionTrace(session_id="s", agent_type="a", calls=(_call(0, prompt=-1),)),
            "calls[0].prompt_tokens",
        ),
        (
            SessionTrace(session_id="s", agent_type="a", calls=(_call(0, cached_tokens=500),)),
            "calls[0].cached_tokens",
        ),
        (
            SessionTrace(
                session_id="s",
                agent_type="a",
                calls=(_call(0),),
                tools=(ToolCall(name="t", start_s=2.0, end_s=1.0, after_call=0),),
            ),
            "tools[0].end_s",
        ),
        (
            SessionTrace(
                session_id="s",
                agent_type="a",
                calls=(_call(0),),
                tools=(ToolCall(name="t", start_s=1.0, end_s=2.0, after_call=3),),
            ),
            "tools[0].after_call",
        ),
        (
            SessionTrace(
                session_id="s", agent_type="a", block_size=64, calls=(_call(0, block_hashes=(1, 2, 3)),)
            ),
            "calls[0].block_hashes",
        ),
    ],
)
def test_invalid_sessions_raise_with_field(session: SessionTrace, field: str) -> None:
    with pytest.raises(TraceError) as exc:
        validate_session(session)
    assert exc.value.field_name == field
