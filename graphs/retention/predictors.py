"""Held-out predictions for the replay: each stream is predicted by a model of *other* sessions.

Sessions are split into ``folds`` by a hash of their top-level id
(:func:`~saga.graphs.retention.workload.fold_of`); the predictor used for a stream of fold ``k``
was built from the sessions of every other fold only, so no policy ever sees a model of the
session it is deciding about. With one fold there is nothing to hold out and the predictor is
trained on no session (cold start).

:class:`PredictionCache` memoises ``next_call`` per (request, elapsed-time bin): a position only
changes when the stream makes a request, and elapsed time is binned on a log scale
(``bins_per_octave`` bins per doubling) so that a replay asks each predictor a bounded number of
questions whatever its implementation costs.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable

from saga.graphs.api import NextCallPrediction, Predictor, RemainingWork, SessionPosition
from saga.graphs.retention.workload import Workload
from saga.graphs.trace import SessionTrace

PredictorFactory = Callable[[list[SessionTrace]], Predictor]


def held_out_predictors(wl: Workload, factory: PredictorFactory) -> list[Predictor]:
    """One predictor per fold, each built from the sessions of the other folds."""
    folds = max(1, wl.settings.folds)
    by_fold: list[list[SessionTrace]] = [[] for _ in range(folds)]
    top_fold = {s.top: s.fold for s in wl.streams if s.parent < 0}
    for i, s in enumerate(wl.sessions):
        by_fold[top_fold[i]].append(s)
    out: list[Predictor] = []
    for k in range(folds):
        train = [s for j in range(folds) if j != k for s in by_fold[j]]
        out.append(factory(train))
    return out


def usual_tools(wl: Workload) -> dict[str, str]:
    """The tool name that most often follows a response with each stop reason.

    A trace has no tool after a stream's *last* call, so taking the position's tool from the
    trace would reveal that the stream ends. Positions use this map instead when no tool
    follows, as a serving system would: it knows the stop reason, not whether the user will
    come back.
    """
    counts: dict[str, Counter[str]] = {}
    for st in wl.streams:
        calls = st.trace.calls
        for t in st.trace.tools:
            if 0 <= t.after_call < len(calls):
                counts.setdefault(calls[t.after_call].stop, Counter())[t.name] += 1
    return {stop: c.most_common(1)[0][0] for stop, c in counts.items()}


class PredictionCache:
    """Memoised held-out ``next_call`` answers for the streams of a workload."""

    def __init__(self, wl: Workload, predictors: list[Predictor], *, bins_per_octave: int = 4) -> None:
        self.wl = wl
        self.predictors = predictors
        self.bins_per_octave = bins_per_octave
        self._memo: dict[tuple[int, int], NextCallPrediction] = {}
        self._pos: dict[int, SessionPosition] = {}
        self.queries = 0
        self._usual_tool = usual_tools(wl)

    def position(self, r: int) -> SessionPosition:
        """Where request ``r``'s stream stands once ``r`` has been answered."""
        pos = self._pos.get(r)
        if pos is None:
            wl = self.wl
            st = wl.streams[int(wl.req_stream[r])]
            ci = int(wl.req_call[r])
            call = st.trace.calls[ci]
            tool = next((t.name for t in st.trace.tools if t.after_call == ci), None)
            if tool is None:
                # the trace records no tool after a stream's last call; reading that would tell
                # the policy the stream ends (the future), so use what usually follows the stop
                tool = self._usual_tool.get(call.stop)
            pos = SessionPosition(
                agent_type=st.trace.agent_type,
                steps_done=ci + 1,
                context_tokens=call.prompt_tokens + call.output_tokens,
                current_tool=tool,
                last_stop=call.stop,
                is_subagent=st.parent >= 0,
            )
            self._pos[r] = pos
        return pos

    def bin_of(self, elapsed_s: float) -> int:
        """The elapsed-time bin the memo uses for ``elapsed_s``."""
        return self._bin(elapsed_s)[0]

    def _bin(self, elapsed_s: float) -> tuple[int, float]:
        if elapsed_s <= 0.0:
            return 0, 0.0
        b = 1 + int(math.log2(1.0 + elapsed_s) * self.bins_per_octave)
        return b, 2.0 ** ((b - 1) / self.bins_per_octave) - 1.0

    def next_call(self, r: int, elapsed_s: float) -> NextCallPrediction:
        """Prediction for the stream of request ``r`` (its latest), ``elapsed_s`` into its gap."""
        b, e = self._bin(elapsed_s)
        key = (r, b)
        pred = self._memo.get(key)
        if pred is None:
            fold = self.wl.streams[int(self.wl.req_stream[r])].fold
            self.queries += 1
            pred = self.predictors[fold].next_call(self.position(r), e)
            self._memo[key] = pred
        return pred

    def remaining(self, r: int) -> RemainingWork:
        fold = self.wl.streams[int(self.wl.req_stream[r])].fold
        return self.predictors[fold].remaining(self.position(r))
