"""Per-stream time-to-next-call model for SAGA's retention policy: population samples + own history.

A stream (agent or sub-agent) is always in one of two states, and the model predicts, from what a
serving system knows *at that moment*, when the stream's next call will touch its context again:

- **running** (its call was sent and has not finished): the response's stop reason and length
  are not known yet. Known: the stop reason of the *previous* response (``start`` for the first
  call; it says whether this prompt carries a tool result or a person's message), whether the
  stream is a sub-agent, and how long the call has been running, ``e``. The sample is the pair
  (call duration ``D``, time from call start to the next call ``D + G``), and the conditional
  law keeps the pairs with ``D ≥ e``: the call is still running, so it is at least that long.
- **in a gap** (the response is out): known are its stop reason (``tool_use``, ``end_turn``,
  none), its output tokens in ``out_bins`` log-spaced bins (< 128, < 512, < 2048, more), whether
  the stream is a sub-agent, how far it has come (``step_bins``: its first call, its second or
  third, later ones; a conversation past its first turn is likelier to go on), and how long the
  gap has lasted, ``e``. The sample is the gap ``G`` (end of call → next call), conditioned on
  ``G ≥ e``.

**Which gap contexts split by position** (``step_bins``: "off", "on", "auto"; "auto" default).
A split is worth it where the position tells whether the stream goes on, and costs where it
only thins the samples. "auto" decides per context (stop reason x output bin x sub-agent) on
the training sessions alone, by cross-fitting: they are halved by a salted hash of their id,
each half's model (with the split) predicts the other half's observations, and the split is
kept where it lowers the summed held-out log loss of ``P(next call)`` (add-one-half smoothed)
below the unsplit context's. The held-out sessions the policy is scored on are never seen.

In both states a stream's last call has no next call: its sample is ``∞`` (the stream ended),
so a long silence after ``end_turn`` is evidence that the session is over.

:class:`FeatureGapModel` is fitted on training sessions only (the other hash folds). A context
with fewer than ``min_samples`` observations falls back to coarser ones (dropping the step bin,
then the output bin, then the sub-agent flag, then everything).

:class:`StreamHistory` is the online part: the (duration, time to next call) pairs and the gaps
(per stop reason) that a stream has shown so far. Its next time is predicted by a mixture: the
population's continuing sample with weight ``1 − w`` and its own with weight
``w = own_weight · n / (n + own_prior)`` after ``n`` own observations of that state; the
probability that it ends at all is the population's.

:func:`value_density` turns the conditional mixture into the quantity SAGA ranks by,
``P(next call | e) / median(time to next call | it comes, e)``: the chance that the context is
used again, per second until it probably is (Bélády's farthest-next-use with probabilities;
0 when the stream has probably ended and nothing says otherwise). Everything is read from the
past: nothing from the future of the stream, and nothing about a running call's response.
"""

from __future__ import annotations

import hashlib
import math
from bisect import bisect_right
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from saga.graphs.trace import LLMCall, SessionTrace

START = "start"  # the "previous stop reason" of a stream's first call
Key = tuple[object, ...]
STEP_MODES = ("off", "on", "auto")


def step_bin(call_index: int, enabled: bool = True) -> int:
    """Position of a call in its stream: 0 for the first, 1 for the second or third, 2 later
    (always 0 when off)."""
    if not enabled:
        return 0
    return 0 if call_index == 0 else 1 if call_index < 3 else 2


def out_bin(output_tokens: int, bins: int) -> int:
    """Log-spaced output-token bin: < 128, < 512, < 2048, ... capped at ``bins - 1``."""
    if bins <= 1 or output_tokens < 128:
        return 0
    return min(bins - 1, 1 + int(math.log2(output_tokens / 128) / 2))


