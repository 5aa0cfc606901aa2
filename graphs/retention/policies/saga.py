"""SAGA's retention policy: evict the context least likely to be needed before it would leave anyway.

Bélády evicts the page used farthest in the future. Online, SAGA estimates for every stream
(agent or sub-agent) the probability that it calls the LLM again within a horizon ``H``, from a
held-out predictor (the AEG, or :class:`~saga.graphs.retention.gapmodel.EmpiricalGapPredictor`)
conditioned on where the stream stands (agent type, stop reason, tool) and on how long its
current gap has lasted: ``P = NextCallPrediction.prob_next_within(H)``, which already folds in
the probability that the session continues at all (a long silence after ``end_turn`` means it
probably ended). Pages are ranked by stream, lowest ``P`` evicted first, tail first inside the
stream. Because every page of a stream's live context is lost together when the stream
returns to find a hole (the next prompt recomputes everything after it), the value of a page is
the same for all pages of a context; P per page is the value density.

By default (``feature_model``) the distribution comes from
:class:`~saga.graphs.retention.gapmix.FeatureGapModel` (held-out population gaps per stop reason,
output-token bin and sub-agent) mixed with the stream's own past gaps (``own_weight``,
``own_prior``) and rescaled by its own time scale (``personal_weight``, ``personal_prior``);
see :mod:`saga.graphs.retention.gapmix`. With ``feature_model=False`` it comes from the held-out
``Predictor`` through the :class:`PredictionCache`.

Structure used on top of the predictions:

1. **Superseded branches first.** A leaf that is not on its stream's latest prompt (the context
   was rewritten: compaction, a retried turn, a finished sub-agent's abandoned branch) goes
   before any live context, oldest first.
2. **Running calls are kept.** While a stream's call is still running its context is in use.
3. **Sub-agents.** A parent that spawned a sub-agent waits for it: the parent's ``P`` is at
   least the probability that the child has finished (``1 − p_continue`` of the child), since
   the parent resumes as soon as the child returns.

The horizon ``H`` adapts to the cache: it tracks the *characteristic time* of the cache, an
exponentially weighted mean (in log space) of the idle time of the live contexts it evicts,
times ``horizon_factor``. A page kept now survives about that long, so what matters is whether
it is reused within it. Tunables:

- ``horizon_factor`` (3.0): ``H`` = factor × characteristic time.
- ``initial_horizon_s`` (60 s): ``H`` before the first eviction (about the p90 tool gap).
- ``horizon_alpha`` (0.05): EWMA weight of one eviction in the characteristic time.
- ``min_horizon_s`` / ``max_horizon_s`` (1 s / 1 day): clamps on ``H``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from saga.graphs.api import NextCallPrediction
from saga.graphs.retention.cache import CacheState
from saga.graphs.retention.gapmix import FeatureGapModel, StreamGaps, density, prediction
from saga.graphs.retention.policies.base import StreamPolicy
from saga.graphs.retention.predictors import PredictionCache
from saga.graphs.retention.workload import Workload
from saga.graphs.trace import LLMCall, SessionTrace


def fold_models(wl: Workload, out_bins: int) -> list[FeatureGapModel]:
    """One feature model per fold, each fitted on the sessions of the other folds only."""
    folds = max(1, wl.settings.folds)
    by_fold: list[list[SessionTrace]] = [[] for _ in range(folds)]
    for s in wl.streams:
        if s.parent < 0:
            by_fold[s.fold].append(s.trace)
    return [
        FeatureGapModel([s for j in range(folds) if j != k for s in by_fold[j]], out_bins=out_bins)
        for k in range(folds)
    ]


def hit_density(pred: NextCallPrediction, horizon_s: float) -> float:
    """Expected hits per second of cache occupancy when kept for at most ``horizon_s``.

    ``P(next call within H) / E[min(T, H)]`` with ``E[min(T, H)] = ∫₀ᴴ P(T > x) dx``, both read
    from the prediction's (interpolated) distribution, session end included (T = ∞).
    """
    xs = [0.0] + [q for q in pred.gap_quantiles_s if 0.0 < q < horizon_s] + [horizon_s]
    occ = 0.0
    prev_x, prev_s = 0.0, 1.0
    for x in xs[1:]:
        s = 1.0 - pred.prob_next_within(x)
        occ += 0.5 * (prev_s + s) * (x - prev_x)
        prev_x, prev_s = x, s
    return pred.prob_next_within(horizon_s) / max(occ, 1e-9)


@dataclass(frozen=True, slots=True)
class SagaRetentionSettings:
    horizon_factor: float = 3.0  # H as a multiple of the cache's characteristic time
    initial_horizon_s: float = 60.0  # H before the first eviction (seconds; ~p90 tool gap)
    horizon_alpha: float = 0.05  # EWMA weight of one eviction (log space)
    min_horizon_s: float = 1.0  # lower clamp on H (seconds)
    max_horizon_s: float = 86_400.0  # upper clamp on H (seconds)
    dead_branches_first: bool = True  # evict superseded branches before live contexts
    keep_running: bool = False  # never evict a stream whose call is still running (measured: worse)
    use_subagents: bool = True  # a waiting parent is as likely to resume as its child to finish
    # Per-stream time scale: weight of the stream's own past gaps against the population model
    # (0 = off) and the prior strength in pseudo-gaps that shrinks it towards 1.
    personal_weight: float = 1.0
    personal_prior: float = 3.0
    # Feature model (gapmix.py): population gaps per (stop, output-token bin, sub-agent) mixed
    # with the stream's own past gaps of the same stop reason. Off = the held-out predictor.
    feature_model: bool = True
    out_bins: int = 4  # output-token bins of the feature model (1 = stop reason only)
    own_weight: float = 0.5  # largest weight of the stream's own gaps in the mixture
    own_prior: float = 5.0  # own weight = own_weight · n / (n + own_prior) after n own gaps
    quantile_density: bool = True  # density from the mixture's quantiles (as hit_density) or exact


class SagaPolicy(StreamPolicy):
    name = "saga"

    def __init__(self, predictions: PredictionCache, settings: SagaRetentionSettings | None = None) -> None:
        super().__init__()
        self.predictions = predictions
        self.settings = settings or SagaRetentionSettings()
        self._log_tc = math.log(self.settings.initial_horizon_s)

    def reset(self, wl: Workload, cache: CacheState) -> None:
        if self.predictions.wl is not wl:
            raise ValueError("the prediction cache was built for another workload")
        super().reset(wl, cache)
        s = self.settings
        self._log_tc = math.log(max(s.initial_horizon_s, 1e-3) / max(s.horizon_factor, 1e-9))
        self._n = float(wl.n_requests + 1)
        self._memo: dict[tuple[int, int, int], float] = {}
        n = len(wl.streams)
        self._prev_end = [0.0] * n
        self._resid_sum = [0.0] * n
        self._resid_n = [0] * n
        if s.feature_model:
            self._models = fold_models(wl, s.out_bins)
            self._own: list[dict[str, StreamGaps]] = [{} for _ in range(n)]
            self._scale_state = [StreamGaps([]) for _ in range(n)]
            self._own_arr: dict[tuple[int, str], npt.NDArray[np.float64]] = {}

    @property
    def horizon_s(self) -> float:
        s = self.settings
        h = s.horizon_factor * math.exp(self._log_tc)
        return min(max(h, s.min_horizon_s), s.max_horizon_s)

    def on_request(self, r: int, t: float) -> None:
        tr = self.tracker
        si = int(self.wl.req_stream[r])
        prev = int(tr.last_req[si])
        super().on_request(r, t)
        if self.settings.feature_model:
            if prev >= 0:
                self._observe_gap(si, prev, max(0.0, t - float(self._prev_end[si])))
            self._prev_end[si] = float(tr.last_end[si])
            return
        if self.settings.personal_weight > 0 and prev >= 0:
            # the gap that just ended, against what the population model expected for it
            gap = max(0.0, t - float(self._prev_end[si]))
            expected = self.predictions.next_call(prev, 0.0).median_gap_s
            resid = math.log1p(gap) - math.log1p(max(expected, 0.0))
            self._resid_sum[si] += resid
            self._resid_n[si] += 1
        self._prev_end[si] = float(tr.last_end[si])

    def _call(self, r: int) -> tuple[LLMCall, bool]:
        wl = self.wl
        st = wl.streams[int(wl.req_stream[r])]
        return st.trace.calls[int(wl.req_call[r])], st.parent >= 0

    def _observe_gap(self, si: int, prev: int, gap: float) -> None:
        call, sub = self._call(prev)
        ctx = self._models[self.wl.streams[si].fold].context(call, sub)
        self._scale_state[si].add(gap, ctx.median)
        own = self._own[si].setdefault(call.stop, StreamGaps([]))
        own.add(gap, ctx.median)
        self._own_arr.pop((si, call.stop), None)

    def _mix_density(self, si: int, r: int, e: float, h: float) -> float:
        s = self.settings
        call, sub = self._call(r)
        ctx = self._models[self.wl.streams[si].fold].context(call, sub)
        f = self._scale_state[si].scale(s.personal_prior) ** s.personal_weight
        own = self._own[si].get(call.stop)
        arr = self._own_arr.get((si, call.stop))
        if arr is None:
            arr = np.sort(np.asarray(own.gaps if own else [], dtype=np.float64))
            self._own_arr[(si, call.stop)] = arr
        w = s.own_weight * len(arr) / (len(arr) + s.own_prior) if len(arr) else 0.0
        if s.quantile_density:
            return hit_density(prediction(ctx, arr, f, w, e), h)
        return density(ctx, arr, f, w, e, h)

    def _scale(self, si: int) -> float:
        """Per-stream time scale: how much slower (> 1) or faster this stream's gaps have been."""
        w = self.settings.personal_weight
        if w <= 0 or self._resid_n[si] == 0:
            return 1.0
        off = self._resid_sum[si] / (self._resid_n[si] + self.settings.personal_prior)
        return math.exp(w * off)

    def _density(self, si: int, t: float) -> float:
        tr = self.tracker
        r = int(tr.last_req[si])
        if self.settings.feature_model:
            h = self.horizon_s
            hb = int(math.log2(max(h, 1e-3)) * 4)
            eb = self.predictions.bin_of(tr.gap_elapsed(si, t))
            key = (r, eb, hb)
            d = self._memo.get(key)
            if d is None:
                e = 0.0 if eb == 0 else 2.0 ** ((eb - 1) / self.predictions.bins_per_octave) - 1.0
                d = self._memo[key] = self._mix_density(si, r, e, 2.0 ** (hb / 4))
            return self._with_children(si, r, d, t, h)
        f = self._scale(si)
        h = self.horizon_s / f
        hb = int(math.log2(max(h, 1e-3)) * 4)
        e = tr.gap_elapsed(si, t) / f
        key = (r, self.predictions.bin_of(e), hb)
        d = self._memo.get(key)
        if d is None:
            pred = self.predictions.next_call(r, e)
            d = self._memo[key] = hit_density(pred, 2.0 ** (hb / 4))
        d /= f
        return self._with_children(si, r, d, t, h)

    def _with_children(self, si: int, r: int, d: float, t: float, h: float) -> float:
        tr = self.tracker
        if self.settings.use_subagents:
            for c in tr.children[si]:
                rc = int(tr.last_req[c])
                if rc > r:  # the child started after the parent's last call: parent waits
                    child = self.predictions.next_call(rc, tr.gap_elapsed(c, t))
                    d = max(d, (1.0 - child.p_continue) / h)
        return d

    def stream_score(self, si: int, top: int, t: float) -> float:
        tie = float(self.last[top]) / self._n  # LRU among equals
        tr = self.tracker
        if self.settings.dead_branches_first and tr.latest_count[top] == 0:
            return -2.0 + tie
        if self.settings.keep_running and t < float(tr.last_end[si]):
            return 1e9 + tie
        return self._density(si, t) + 1e-9 * tie

    def on_drain(self, si: int, top: int, t: float) -> None:
        tr = self.tracker
        if tr.latest_count[top] == 0 or t < float(tr.last_end[si]):
            return
        idle = max(t - float(tr.last_end[si]), 1e-3)
        a = self.settings.horizon_alpha
        self._log_tc = (1 - a) * self._log_tc + a * math.log(idle)
