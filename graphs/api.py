"""What the scheduler asks the Agent Execution Graphs (the predictor contract).

The scheduler engine depends only on this module; ``saga.graphs`` provides the AEG-backed
implementation and the scheduler can run with any other (or none: request-level behaviour).
Every method must be fast (microseconds): it is called at every tool boundary and in
eviction decisions.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Protocol

from saga.graphs.trace import SessionTrace

# Probability levels at which time-to-next-call distributions are reported.
QUANTILE_LEVELS: tuple[float, ...] = (0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99)


@dataclass(frozen=True, slots=True)
class SessionPosition:
    """Where a live session stands in its workflow, as the scheduler knows it."""

    agent_type: str
    steps_done: int  # LLM calls completed so far (sub-agents excluded)
    context_tokens: int  # prompt + output tokens of the last call (the KV the session holds)
    current_tool: str | None = None  # tool running now; None while the session is in an LLM step
    last_stop: str = ""  # stop reason of the last response ("tool_use", "end_turn", "")
    is_subagent: bool = False


@dataclass(frozen=True, slots=True)
class NextCallPrediction:
    """Distribution of when (and whether) the session calls the LLM again.

    ``gap_quantiles_s[i]`` is the ``QUANTILE_LEVELS[i]`` quantile of the *remaining* time from
    now until the next call, conditioned on the session continuing.
    """

    p_continue: float
    gap_quantiles_s: tuple[float, ...]
    expected_new_tokens: float  # uncached prompt tokens the next call adds
    confidence: float  # 0 (prior only) .. 1 (well observed)

    def prob_next_within(self, horizon_s: float) -> float:
        """P(the next call arrives within ``horizon_s`` from now), interpolating the quantiles."""
        q = self.gap_quantiles_s
        if horizon_s <= 0 or not q:
            return 0.0
        if horizon_s >= q[-1]:
            return self.p_continue * QUANTILE_LEVELS[-1] + self.p_continue * (1 - QUANTILE_LEVELS[-1]) * min(
                1.0, horizon_s / (2 * q[-1]) if q[-1] > 0 else 1.0
            )
        i = bisect.bisect_left(q, horizon_s)
        if i == 0:
            frac = horizon_s / q[0] if q[0] > 0 else 1.0
            return self.p_continue * QUANTILE_LEVELS[0] * frac
        lo, hi = q[i - 1], q[i]
        plo, phi = QUANTILE_LEVELS[i - 1], QUANTILE_LEVELS[i]
        frac = (horizon_s - lo) / (hi - lo) if hi > lo else 1.0
        return self.p_continue * (plo + frac * (phi - plo))

    @property
    def median_gap_s(self) -> float:
        return self.gap_quantiles_s[QUANTILE_LEVELS.index(0.5)]


@dataclass(frozen=True, slots=True)
class RemainingWork:
    """Expected work left in the session's task (fairness and SLO accounting)."""

    expected_calls: float
    expected_prefill_tokens: float  # uncached prompt tokens still to come
    expected_output_tokens: float
    expected_time_s: float  # wall time including tool gaps
    confidence: float


class Predictor(Protocol):
    """Predictions at tool boundaries. Implementations must be pure and fast."""

    def next_call(self, pos: SessionPosition, tool_elapsed_s: float) -> NextCallPrediction:
        """When the session calls the LLM next, given ``tool_elapsed_s`` already spent in its gap."""
        ...

    def remaining(self, pos: SessionPosition) -> RemainingWork:
        """Expected work left in the session's task."""
        ...

    def observe(self, session: SessionTrace) -> None:
        """Online update with a finished session."""
        ...