@dataclass(slots=True)
class Sample:
    """Observations of one context: how long the state lasted at least (``lives``) and when the
    next call came (``until``, ``inf`` when the stream ended), both from the state's start."""

    lives: list[float] = field(default_factory=list)
    until: list[float] = field(default_factory=list)
    continuing: int = 0  # observations with a next call
    _cond: dict[int, tuple[list[float], int]] = field(default_factory=dict, repr=False)

    def add(self, lives: float, until: float) -> None:
        self.lives.append(lives)
        self.until.append(until)
        self.continuing += until != math.inf
        self._cond.clear()

    def __len__(self) -> int:
        return len(self.until)

    def continuation_loss(self, test: Sample) -> float:
        """Log loss (nats) of ``test``'s continue/end outcomes under this sample's ``P(next call)``
        (add-one-half smoothed, so an unseen outcome costs a finite amount)."""
        p = (self.continuing + 0.5) / (len(self) + 1.0)
        ends = len(test) - test.continuing
        return -(test.continuing * math.log(p) + ends * math.log(1.0 - p))

    def given(self, elapsed_s: float, memo_key: int | None = None) -> tuple[list[float], int]:
        """The sorted finite ``until`` values and the number of ends among observations that
        lasted at least ``elapsed_s`` (memoised under ``memo_key``, e.g. an elapsed-time bin)."""
        if memo_key is not None:
            hit = self._cond.get(memo_key)
            if hit is not None:
                return hit
        vals = [u for lv, u in zip(self.lives, self.until, strict=True) if lv >= elapsed_s]
        fin = sorted(u for u in vals if u != math.inf)
        out = (fin, len(vals) - len(fin))
        if memo_key is not None:
            self._cond[memo_key] = out
        return out


class FeatureGapModel:
    """Population samples per running context and per gap context (see the module docstring)."""

    def __init__(
        self,
        sessions: Iterable[SessionTrace] = (),
        *,
        out_bins: int = 4,
        step_bins: str = "auto",
        min_samples: int = 30,
    ) -> None:
        if step_bins not in STEP_MODES:
            raise ValueError(f"step_bins must be one of {', '.join(STEP_MODES)}, got {step_bins!r}")
        self.out_bins = out_bins
        self.step_bins = step_bins
        self.min_samples = min_samples
        self._run: dict[Key, Sample] = defaultdict(Sample)
        self._gap: dict[Key, Sample] = defaultdict(Sample)
        self._chosen: dict[Key, Sample] = {}
        # unsplit gap contexts whose position split is used (every context when "on")
        self.split: set[Key] | None = None if step_bins == "on" else set()
        sessions = list(sessions)
        for s in sessions:
            self.observe(s)
        if step_bins == "auto":
            self.split = self._select_splits(sessions)

    def _select_splits(self, sessions: list[SessionTrace]) -> set[Key]:
        """Gap contexts whose position split lowers the cross-fitted log loss of ``P(next call)``."""
        halves: list[list[SessionTrace]] = [[], []]
        for s in sessions:
            digest = hashlib.blake2b(f"split:{s.session_id}".encode(), digest_size=8).digest()
            halves[digest[0] & 1].append(s)
        opts = {"out_bins": self.out_bins, "min_samples": self.min_samples}
        models = [FeatureGapModel(h, step_bins="on", **opts) for h in halves]
        gain: dict[Key, float] = defaultdict(float)
        for train, test in ((models[0], models[1]), (models[1], models[0])):
            for key, obs in test._gap.items():
                if len(key) != 5:  # only the finest, position-split contexts
                    continue
                pooled = train._gap.get(key[:4])
                if pooled is None or not len(pooled):
                    continue
                child = train._gap.get(key)
                split = child if child is not None and len(child) >= self.min_samples else pooled
                gain[key[:4]] += pooled.continuation_loss(obs) - split.continuation_loss(obs)
        return {k for k, g in gain.items() if g > 0.0}

    def observe(self, session: SessionTrace) -> None:
        """Add a finished session (and its sub-agents) to the sample."""
        for s in session.walk():
            sub = s.parent_id is not None
            for i, c in enumerate(s.calls):
                nxt = s.calls[i + 1].start_s if i + 1 < len(s.calls) else math.inf
                prev = s.calls[i - 1].stop if i else START
                for k in self._run_keys(prev, sub):
                    self._run[k].add(c.duration_s, nxt - c.start_s)
                gap = max(0.0, nxt - c.end_s)
                ob = out_bin(c.output_tokens, self.out_bins)
                for k in self._gap_keys(c.stop, ob, sub, step_bin(i, self.step_bins != "off")):
                    self._gap[k].add(gap, gap)
        self._chosen.clear()

    @staticmethod
    def _run_keys(prev_stop: str, sub: bool) -> tuple[Key, ...]:
        return ("run", prev_stop, sub), ("run", prev_stop), ("run",)

    @staticmethod
    def _gap_keys(stop: str, ob: int, sub: bool, step: int) -> tuple[Key, ...]:
        return (
            ("gap", stop, ob, sub, step),
            ("gap", stop, ob, sub),
            ("gap", stop, sub),
            ("gap", stop),
            ("gap",),
        )

    def _pick(self, keys: Sequence[Key], table: dict[Key, Sample]) -> Sample:
        got = self._chosen.get(keys[0])
        if got is None:
            got = next((table[k] for k in keys if len(table.get(k, ())) >= self.min_samples), None)
            got = self._chosen[keys[0]] = got if got is not None else table.get(keys[-1], Sample())
        return got

    def running(self, prev_stop: str, is_subagent: bool) -> Sample:
        """The sample of a stream whose call is running after a response with ``prev_stop``."""
        return self._pick(self._run_keys(prev_stop, is_subagent), self._run)

    def gap(self, call: LLMCall, is_subagent: bool, call_index: int) -> Sample:
        """The sample of a stream in the gap after ``call`` (its ``call_index``-th, from 0)."""
        ob = out_bin(call.output_tokens, self.out_bins)
        keys = self._gap_keys(call.stop, ob, is_subagent, step_bin(call_index, self.step_bins != "off"))
        if self.split is not None and keys[1] not in self.split:
            keys = keys[1:]  # the position split is not used in this context
        return self._pick(keys, self._gap)


