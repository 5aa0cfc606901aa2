"""The live benchmark's replay through SAGA's OpenAI endpoint reaches SAGA's engine as tool
boundaries: every tool the trace runs between two calls is a ``ToolStarted`` after the call's
answer (the emulated replica answers the forced tool call) and a ``ToolEnded`` when the next
call arrives. The engine is the real one, wrapped to record the events the service gives it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from saga.bench.replay import ReplayConfig, Replayer, wire_session_id
from saga.clock import MonotonicClock
from saga.emulator.core import ReplicaConfig
from saga.emulator.server import RunningReplica, start_replica
from saga.graphs.trace import STOP_END_TURN, STOP_TOOL_USE, TOOL_HUMAN, LLMCall, SessionTrace, ToolCall
from saga.scheduler.api import Action, Event, ToolEnded, ToolStarted
from saga.scheduler.engine import Engine
from saga.service.app import Service, engine_settings
from saga.service.config import load_text

pytestmark = pytest.mark.integration

TIME_SCALE = 50.0  # model seconds per wall second, for the replicas, SAGA's clock and the replay


class RecordingEngine:
    """The real engine; every event the service hands it is also kept in ``events``."""

    def __init__(self, inner: Engine) -> None:
        self.inner = inner
        self.events: list[Event] = []

    def handle(self, event: Event) -> list[Action]:
        self.events.append(event)
        return self.inner.handle(event)

    def tick(self) -> list[Action]:
        return self.inner.tick()

    def next_deadline(self) -> float | None:
        return self.inner.next_deadline()

    @property
    def lane_replicas(self) -> frozenset[str]:
        return self.inner.lane_replicas


def _config(url: str) -> str:
    return f"""\
apiVersion: saga.dev/v1alpha1
kind: SchedulerConfig
spec:
  listen: {{grpc: "127.0.0.1:0", http: "127.0.0.1:0", metrics: "127.0.0.1:0"}}
  replicas:
    static:
      - r0={url}
    poll_interval_s: 0.05
    connect_timeout_s: 0.5
"""


def _trace() -> SessionTrace:
    """Five calls: tools after calls 0, 1 and 3 (one name needs sanitising), a human gap after
    call 2; append-only prompts with shared 16-token blocks and per-call tails."""
    bs = 16
    calls = []
    for i in range(5):
        prompt = 200 + 90 * i
        calls.append(
            LLMCall(
                start_s=3.0 * i,
                duration_s=0.5,
                prompt_tokens=prompt,
                output_tokens=12,
                block_hashes=tuple(range(1000, 1000 + prompt // bs)),
                stop=STOP_END_TURN if i in (2, 4) else STOP_TOOL_USE,
            )
        )
    tools = (
        ToolCall("code_execution", 0.5, 1.0, after_call=0),
        ToolCall("Read file", 3.5, 4.0, after_call=1),
        ToolCall(TOOL_HUMAN, 6.5, 9.0, after_call=2),
        ToolCall("file_op", 9.5, 10.0, after_call=3),
    )
    return SessionTrace("agent-7/run", "swe", tuple(calls), tools, block_size=bs)


@pytest.fixture
async def stack() -> AsyncIterator[tuple[Service, RecordingEngine, RunningReplica]]:
    rep = await start_replica(
        ReplicaConfig(page_size=16, enable_session_radix_cache=True), replica_id="r0", time_scale=TIME_SCALE
    )
    cfg = load_text(_config(rep.url))
    clock = MonotonicClock(TIME_SCALE)
    engine = RecordingEngine(Engine(clock, engine_settings(cfg)))
    svc = Service(cfg, registry=CollectorRegistry(), clock=clock, engine=engine)
    await svc.start()
    try:
        await svc.wait_replicas(1, timeout_s=10)
        yield svc, engine, rep
    finally:
        await svc.stop()
        await rep.runner.cleanup()


async def test_replayed_session_opens_and_closes_a_tool_gap_per_tool(
    stack: tuple[Service, RecordingEngine, RunningReplica],
) -> None:
    svc, engine, _rep = stack
    trace = _trace()
    cfg = ReplayConfig(url=f"http://127.0.0.1:{svc.http_port}", time_scale=TIME_SCALE, api_keys={})
    async with aiohttp.ClientSession() as http:
        [outcome] = await Replayer(cfg, http).run([trace])
    assert outcome.completed
    assert outcome.calls == 5
    sid = wire_session_id(trace.session_id)
    tool_events = [
        (type(e).__name__, e.tool)
        for e in engine.events
        if isinstance(e, ToolStarted | ToolEnded) and e.session_id == sid
    ]
    assert tool_events == [
        ("ToolStarted", "code_execution"),
        ("ToolEnded", "code_execution"),
        ("ToolStarted", "Read_file"),
        ("ToolEnded", "Read_file"),
        ("ToolStarted", "file_op"),
        ("ToolEnded", "file_op"),
    ]
    assert svc.core is not None
    assert svc.core.sessions[sid].current_tool is None  # the last call closed the last gap
    # The tool exchange did not cost the replica its prefix hits: every call after the first
    # found its predecessor's blocks cached (append-only prompts, one replica).
    assert outcome.cached_tokens >= sum(c.prompt_tokens for c in trace.calls[:-1]) - 5 * 16
