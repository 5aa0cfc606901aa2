"""SAGA's retention policy: evict the context least likely to be needed soon, judged online.

Bélády evicts the page used farthest in the future. Online, SAGA estimates for every stream
(agent or sub-agent) the **value density** of its context: the probability that the stream
calls again, divided by the median time until it does,
``P(next call | state) / median(time to next call | it comes, state)`` (expected reuses per
second of waiting; 0 when the stream has probably ended). The stream with the lowest density
loses pages first, tail first inside the stream. Every page of a live context has the same
value (the next prompt recomputes everything after the first hole, so evicting ``k`` tail pages
costs ``k`` pages if the stream returns), so density per stream is density per page.

The state is what a server knows at that moment (:mod:`saga.graphs.retention.gapmix`):

- while the stream's call **runs**: the previous response's stop reason, the sub-agent flag and
  how long the call has been running (the call's duration is at least that). Nothing about the
  running call's response (stop reason, length) is read before it ends.
- in the **gap** after a response: its stop reason, output-token bin, the sub-agent flag (and,
  where ``step_bins`` says so, the call's position in the stream) and how long the gap has lasted.

The law of the time to the next call is the held-out population sample of that context
(:class:`~saga.graphs.retention.gapmix.FeatureGapModel`, fitted on the other hash folds only),
mixed with the stream's own history of the same state (``own_weight``, ``own_prior``).

Structure used on top:

1. **Superseded branches first.** A leaf that is not on its stream's latest prompt (the context
   was rewritten: compaction, a retried turn, a finished sub-agent's abandoned branch) goes
   before any live context, oldest first.
2. **Prefixes shared across streams** (a common system prompt, ``shared_prefixes``): a segment
   touched by two or more streams is worth at least its own observed reuse rate, touches per
   second since its first use, whoever touched it last.

Ties (equal densities, e.g. streams that have all probably ended) are broken by LRU. Tunables
(``SagaRetentionSettings``): ``out_bins`` (4), ``step_bins`` (auto), ``min_samples`` (30),
``own_weight`` (0.5), ``own_prior`` (5 observations), ``bins_per_octave`` (4: the density is
memoised per request and elapsed-time bin, so a replay or a scheduler evaluates it a bounded
number of times).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from saga.graphs.retention.cache import CacheState
from saga.graphs.retention.gapmix import START, FeatureGapModel, Sample, StreamHistory, value_density
from saga.graphs.retention.policies.base import StreamPolicy
from saga.graphs.retention.workload import Workload
from saga.graphs.trace import SessionTrace


def fold_models(wl: Workload, out_bins: int, step_bins: str, min_samples: int) -> list[FeatureGapModel]:
    """One feature model per fold, each fitted on the sessions of the other folds only."""
    folds = max(1, wl.settings.folds)
    by_fold: list[list[SessionTrace]] = [[] for _ in range(folds)]
    for s in wl.streams:
        if s.parent < 0:
            by_fold[s.fold].append(s.trace)
    return [
        FeatureGapModel(
            [s for j in range(folds) if j != k for s in by_fold[j]],
            out_bins=out_bins,
            step_bins=step_bins,
            min_samples=min_samples,
        )
        for k in range(folds)
    ]


@dataclass(frozen=True, slots=True)
class SagaRetentionSettings:
    dead_branches_first: bool = True  # evict superseded branches before live contexts
    shared_prefixes: bool = True  # a segment used by several streams is worth its reuse rate
    out_bins: int = 4  # output-token bins of the gap contexts (1 = stop reason only)
    # gap contexts also by the call's position (first, 2nd-3rd, later): "off", "on", or "auto"
    # (per context, where cross-fitting on the training sessions says it predicts P(next call)
    # better; gapmix.py). Measured in docs/retention.md: "on" helps Mooncake but makes one
    # Claude Code fold worse than LRU at 50 % of W; "auto" keeps the Mooncake gain without that.
    step_bins: str = "auto"
    min_samples: int = 30  # observations a context needs before it is used (else coarser)
    own_weight: float = 0.5  # largest weight of the stream's own history in the mixture
    own_prior: float = 5.0  # own weight = own_weight · n / (n + own_prior) after n observations
    bins_per_octave: int = 4  # resolution of the elapsed-time memo (bins per doubling of 1 + e)


class SagaPolicy(StreamPolicy):
    name = "saga"

    def __init__(self, settings: SagaRetentionSettings | None = None) -> None:
        super().__init__()
        self.settings = settings or SagaRetentionSettings()

    def reset(self, wl: Workload, cache: CacheState) -> None:
        super().reset(wl, cache)
        s = self.settings
        self._n = float(wl.n_requests + 1)
        self._models = fold_models(wl, s.out_bins, s.step_bins, s.min_samples)
        self._history = [StreamHistory() for _ in wl.streams]
        self._memo: dict[tuple[int, bool, int], float] = {}
        self._touches = np.zeros(wl.n_segments, dtype=np.int64)
        self._first_use = np.zeros(wl.n_segments, dtype=np.float64)
        self._shared = np.zeros(wl.n_segments, dtype=bool)

    def on_request(self, r: int, t: float) -> None:
        wl, tr = self.wl, self.tracker
        si = int(wl.req_stream[r])
        prev = int(tr.last_req[si])
        if prev >= 0:
            call = wl.streams[si].trace.calls[int(wl.req_call[prev])]
            self._history[si].add(call, float(tr.last_start[si]), float(tr.last_end[si]), t)
        path = wl.req_path[r]
        if self.settings.shared_prefixes and len(path):
            owner = self.owner[path]
            self._shared[path[(owner >= 0) & (owner != si)]] = True
            new = self._touches[path] == 0
            self._first_use[path[new]] = t
            self._touches[path] += 1
        super().on_request(r, t)

    def _bin(self, elapsed_s: float) -> tuple[int, float]:
        """Elapsed-time bin and its lower edge (the value the memoised density is computed at)."""
        if elapsed_s <= 0.0:
            return 0, 0.0
        k = self.settings.bins_per_octave
        b = 1 + int(math.log2(1.0 + elapsed_s) * k)
        return b, 2.0 ** ((b - 1) / k) - 1.0

    def density(self, si: int, t: float) -> float:
        """Value density of stream ``si``'s context at ``t`` (1/s), from online facts only."""
        wl, tr, s = self.wl, self.tracker, self.settings
        r = int(tr.last_req[si])
        running = t < float(tr.last_end[si])  # observable: the response has not finished
        b, e = self._bin(t - float(tr.last_start[si] if running else tr.last_end[si]))
        key = (r, running, b)
        d = self._memo.get(key)
        if d is None:
            st = wl.streams[si]
            ci = int(wl.req_call[r])
            model = self._models[st.fold]
            sub = st.parent >= 0
            hist = self._history[si]
            own: Sample | None
            if running:  # nothing of the running call's response is known yet
                prev_stop = st.trace.calls[ci - 1].stop if ci else START
                pop, own = model.running(prev_stop, sub), hist.running
            else:
                call = st.trace.calls[ci]
                pop, own = model.gap(call, sub, ci), hist.gaps.get(call.stop)
            d = self._memo[key] = value_density(pop, own, s.own_weight, s.own_prior, e, memo_key=b)
        return d

    def stream_score(self, si: int, top: int, t: float) -> float:
        tie = float(self.last[top]) / self._n  # LRU among equals
        if self.settings.dead_branches_first and self.tracker.latest_count[top] == 0:
            return -2.0 + tie
        d = self.density(si, t)
        if self._shared[top]:
            d = max(d, float(self._touches[top]) / max(t - float(self._first_use[top]), 1.0))
        return d + 1e-9 * tie