@dataclass(slots=True)
class StreamHistory:
    """What a stream has shown so far: its (duration, time to next call) pairs and its gaps."""

    running: Sample = field(default_factory=Sample)
    gaps: dict[str, Sample] = field(default_factory=dict)

    def add(self, call: LLMCall, start_s: float, end_s: float, next_start_s: float) -> None:
        """The call that started at ``start_s`` and ended at ``end_s`` was followed at ``next_start_s``."""
        self.running.add(end_s - start_s, next_start_s - start_s)
        gap = max(0.0, next_start_s - end_s)
        self.gaps.setdefault(call.stop, Sample()).add(gap, gap)


def _weighted_median(pop: list[float], w_pop: float, own: list[float], w_own: float, target: float) -> float:
    """Smallest ``x`` with ``w_pop·#{pop ≤ x} + w_own·#{own ≤ x} ≥ target`` (both lists sorted)."""

    def mass(x: float) -> float:
        return w_pop * bisect_right(pop, x) + w_own * bisect_right(own, x)

    best = math.inf
    for arr in (pop, own):
        lo, hi = 0, len(arr)
        while lo < hi:  # first index whose value reaches the target mass
            mid = (lo + hi) // 2
            if mass(arr[mid]) >= target:
                hi = mid
            else:
                lo = mid + 1
        if lo < len(arr):
            best = min(best, arr[lo])
    return best


