"""An information bound: Bélády told each stream's end exactly and its next call time with noise.

Not an online policy (it reads the future, like the oracle): it answers *how good a
prediction of the next call time must be* for a retention policy to close a given share of
the LRU→oracle gap. At every touch of a segment by request ``r`` at time ``t``, the policy
learns when the segment is used next, ``t_next`` (from ``Workload.req_next``), and ranks it by
the noisy estimate

    t + (t_next − t) · exp(σ · Z_next),   Z_next ~ N(0, 1), one draw per future request,

so every page the same future request will reuse shares one error (a per-stream prediction,
as an online model would make). Pages used never again rank ``∞`` (evicted first): the bound
knows exactly when each stream ends. ``σ = 0`` is the oracle; ``σ = ∞`` keeps only the
knowledge of ends: ended streams first, LRU among the rest (a finite but huge ``σ`` would
order the rest at random, which is far worse than LRU). ``σ`` is the standard
deviation of the natural log of the predicted-to-true ratio of the time from a call's start to
the stream's next call: ``bench/retention_information.py`` sweeps it and sets it beside the
error of SAGA's own held-out model on the same quantity
(:func:`saga.graphs.retention.gapmix.prediction_log_errors`).

Tunables: ``sigma`` (log-normal error, ≥ 0) and ``seed`` (of the draws; the same seed gives
the same replay).
"""

from __future__ import annotations

import math

import numpy as np

from saga.graphs.retention.cache import CacheState
from saga.graphs.retention.policies.base import GlobalHeapPolicy
from saga.graphs.retention.workload import Workload


class InformedBoundPolicy(GlobalHeapPolicy):
    name = "informed"

    def __init__(self, sigma: float = 1.0, seed: int = 0) -> None:
        super().__init__()
        if not (sigma >= 0.0):
            raise ValueError(f"informed bound: sigma must be >= 0, got {sigma}")
        self.sigma = sigma
        self.seed = seed

    def reset(self, wl: Workload, cache: CacheState) -> None:
        super().reset(wl, cache)
        self._pred = np.full(wl.n_segments, math.inf, dtype=np.float64)
        z = np.random.default_rng(self.seed).standard_normal(wl.n_requests)
        self._factor = np.exp(self.sigma * z) if math.isfinite(self.sigma) else z

    def on_request(self, r: int, t: float) -> None:
        wl = self.wl
        path, nxt = wl.req_path[r], wl.req_next[r]
        if not len(path):
            return
        pred = np.full(len(path), math.inf)
        live = nxt < wl.n_requests
        if live.any():
            n = nxt[live]
            if math.isinf(self.sigma):  # only the ends are known: LRU among the rest
                pred[live] = -t
            else:
                pred[live] = t + (wl.req_time[n] - t) * self._factor[n]
        self._pred[path] = pred

    def key(self, seg: int) -> float:
        return -float(self._pred[seg])  # farthest predicted next use = smallest key
