"""The batching bound: the least completion time any scheduler can reach at a given load.

The physical limit (``limits.py``) runs each task alone; at load a replica must batch, and a
decode iteration costs ``f + sum_i c_i`` (``f`` the fixed overhead, ``c_i = d + k x ctx_i``
for each running sequence: ``d`` per sequence, ``k`` per KV token read; the replica model's
arithmetic, ``saga.emulator.core``). A decode token that runs alone costs ``f + c_j``; in a
batch it waits ``sum_{i != j} c_i`` longer. Summed over every decode token ``j`` that excess is
``sum_s (b_s - 1) C_s = sum_j c_j (b(j) - 1)`` (step ``s`` holds ``b_s`` sequences costing
``C_s``; ``b(j)`` the size of ``j``'s step), and the schedule uses ``S = sum_j 1 / b(j)``
steps. Work conservation bounds the steps: the busy time ``S f + sum_j c_j + P`` (``P`` the
prefill work of the uncached prompts with an infinite cache) fits in ``replicas x H``
seconds. Every schedule therefore has a total excess of at least

    min sum_j c_j (b_j - 1)   subject to   sum_j 1 / b_j <= S_max,  b_j >= 1,

a convex problem whose optimum is ``b_j = max(1, sqrt(mu / c_j))`` with ``mu`` set by the
step budget (found by bisection): cheap (short-context) tokens batch widely, expensive ones
less. Nothing else is assumed about the schedule (placement, order, preemption, prompts
recomputed or not: any of those only adds), so no scheduler beats it; it is optimistic in
that it ignores when each token becomes ready and every cost but decode batching.

Only top-level tasks' own sequential calls enter the objective (their excess delays the task
one-for-one along its chain of calls; sub-agents' and overlapping calls' tokens only use
capacity), so ``sum over tasks (T - limit) >= total excess`` and the bound on the mean task
time is ``mean limit + excess / tasks``. Tokens are grouped by call into ``SEGMENTS`` pieces
whose cost is taken at the piece's *smallest* context, which keeps the figure a lower bound.

Horizon ``H``: the arrival window (steady state at the offered load: what ``--load``
means), or a run's makespan (then it bounds every schedule finishing by then).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from saga.emulator.core import ReplicaConfig
from saga.graphs.trace import SessionTrace
from saga.scheduler.sim.limits import prefill_s
from saga.scheduler.workloads.demand import new_prefill_tokens

SEGMENTS = 8  # pieces per call's decode tokens (each costed at its smallest context)


class BoundError(ValueError):
    """Bad input to the batching bound (the message names it)."""


@dataclass(frozen=True, slots=True)
class BatchingBound:
    """The bound for one workload on ``replicas`` replicas over ``horizon_s`` seconds.

    ``feasible`` is False when the work exceeds the capacity even at unlimited batching (no
    schedule keeps up; ``excess_s`` is then infinite).
    """

    replicas: int
    horizon_s: float
    tasks: int
    mean_limit_s: float  # mean physical limit of the top-level tasks
    excess_s: float  # least total decode-batching delay over those tasks, seconds
    busy_fraction_min: float  # replica busy time the work needs at the widest batching (fraction)
    mean_batch: float  # decode tokens per step at the optimum (token-weighted over objective tokens)
    feasible: bool

    @property
    def mean_task_s(self) -> float:
        """Least mean task completion time any schedule can reach, seconds."""
        return self.mean_limit_s + self.excess_s / self.tasks

    @property
    def ratio(self) -> float:
        """Least (mean T) / (mean physical limit): 1.0 when batching costs nothing."""
        return self.mean_task_s / self.mean_limit_s


class _Tokens:
    """Decode tokens as (cost per token, count) pieces, and the capacity they use."""

    def __init__(self, cfg: ReplicaConfig) -> None:
        self.cfg = cfg
        self.cost: list[float] = []  # c of the objective pieces
        self.count: list[float] = []
        self.work_s = 0.0  # sum of c over every decode token + prefill work (all sessions)

    def add_session(self, s: SessionTrace, objective: bool, inherited: Iterable[int] = ()) -> None:
        t = self.cfg.timing
        d, k = t.decode_s_per_seq, t.kv_read_s_per_token
        news = new_prefill_tokens(s, inherited)
        calls = s.calls
        for i, (new, c) in enumerate(zip(news, calls, strict=True)):
            self.work_s += prefill_s(c.prompt_tokens, new, self.cfg, overhead=False)
            n = max(0, c.output_tokens - 1)  # decode steps (the first token comes with the prefill)
            if n == 0:
                continue
            base = c.prompt_tokens + 1  # context of the first decode step
            self.work_s += n * (d + k * base) + k * n * (n - 1) / 2
            seq = (i == 0 or calls[i - 1].end_s <= c.start_s) and (
                i + 1 == len(calls) or c.end_s <= calls[i + 1].start_s
            )
            if not (objective and seq):
                continue
            step = n / SEGMENTS
            for p in range(SEGMENTS):
                self.cost.append(d + k * (base + p * step))
                self.count.append(step)
        for sub in s.subagents:
            seen = set(inherited)
            for c in calls[: sub.after_call + 1]:
                seen.update(c.block_hashes)
            self.add_session(sub.session, False, seen)


def _solve(cost: np.ndarray, count: np.ndarray, steps: float) -> tuple[float, float]:
    """(least excess, steps used) with ``sum count / b <= steps``, ``b >= 1``."""
    tokens = float(count.sum())
    if tokens <= steps:
        return 0.0, tokens
    lo, hi = float(cost.min()), float(cost.max()) * (tokens / steps) ** 2 * 4
    for _ in range(200):  # bisection on mu (geometric: mu spans many orders of magnitude)
        mu = math.sqrt(lo * hi)
        b = np.maximum(1.0, np.sqrt(mu / cost))
        if float((count / b).sum()) > steps:
            lo = mu
        else:
            hi = mu
        if hi / lo < 1 + 1e-9:
            break
    b = np.maximum(1.0, np.sqrt(hi / cost))
    return float((count * cost * (b - 1.0)).sum()), float((count / b).sum())


def batching_bound(
    sessions: Iterable[SessionTrace],
    limits: Mapping[str, float],
    cfg: ReplicaConfig,
    replicas: int,
    horizon_s: float,
) -> BatchingBound:
    """The bound for the top-level ``sessions`` (each with its physical limit in ``limits``)."""
    if replicas < 1:
        raise BoundError(f"replicas must be >= 1, got {replicas}")
    if not (math.isfinite(horizon_s) and horizon_s > 0):
        raise BoundError(f"horizon_s must be > 0 seconds, got {horizon_s}")
    toks = _Tokens(cfg)
    lims: list[float] = []
    for s in sessions:
        if s.session_id not in limits:
            raise BoundError(f"no physical limit for session {s.session_id!r}")
        lims.append(limits[s.session_id])
        toks.add_session(s, True)
    if not lims:
        raise BoundError("no sessions")
    f = cfg.timing.fixed_overhead_s
    capacity = replicas * horizon_s
    spare = capacity - toks.work_s  # what is left for the steps' fixed overhead
    cost = np.asarray(toks.cost, dtype=np.float64)
    count = np.asarray(toks.count, dtype=np.float64)
    mean_limit = float(np.mean(lims))
    busy_min = toks.work_s / capacity
    if spare <= 0 or cost.size == 0:
        ok = spare > 0
        ex = 0.0 if ok else math.inf
        return BatchingBound(replicas, horizon_s, len(lims), mean_limit, ex, busy_min, 1.0, ok)
    steps = spare / f if f > 0 else math.inf
    if not math.isfinite(steps):
        return BatchingBound(replicas, horizon_s, len(lims), mean_limit, 0.0, busy_min, 1.0, True)
    excess, used = _solve(cost, count, steps)
    return BatchingBound(
        replicas, horizon_s, len(lims), mean_limit, excess, busy_min, float(count.sum()) / used, True
    )
