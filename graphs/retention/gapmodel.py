"""An empirical gap model implementing the :class:`~saga.graphs.api.Predictor` contract.

It is the retention evaluator's self-contained predictor (the AEG predictor of
``saga.graphs.predict`` can be used instead, see :mod:`saga.graphs.retention.predictors`).
Fitted on training sessions only, it keeps per *context* (agent type, stop reason of the last
response, tool name) the sorted sample of gaps (end of a call → start of the next call of the
same stream) and how often a call in that context was the stream's last one. A context seen
fewer than ``min_samples`` times falls back to (stop reason, tool), then to all gaps.

``next_call(pos, e)`` conditions on the elapsed gap ``e``: with ``S(e)`` the empirical survival
of the gap and ``q`` the continuation probability of the context, the stream is still going to
call again with probability ``q·S(e) / (q·S(e) + 1 − q)`` (a long silence is evidence that the
session ended), and the remaining-time quantiles are those of ``gap − e`` over the gaps longer
than ``e``.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import numpy.typing as npt

from saga.graphs.api import QUANTILE_LEVELS, NextCallPrediction, RemainingWork, SessionPosition
from saga.graphs.trace import SessionTrace

Context = tuple[str, str, str]
_ALL: Context = ("*", "*", "*")


class EmpiricalGapPredictor:
    """Conditional empirical gap distributions per (agent type, stop reason, tool)."""

    def __init__(self, sessions: list[SessionTrace] | None = None, *, min_samples: int = 30) -> None:
        self.min_samples = min_samples
        self._gaps: dict[Context, list[float]] = defaultdict(list)
        self._ends: dict[Context, int] = defaultdict(int)
        self._tokens: dict[Context, list[int]] = defaultdict(list)
        self._sorted: dict[Context, npt.NDArray[np.float64]] = {}
        self._mean_tokens: dict[Context, float] = {}
        for s in sessions or []:
            self.observe(s)

    @staticmethod
    def _contexts(agent_type: str, stop: str, tool: str) -> tuple[Context, Context, Context]:
        return (agent_type, stop, tool), ("*", stop, tool), _ALL

    def observe(self, session: SessionTrace) -> None:
        """Add a finished session (and its sub-agents) to the sample."""
        for s in session.walk():
            tools = {t.after_call: t.name for t in s.tools}
            for i, c in enumerate(s.calls):
                ctxs = self._contexts(s.agent_type, c.stop, tools.get(i, ""))
                if i + 1 < len(s.calls):
                    nxt = s.calls[i + 1]
                    gap = max(0.0, nxt.start_s - c.end_s)
                    new_tokens = max(0, nxt.prompt_tokens - c.prompt_tokens - c.output_tokens)
                    for ctx in ctxs:
                        self._gaps[ctx].append(gap)
                        self._tokens[ctx].append(new_tokens)
                else:
                    for ctx in ctxs:
                        self._ends[ctx] += 1
        self._sorted.clear()
        self._mean_tokens.clear()

    def _context(self, pos: SessionPosition) -> Context:
        for ctx in self._contexts(pos.agent_type, pos.last_stop, pos.current_tool or ""):
            if len(self._gaps.get(ctx, ())) + self._ends.get(ctx, 0) >= self.min_samples:
                return ctx
        return _ALL

    def _sample(self, ctx: Context) -> npt.NDArray[np.float64]:
        arr = self._sorted.get(ctx)
        if arr is None:
            arr = np.sort(np.asarray(self._gaps.get(ctx, []), dtype=np.float64))
            self._sorted[ctx] = arr
        return arr

    def next_call(self, pos: SessionPosition, tool_elapsed_s: float) -> NextCallPrediction:
        ctx = self._context(pos)
        gaps = self._sample(ctx)
        n_cont = len(gaps)
        n_end = self._ends.get(ctx, 0)
        if n_cont == 0:
            return NextCallPrediction(0.0 if n_end else 0.5, (0.0,) * len(QUANTILE_LEVELS), 0.0, 0.0)
        e = max(0.0, tool_elapsed_s)
        idx = int(np.searchsorted(gaps, e, side="right"))
        longer = n_cont - idx
        p = longer / (longer + n_end) if longer + n_end else 0.0
        if longer == 0:
            quantiles = (e,) * len(QUANTILE_LEVELS)  # no observed gap this long: a guess
        else:
            rest = gaps[idx:]
            pos_q = [min(longer - 1, int(q * longer)) for q in QUANTILE_LEVELS]
            quantiles = tuple(float(rest[i] - e) for i in pos_q)
        tokens = self._mean_tokens.get(ctx)
        if tokens is None:
            sample = self._tokens.get(ctx, [])
            tokens = self._mean_tokens[ctx] = float(np.mean(sample)) if sample else 0.0
        conf = min(1.0, (n_cont + n_end) / (10.0 * self.min_samples))
        return NextCallPrediction(
            p_continue=p,
            gap_quantiles_s=quantiles,
            expected_new_tokens=tokens,
            confidence=conf,
        )

    def remaining(self, pos: SessionPosition) -> RemainingWork:
        ctx = self._context(pos)
        n_cont = len(self._gaps.get(ctx, []))
        n_end = self._ends.get(ctx, 0)
        q = n_cont / (n_cont + n_end) if n_cont + n_end else 0.0
        calls = q / (1.0 - q) if q < 1.0 else float(n_cont)
        gaps = self._sample(ctx)
        mean_gap = float(gaps.mean()) if len(gaps) else 0.0
        return RemainingWork(calls, 0.0, 0.0, calls * mean_gap, min(1.0, (n_cont + n_end) / 300.0))
