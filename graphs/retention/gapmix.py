"""Per-stream gap distributions for SAGA's retention policy: population features + own history.

:class:`FeatureGapModel` is fitted on training sessions only (the other hash folds). It keeps,
per *feature context*, the sorted sample of gaps (end of a call → start of the stream's next
call) and how often a call in that context was the stream's last one. The context of a call is
what a serving system knows once the response is out:

- the stop reason of the response (``tool_use``, ``end_turn``, none),
- its output tokens, in ``out_bins`` log-spaced bins (long answers take longer to read; a long
  tool-use response often starts a slow tool),
- whether the stream is a sub-agent.

A context with fewer than ``min_samples`` observations falls back to (stop, sub-agent), then to
(stop), then to all gaps.

:class:`StreamGaps` is the online part: the gaps a stream has shown so far. Its next gap is
predicted by a *mixture* of the population sample of its context, rescaled by the stream's own
time scale (the shrunk mean log ratio of its past gaps to the population medians of their
contexts), and its own past gaps (weight ``n / (n + own_prior)`` × ``own_weight``). The survival
of the mixture ``S(x)`` and the context's continuation probability ``q`` give, ``e`` seconds into
the gap, ``P(next call within H) = q·(S(e) − S(e+H)) / (q·S(e) + 1 − q)`` and the expected
occupancy ``E[min(T − e, H) | T > e]`` (numerically, on a log grid), hence the hit density the
policy ranks by (:func:`density`). Everything is read from the past: nothing from the future
of the stream.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from saga.graphs.api import QUANTILE_LEVELS, NextCallPrediction
from saga.graphs.trace import LLMCall, SessionTrace

FloatArray = npt.NDArray[np.float64]
Key = tuple[str, int, bool]
_GRID = np.concatenate([[0.0], np.geomspace(1e-3, 1.0, 23)])  # fractions of H for the integral


def out_bin(output_tokens: int, bins: int) -> int:
    """Log-spaced output-token bin: < 128, < 512, < 2048, ... capped at ``bins - 1``."""
    if bins <= 1 or output_tokens < 128:
        return 0
    return min(bins - 1, 1 + int(math.log2(output_tokens / 128) / 2))


@dataclass(frozen=True, slots=True)
class GapContext:
    """A fitted context: sorted continuing gaps, number of stream ends, median gap."""

    gaps: FloatArray
    ends: int
    median: float

    @property
    def q(self) -> float:
        n = len(self.gaps)
        return n / (n + self.ends) if n + self.ends else 0.0


class FeatureGapModel:
    """Population gap samples per (stop reason, output-token bin, sub-agent)."""

    def __init__(
        self, sessions: Iterable[SessionTrace] = (), *, out_bins: int = 4, min_samples: int = 30
    ) -> None:
        self.out_bins = out_bins
        self.min_samples = min_samples
        self._gaps: dict[tuple[object, ...], list[float]] = defaultdict(list)
        self._ends: dict[tuple[object, ...], int] = defaultdict(int)
        self._fitted: dict[Key, GapContext] = {}
        for s in sessions:
            self.observe(s)

    def _keys(self, stop: str, ob: int, sub: bool) -> tuple[tuple[object, ...], ...]:
        return (stop, ob, sub), (stop, sub), (stop,), ()

    def observe(self, session: SessionTrace) -> None:
        """Add a finished session (and its sub-agents) to the sample."""
        for s in session.walk():
            sub = s.parent_id is not None
            for i, c in enumerate(s.calls):
                keys = self._keys(c.stop, out_bin(c.output_tokens, self.out_bins), sub)
                if i + 1 < len(s.calls):
                    gap = max(0.0, s.calls[i + 1].start_s - c.end_s)
                    for k in keys:
                        self._gaps[k].append(gap)
                else:
                    for k in keys:
                        self._ends[k] += 1
        self._fitted.clear()

    def context(self, call: LLMCall, is_subagent: bool) -> GapContext:
        """The fitted context of a stream whose last response is ``call``."""
        key: Key = (call.stop, out_bin(call.output_tokens, self.out_bins), is_subagent)
        ctx = self._fitted.get(key)
        if ctx is None:
            keys = self._keys(*key)
            chosen = keys[-1]
            for k in keys:
                if len(self._gaps.get(k, ())) + self._ends.get(k, 0) >= self.min_samples:
                    chosen = k
                    break
            arr = np.sort(np.asarray(self._gaps.get(chosen, []), dtype=np.float64))
            med = float(np.median(arr)) if len(arr) else 0.0
            ctx = self._fitted[key] = GapContext(arr, self._ends.get(chosen, 0), med)
        return ctx


@dataclass(slots=True)
class StreamGaps:
    """A stream's own past gaps (online) and its log time scale against the population."""

    gaps: list[float]
    resid_sum: float = 0.0

    def add(self, gap: float, expected_median: float) -> None:
        self.gaps.append(gap)
        self.resid_sum += math.log1p(gap) - math.log1p(max(expected_median, 0.0))

    def scale(self, prior: float) -> float:
        """exp(shrunk mean log residual): > 1 when this stream's gaps have been slower."""
        n = len(self.gaps)
        return math.exp(self.resid_sum / (n + prior)) if n else 1.0


