"""The paper's weighted eviction score (BRIEF.md §2), at whole-session granularity.

Each stream with resident pages gets ``0.3·age_norm + 0.5·(1 − P_reuse) + 0.2·size_norm`` and
the highest score is evicted first (tail-first inside the stream). ``age`` is the time since
the stream's last call started, ``size`` its context in tokens, both normalised by the largest
value among the candidates of the eviction round. ``P_reuse = p_continue · c / (c + n)``: the
held-out predictor's probability that the stream calls again (given how long it has been
silent) times the share of the next prompt that ``c`` cached tokens cover when ``n`` new
tokens are expected (the authors' ``c/(c+obs_u)``).

Tunables: ``w_age`` (0.3), ``w_reuse`` (0.5), ``w_size`` (0.2): the authors' weights.
"""

from __future__ import annotations

from saga.graphs.retention.cache import CacheState
from saga.graphs.retention.policies.base import StreamPolicy
from saga.graphs.retention.predictors import PredictionCache
from saga.graphs.retention.workload import Workload


class WeightedScorePolicy(StreamPolicy):
    name = "weighted"

    def __init__(
        self,
        predictions: PredictionCache,
        *,
        w_age: float = 0.3,
        w_reuse: float = 0.5,
        w_size: float = 0.2,
    ) -> None:
        super().__init__()
        self.predictions = predictions
        self.w_age, self.w_reuse, self.w_size = w_age, w_reuse, w_size
        self._max_age = 1.0
        self._max_size = 1.0

    def reset(self, wl: Workload, cache: CacheState) -> None:
        if self.predictions.wl is not wl:
            raise ValueError("the prediction cache was built for another workload")
        super().reset(wl, cache)

    def begin_round(self, t: float, streams: list[int]) -> None:
        tr = self.tracker
        self._max_age = max([t - float(tr.last_start[s]) for s in streams] + [1e-9])
        self._max_size = float(max([int(tr.context_tokens[s]) for s in streams] + [1]))

    def stream_score(self, si: int, top: int, t: float) -> float:
        tr = self.tracker
        age = t - float(tr.last_start[si])
        c = float(tr.context_tokens[si])
        pred = self.predictions.next_call(int(tr.last_req[si]), tr.gap_elapsed(si, t))
        p_reuse = pred.p_continue * (c / (c + pred.expected_new_tokens) if c > 0 else 0.0)
        w = (
            self.w_age * age / self._max_age
            + self.w_reuse * (1.0 - p_reuse)
            + self.w_size * c / self._max_size
        )
        return -w
