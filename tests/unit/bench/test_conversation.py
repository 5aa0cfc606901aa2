"""The replay's agent conversation: which calls force which tool, what the next call sends, and
that splitting a prompt around the tool exchange keeps the emulator's prefix caching as it was."""

from __future__ import annotations

import pytest

from saga.bench.conversation import (
    INPUT_MAX_CHARS,
    AnsweredCall,
    answered_call,
    fallback_call,
    function_name,
    merge_tool_deltas,
    request_fields,
    tool_plan,
)
from saga.bench.prompts import PromptBuilder
from saga.emulator.core import tokenizer
from saga.graphs.trace import STOP_END_TURN, STOP_TOOL_USE, TOOL_HUMAN, LLMCall, SessionTrace, ToolCall

pytestmark = pytest.mark.unit


def _session(tools: list[tuple[str, int]], stops: tuple[str, ...] = (), n: int = 4) -> SessionTrace:
    calls = tuple(
        LLMCall(
            start_s=10.0 * i,
            duration_s=1.0,
            prompt_tokens=10 + 8 * i,
            output_tokens=3,
            block_hashes=tuple(range(1, 3 + 2 * i)),
            stop=stops[i] if i < len(stops) else "",
        )
        for i in range(n)
    )
    tcs = tuple(
        ToolCall(name=name, start_s=10.0 * k + 1, end_s=10.0 * k + 5, after_call=k) for name, k in tools
    )
    return SessionTrace(session_id="s-1", agent_type="swe", calls=calls, tools=tcs, block_size=4)


def test_plan_forces_the_trace_tool_never_a_human_gap_or_the_last_call() -> None:
    s = _session(
        [("code_execution", 0), ("Read file", 1), (TOOL_HUMAN, 2), ("file_op", 3)],
        stops=(STOP_TOOL_USE, STOP_TOOL_USE, STOP_END_TURN, STOP_END_TURN),
    )
    assert tool_plan(s) == ["code_execution", "Read_file", None, None]
    # A tool_use stop without a named tool still forces one (the trace's unknown tool).
    bare = _session([], stops=(STOP_TOOL_USE, "", STOP_TOOL_USE, STOP_TOOL_USE))
    assert tool_plan(bare) == ["tool", None, "tool", None]
    assert function_name("mcp.server/x" + "y" * 80) == ("mcp_server_x" + "y" * 80)[:64]


def test_request_fields_echo_the_answered_call_and_keep_the_prompt_text() -> None:
    s = _session([("code_execution", 0), ("file_op", 1)])
    plan = tool_plan(s)
    pb = PromptBuilder()
    first = request_fields(pb, s, 0, plan, None)
    assert first["messages"] == [{"role": "user", "content": pb.call_text(s, 0)}]
    assert [t["function"]["name"] for t in first["tools"]] == ["code_execution", "file_op"]
    assert first["tool_choice"] == {"type": "function", "function": {"name": "code_execution"}}
    assert first["parallel_tool_calls"] is False  # one call per answer
    # a bounded string argument: real SGLang's constrained decoding must be able to close it
    params = first["tools"][0]["function"]["parameters"]
    assert params["properties"]["input"]["maxLength"] == INPUT_MAX_CHARS
    assert params["additionalProperties"] is False
    prev = AnsweredCall("call_abc", "code_execution", '{"input": " w1"}')
    second = request_fields(pb, s, 1, plan, prev)
    user, assistant, tool = second["messages"]
    head, tail = pb.call_parts(s, 1)
    assert user == {"role": "user", "content": head}
    assert assistant["tool_calls"][0] == {
        "id": "call_abc",
        "type": "function",
        "function": {"name": "code_execution", "arguments": '{"input": " w1"}'},
    }
    assert assistant["content"] is None
    assert tool == {"role": "tool", "tool_call_id": "call_abc", "content": tail}
    assert head + tail == pb.call_text(s, 1)
    assert second["tool_choice"]["function"]["name"] == "file_op"
    last = request_fields(pb, s, 3, plan, None)
    assert last["tool_choice"] == "none"
    assert "parallel_tool_calls" not in last
    assert "tools" in last  # the agent keeps listing its tools
    # A session that runs no tool sends no tool fields at all.
    plain = _session([])
    assert set(request_fields(pb, plain, 0, tool_plan(plain), None)) == {"messages"}


def test_split_prompt_keeps_the_shared_prefix_in_place() -> None:
    """What the next call can hit in the replica's cache is the head, at the same position with
    and without the tool exchange; the exchange costs a few template tokens only."""
    s = _session([("code_execution", 0), ("file_op", 1), ("file_op", 2)])
    pb = PromptBuilder()
    prev = AnsweredCall("call_abc", "file_op", '{"input": " w1 w2 w3"}')
    for i in (1, 2, 3):
        head, _tail = pb.call_parts(s, i)
        one = tokenizer.encode(tokenizer.render_chat([{"role": "user", "content": pb.call_text(s, i)}]))
        split = tokenizer.encode(
            tokenizer.render_chat(request_fields(pb, s, i, tool_plan(s), prev)["messages"])
        )
        n_head = 2 + len(tokenizer.encode(head))  # "<|user|>", "\n", the head's words
        assert split[:n_head] == one[:n_head]
        assert 0 < len(split) - len(one) <= 6


def test_streamed_tool_call_deltas_are_assembled() -> None:
    acc: dict[int, dict[str, str]] = {}
    merge_tool_deltas(
        acc, [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "f", "arguments": ""}}]
    )
    merge_tool_deltas(acc, [{"index": 0, "function": {"arguments": '{"input": '}}])
    merge_tool_deltas(acc, [{"index": 0, "function": {"arguments": '" w5"}'}}])
    merge_tool_deltas(acc, "garbage")
    assert answered_call(acc) == AnsweredCall("call_1", "f", '{"input": " w5"}')
    assert answered_call({}) is None
    fb = fallback_call(_session([]), 2, "f")
    assert fb == fallback_call(_session([]), 2, "f")
    assert fb.arguments == "{}"
    assert fb.id.startswith("call_")
