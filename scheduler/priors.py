"""Fallback predictor used when no AEG predictor is given (``BRIEF.md`` §2 priors).

Tool latency is log-normal per tool type, sigma = ln(p95/p50)/1.645, with cold-start
p50/p95 (ms): code execution 180/2400, file op 45/320, web API 850/4500, DB query 120/890.
Two more classes cover what agent traces record: an unnamed tool (the Claude Code traces'
gap after a ``tool_use`` response: p50 9 s, p95 ~200 s) and the human gap after an
``end_turn`` response (p50 210 s, p95 ~3000 s). The median is updated online from observed
gaps (EWMA on log latency, alpha = 0.1). Conditioning on the time already spent in the gap
uses the log-normal's survival function, so a gap that has lasted long predicts a longer rest.

``p_continue`` (the session calls the LLM again) is 0.97 after ``tool_use`` (a tool result is
always sent back), 0.6 after ``end_turn`` / unknown stops. ``remaining`` assumes
``expected_calls`` from the session hint, else 20 calls of 6 s plus their tool gaps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

from saga.graphs.api import QUANTILE_LEVELS, NextCallPrediction, RemainingWork, SessionPosition
from saga.graphs.trace import SessionTrace

# (p50 s, p95 s) cold-start priors per tool class.
TOOL_PRIORS_S: dict[str, tuple[float, float]] = {
    "code_execution": (0.18, 2.4),
    "file_op": (0.045, 0.32),
    "web_api": (0.85, 4.5),
    "db_query": (0.12, 0.89),
    "tool": (9.0, 200.0),
    "human": (210.0, 3000.0),
}
_ALIASES = {
    "bash": "code_execution",
    "python": "code_execution",
    "run_tests": "code_execution",
    "read": "file_op",
    "write": "file_op",
    "edit": "file_op",
    "grep": "file_op",
    "glob": "file_op",
    "browser": "web_api",
    "web": "web_api",
    "http": "web_api",
    "sql": "db_query",
}
_Z = {
    0.05: -1.645,
    0.1: -1.2816,
    0.25: -0.6745,
    0.5: 0.0,
    0.75: 0.6745,
    0.9: 1.2816,
    0.95: 1.645,
    0.99: 2.3263,
}


def _tool_class(tool: str | None, last_stop: str) -> str:
    if tool is None:
        return "human" if last_stop == "end_turn" else "tool"
    t = tool.lower()
    if t in TOOL_PRIORS_S:
        return t
    for key, cls in _ALIASES.items():
        if key in t:
            return cls
    return "tool"


@dataclass(slots=True)
class _LogNormal:
    mu: float
    sigma: float

    def quantile(self, level: float) -> float:
        return math.exp(self.mu + self.sigma * _Z[level])

    def survival(self, x: float) -> float:
        if x <= 0:
            return 1.0
        z = (math.log(x) - self.mu) / self.sigma
        return 0.5 * math.erfc(z / math.sqrt(2))


_STD_NORMAL = NormalDist()


def _inv_norm(p: float) -> float:
    """Standard normal quantile."""
    return _STD_NORMAL.inv_cdf(p)


class PriorPredictor:
    """A ``Predictor`` from log-normal tool priors, updated online per tool class."""

    def __init__(self, alpha: float = 0.1, default_calls: float = 20.0, call_s: float = 6.0) -> None:
        self.alpha = alpha
        self.default_calls = default_calls
        self.call_s = call_s
        self._dists: dict[str, _LogNormal] = {}
        for name, (p50, p95) in TOOL_PRIORS_S.items():
            self._dists[name] = _LogNormal(math.log(p50), math.log(p95 / p50) / 1.645)

    def observe_gap(self, tool: str | None, last_stop: str, seconds: float) -> None:
        """Online update of the tool class's median (EWMA on log latency)."""
        if seconds <= 0:
            return
        d = self._dists[_tool_class(tool, last_stop)]
        d.mu = (1 - self.alpha) * d.mu + self.alpha * math.log(seconds)

    def next_call(self, pos: SessionPosition, tool_elapsed_s: float) -> NextCallPrediction:
        d = self._dists[_tool_class(pos.current_tool, pos.last_stop)]
        p_cont = 0.97 if pos.last_stop in ("tool_use",) or pos.current_tool not in (None, "human") else 0.6
        qs: list[float] = []
        s0 = d.survival(tool_elapsed_s)
        for level in QUANTILE_LEVELS:
            if tool_elapsed_s <= 0 or s0 >= 0.999:
                qs.append(d.quantile(level))
                continue
            # quantile of the remaining gap, conditioned on the gap exceeding tool_elapsed_s
            target_cdf = 1 - s0 * (1 - level)
            z = _inv_norm(min(1 - 1e-12, max(1e-12, target_cdf)))
            qs.append(max(0.0, math.exp(d.mu + d.sigma * z) - tool_elapsed_s))
        for i in range(1, len(qs)):
            qs[i] = max(qs[i], qs[i - 1])
        return NextCallPrediction(
            p_continue=p_cont, gap_quantiles_s=tuple(qs), expected_new_tokens=2000.0, confidence=0.0
        )

    def remaining(self, pos: SessionPosition) -> RemainingWork:
        calls = max(1.0, self.default_calls - pos.steps_done)
        gap = self._dists["tool"].quantile(0.5)
        return RemainingWork(
            expected_calls=calls,
            expected_prefill_tokens=calls * 2000.0,
            expected_output_tokens=calls * 400.0,
            expected_time_s=calls * (self.call_s + gap),
            confidence=0.0,
        )

    def observe(self, session: SessionTrace) -> None:
        for t in session.tools:
            self.observe_gap(t.name, "tool_use", t.end_s - t.start_s)
