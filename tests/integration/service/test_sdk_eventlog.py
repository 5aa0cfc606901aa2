"""The SDK's event log feeds the Agent Execution Graphs: what a live session writes through the
real service is read back by ``saga.graphs.ingest`` and built into a graph."""

from __future__ import annotations

from pathlib import Path

import pytest

from saga.client import AsyncSagaClient
from saga.graphs.aeg import build_graphs
from saga.graphs.ingest import detect_format, read_traces

from .conftest import Stack

pytestmark = pytest.mark.integration


async def test_live_session_event_log_round_trips_into_a_graph(stack: Stack, tmp_path: Path) -> None:
    log = tmp_path / "events.jsonl"
    async with AsyncSagaClient(stack.grpc_target, eventlog=log) as c, c.session(agent="swe") as s:
        first = await s.generate("fix the failing test " * 30, max_new_tokens=8)
        async with s.tool("pytest"):
            pass
        chunks = [ch async for ch in s.stream("fix the failing test " * 30 + "again", max_new_tokens=8)]
        session_id = s.session_id

    assert detect_format(log) == "eventlog"
    result = read_traces([log])
    assert result.skipped == 0
    assert [t.session_id for t in result.sessions] == [session_id]
    trace = result.sessions[0]
    assert trace.agent_type == "swe"
    assert len(trace.calls) == 2
    assert trace.calls[0].prompt_tokens == first.usage.prompt_tokens
    assert trace.calls[0].output_tokens == first.usage.completion_tokens
    last = chunks[-1].usage
    assert last is not None
    assert trace.calls[1].output_tokens == last.completion_tokens
    assert [t.name for t in trace.tools] == ["pytest"]
    assert trace.tools[0].after_call == 0

    graphs = build_graphs(result.sessions)
    assert "swe" in graphs.to_json()