def _survival(sorted_gaps: FloatArray, x: FloatArray) -> FloatArray:
    n = len(sorted_gaps)
    if n == 0:
        return np.zeros_like(x)
    out: FloatArray = 1.0 - np.searchsorted(sorted_gaps, x, side="right") / n
    return out


def density(
    ctx: GapContext,
    own: FloatArray,
    scale: float,
    own_weight: float,
    elapsed_s: float,
    horizon_s: float,
) -> float:
    """Expected hits per second of occupancy over the next ``horizon_s``, ``elapsed_s`` into the gap.

    The gap's survival is the mixture ``(1 − w)·S_pop(x / scale) + w·S_own(x)``; the stream ends
    instead (T = ∞) with probability ``1 − q`` of its context.
    """
    q = ctx.q
    if q <= 0.0 or horizon_s <= 0.0:
        return 0.0
    xs = elapsed_s + horizon_s * _GRID
    s = _survival(ctx.gaps, xs / max(scale, 1e-9))
    if own_weight > 0.0 and len(own):
        s = (1.0 - own_weight) * s + own_weight * _survival(own, xs)
    alive = q * s + (1.0 - q)  # P(T > x) with T = ∞ when the stream ends
    if alive[0] <= 1e-12:
        return 0.0
    p_hit = (alive[0] - alive[-1]) / alive[0]
    occ = float(np.sum(0.5 * (alive[1:] + alive[:-1]) * np.diff(xs))) / alive[0]
    return float(p_hit / max(occ, 1e-9))


def prediction(
    ctx: GapContext,
    own: FloatArray,
    scale: float,
    own_weight: float,
    elapsed_s: float,
) -> NextCallPrediction:
    """The mixture as a :class:`NextCallPrediction` ``elapsed_s`` into the gap (quantiles of the
    remaining time given that the stream continues, and the continuation probability)."""
    q = ctx.q
    sc = max(scale, 1e-9)
    pop = ctx.gaps[ctx.gaps > elapsed_s / sc] * sc - elapsed_s
    mine = own[own > elapsed_s] - elapsed_s if own_weight > 0.0 and len(own) else own[:0]
    s_pop = len(pop) / len(ctx.gaps) if len(ctx.gaps) else 0.0
    s_own = len(mine) / len(own) if len(own) else 0.0
    w = own_weight if len(own) else 0.0
    surv = (1.0 - w) * s_pop + w * s_own
    if surv <= 0.0 or q <= 0.0:
        return NextCallPrediction(0.0, (elapsed_s,) * len(QUANTILE_LEVELS), 0.0, 0.0)
    p = q * surv / (q * surv + 1.0 - q)
    # weighted quantiles of the remaining time over the two samples
    vals = np.concatenate([pop, mine])
    wts = np.concatenate(
        [
            np.full(len(pop), (1.0 - w) / max(len(ctx.gaps), 1)),
            np.full(len(mine), w / max(len(own), 1)),
        ]
    )
    order = np.argsort(vals, kind="stable")
    vals, cw = vals[order], np.cumsum(wts[order])
    cw /= cw[-1]
    idx = np.minimum(np.searchsorted(cw, QUANTILE_LEVELS, side="left"), len(vals) - 1)
    return NextCallPrediction(p, tuple(float(v) for v in vals[idx]), 0.0, 1.0)