def _mixture(
    pop: Sample,
    own: Sample | None,
    own_weight: float,
    own_prior: float,
    elapsed_s: float,
    memo_key: int | None = None,
) -> tuple[float, float, float]:
    """``(continuing mass, end mass, median time to next call | it comes)`` given ``elapsed_s``.

    The continuing part mixes the population sample (weight ``1 − w``) and the stream's own
    (``w = own_weight · n / (n + own_prior)``); ends come from the population only. The median
    is ``inf`` when nothing continues.
    """
    fin, ends = pop.given(elapsed_s, memo_key)
    n_cont = pop.continuing
    mine: list[float] = []
    w = 0.0
    if own is not None and len(own) and own_weight > 0.0:
        n = len(own)
        w = own_weight * n / (n + own_prior)
        mine = own.given(elapsed_s)[0]
    if not n_cont:  # no population evidence of continuing: only the stream's own history
        if not mine:
            return 0.0, float(ends), math.inf
        w_pop, w_own, end_mass = 0.0, 1.0 / len(own or ()), 0.0
    else:
        w_pop = 1.0 - w
        w_own = w * n_cont / len(own) if mine and own is not None else 0.0
        end_mass = float(ends)
    cont = w_pop * len(fin) + w_own * len(mine)
    if cont <= 0.0:
        return 0.0, end_mass, math.inf
    return cont, end_mass, _weighted_median(fin, w_pop, mine, w_own, 0.5 * cont)


def value_density(
    pop: Sample,
    own: Sample | None,
    own_weight: float,
    own_prior: float,
    elapsed_s: float,
    memo_key: int | None = None,
) -> float:
    """``P(next call | elapsed) / median(time to next call | it comes, elapsed)`` in 1/s
    (the mixture of :func:`_mixture`)."""
    cont, end_mass, median = _mixture(pop, own, own_weight, own_prior, elapsed_s, memo_key)
    if cont <= 0.0:
        return 0.0
    remaining = max(median - elapsed_s, 1e-3)
    return cont / (cont + end_mass) / remaining


@dataclass(slots=True)
class LogErrors:
    """Natural-log errors ``ln(predicted / true)`` of the time from a call's start to its stream's
    next call, over the calls that have one (see :func:`prediction_log_errors`)."""

    at_start: list[float] = field(default_factory=list)  # predicted when the call is sent
    at_end: list[float] = field(default_factory=list)  # predicted when its response is out
    skipped: int = 0  # calls with a zero duration-plus-gap (no ratio)


def prediction_log_errors(
    model: FeatureGapModel,
    sessions: Iterable[SessionTrace],
    *,
    own_weight: float = 0.5,
    own_prior: float = 5.0,
) -> LogErrors:
    """How well SAGA's model predicts when each held-out stream calls again.

    For every call with a next call, the prediction is the median of the same mixture SAGA ranks
    by (:func:`_mixture`: population ``model``, plus the stream's own history so far) at zero
    elapsed time: at the call's start (running state: ``median(D + G)``), and at its end (gap
    state: the known duration ``D`` plus ``median(G)``); the truth is ``D + G``. ``sessions``
    must not be in ``model``'s sample (held out). This is the quantity whose error
    :class:`~saga.graphs.retention.policies.informed.InformedBoundPolicy` injects.
    """
    out = LogErrors()
    for session in sessions:
        for s in session.walk():
            sub = s.parent_id is not None
            hist = StreamHistory()
            for i, c in enumerate(s.calls):
                if i + 1 >= len(s.calls):
                    break
                nxt = s.calls[i + 1].start_s
                true = nxt - c.start_s
                if true <= 0.0:
                    out.skipped += 1
                else:
                    prev = s.calls[i - 1].stop if i else START
                    _, _, m_run = _mixture(model.running(prev, sub), hist.running, own_weight, own_prior, 0.0)
                    gap_own = hist.gaps.get(c.stop)
                    _, _, m_gap = _mixture(model.gap(c, sub, i), gap_own, own_weight, own_prior, 0.0)
                    for m, acc in ((m_run, out.at_start), (c.duration_s + m_gap, out.at_end)):
                        if 0.0 < m < math.inf:
                            acc.append(math.log(m / true))
                        else:
                            out.skipped += 1
                hist.add(c, c.start_s, c.end_s, nxt)
    return out
