from __future__ import annotations

from collections.abc import Sequence

from saga.graphs.api import QUANTILE_LEVELS, NextCallPrediction, RemainingWork, SessionPosition
from saga.graphs.trace import LLMCall, SessionTrace, ToolCall

# (start_s, hashes, stop) per call; durations are 0 unless given as a 4th element
CallSpec = tuple[float, Sequence[int], str] | tuple[float, Sequence[int], str, float]


def make_session(
    sid: str, calls: Sequence[CallSpec], *, start_s: float = 0.0, agent_type: str = "agent"
) -> SessionTrace:
    """A session of block size 1 whose calls start at absolute ``start_s + call start``."""
    out: list[LLMCall] = []
    tools: list[ToolCall] = []
    for i, spec in enumerate(calls):
        t, hashes, stop = spec[0], spec[1], spec[2]
        dur = spec[3] if len(spec) > 3 else 0.0
        out.append(
            LLMCall(
                start_s=t,
                duration_s=float(dur),
                prompt_tokens=len(hashes),
                output_tokens=0,
                block_hashes=tuple(hashes),
                stop=stop,
            )
        )
        if i > 0:
            prev = out[i - 1]
            tools.append(ToolCall("tool", min(prev.end_s, t), t, i - 1))
    return SessionTrace(
        session_id=sid,
        agent_type=agent_type,
        calls=tuple(out),
        tools=tuple(tools),
        start_s=start_s,
        block_size=1,
    )


class FakePredictor:
    """Agent type "fast": returns within 1 s for sure; anything else: never returns."""

    def next_call(self, pos: SessionPosition, tool_elapsed_s: float) -> NextCallPrediction:
        if pos.agent_type == "fast":
            return NextCallPrediction(1.0, (1.0,) * len(QUANTILE_LEVELS), 0.0, 1.0)
        return NextCallPrediction(0.0, (1e6,) * len(QUANTILE_LEVELS), 0.0, 1.0)

    def remaining(self, pos: SessionPosition) -> RemainingWork:
        return RemainingWork(0.0, 0.0, 0.0, 0.0, 1.0)

    def observe(self, session: SessionTrace) -> None:
        pass
