"""Report metrics computed from several :class:`RunResult` (pure; no I/O).

Results are grouped into *scenarios*: same workload, seed, replica count and load. Within a
scenario every system replayed the same sessions, so per-session comparisons are valid.

Definitions (``tasks`` are top-level sessions: sub-agent sessions are part of their parent's
task and are excluded from task metrics; token and recompute sums include them):

- **Task completion time** ``T = end_s - start_s`` of completed tasks; mean, p50, p99 with
  linear interpolation between ranks (numpy's default).
- **Speedup of system S over baseline B** in a scenario: the geometric mean over the task
  ids both completed of ``T_B / T_S``; > 1 means S is faster. Across scenarios: the
  geometric mean of the per-scenario speedups.
- **SLO attainment**: among tasks with a deadline, the fraction with ``slo_met`` (a task not
  completed counts as missed); None when no task has a deadline.
- **Throughput**: completed tasks per minute and tokens per second (prompt + output tokens
  of every completed session, sub-agents included) over ``duration_s``; output tokens/s too.
- **KV utilisation**: mean over replicas of the mean of each replica's samples.
- **Cache hit rate**: mean of the cluster hit-rate samples.
- **Recomputed prefill share**: ``sum(recomputed_tokens) / sum(prompt_tokens)``: prompt work
  redone because a cache was lost.
- **Physical limit** ``L``: the task alone on an idle replica with an infinite cache,
  supplied per session id by the caller (``saga.scheduler.workloads.physical_limit_s``).
  **Ratio to the limit**: geometric mean of ``T / L`` over completed tasks (>= 1 ideally).
- **Measurement window**: when a result's ``meta["measured_arrivals_s"]`` is ``[lo, hi]``
  (``saga simulate --warmup-s/--cooldown-s``), only sessions arriving in ``[lo, hi)`` count
  and throughput is over ``hi - lo`` seconds (:func:`measured`): the cluster fills up at the
  start of a run and drains at its end, so the edges run below the offered load. The KV and
  hit-rate series stay whole.
- **Jain index** of the normalised completion ``x = T / L`` (or ``T`` when no limits are
  given): ``(sum x)^2 / (n sum x^2)`` in (0, 1], 1 = everyone equally slowed. Reported over
  tasks, and over tenants (of each tenant's mean ``x``), the fair-share view.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from saga.scheduler.report.model import ReportError, RunResult, Series, SessionOutcome

ALL = "*"  # the tenant key of the all-tenants group

LimitFn = Callable[[str], float | None]


@dataclass(frozen=True, slots=True)
class GroupStats:
    """Metrics of one system (and one tenant, or ``ALL``) in one scenario."""

    system: str
    tenant: str
    tasks: int  # top-level sessions
    completed: int
    mean_s: float | None
    p50_s: float | None
    p99_s: float | None
    slo_attainment: float | None
    slo_tasks: int  # tasks with a deadline
    tasks_per_min: float
    tokens_per_s: float
    output_tokens_per_s: float
    recomputed_share: float | None
    cache_token_share: float | None  # cached / prompt tokens
    steals: int
    rejected: int
    deferred: int
    ttft_p50_s: float | None
    ttft_p99_s: float | None
    limit_ratio: float | None  # geometric mean of T / L
    jain_tasks: float | None
    jain_tenants: float | None = None  # ALL group only
    kv_util_mean: float | None = None  # ALL group only
    hit_rate_mean: float | None = None  # ALL group only
    # SLO lane (ALL group only, None when none formed): mean and most replicas over the samples,
    # and seconds from the first sample to the first one with a lane
    lane_mean: float | None = None
    lane_max: float | None = None
    lane_first_s: float | None = None


@dataclass(frozen=True, slots=True)
class Scenario:
    workload: str
    seed: int
    replicas: int
    load: float

    @property
    def label(self) -> str:
        return f"{self.workload} seed={self.seed} replicas={self.replicas} load={self.load:g}"


@dataclass(frozen=True, slots=True)
class ScenarioReport:
    scenario: Scenario
    systems: tuple[str, ...]
    stats: tuple[GroupStats, ...]  # one ALL group per system, then one per (system, tenant)
    speedups: Mapping[str, float | None]  # system -> geomean speedup over the baseline
    speedup_pairs: Mapping[str, int]  # system -> number of task ids compared
    baseline: str | None
    completion: Mapping[str, tuple[float, ...]] = field(default_factory=dict)  # for CDF plots


@dataclass(frozen=True, slots=True)
class Report:
    scenarios: tuple[ScenarioReport, ...]
    baseline: str | None
    overall_speedups: Mapping[str, float | None]  # geomean over scenarios


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0..100) with linear interpolation; None when empty."""
    if not values:
        return None
    if not 0 <= q <= 100:
        raise ReportError(f"percentile q must be in [0, 100], got {q}")
    return float(np.percentile(np.asarray(values, dtype=float), q))


def geomean(values: Sequence[float]) -> float | None:
    """Geometric mean of positive values; None when empty."""
    if not values:
        return None
    if any(not (v > 0 and math.isfinite(v)) for v in values):
        raise ReportError("geometric mean needs finite positive values")
    return math.exp(sum(math.log(v) for v in values) / len(values))


def jain(values: Sequence[float]) -> float | None:
    """Jain's fairness index ``(sum x)^2 / (n sum x^2)``; None when empty or all zero."""
    if not values:
        return None
    if any(v < 0 or not math.isfinite(v) for v in values):
        raise ReportError("Jain index needs finite non-negative values")
    sq = sum(v * v for v in values)
    if sq == 0:
        return None
    return sum(values) ** 2 / (len(values) * sq)


def _limit_lookup(limits: Mapping[str, float] | LimitFn | None) -> LimitFn | None:
    if limits is None:
        return None
    if callable(limits):
        return limits
    m = limits
    return lambda sid: m.get(sid)


def _group(
    system: str,
    tenant: str,
    outs: Sequence[SessionOutcome],
    duration_s: float,
    limit: LimitFn | None,
) -> GroupStats:
    tasks = [o for o in outs if not o.is_subagent]
    done = [o for o in tasks if o.completed]
    times = [o.completion_s for o in done]
    with_dl = [o for o in tasks if o.deadline_s is not None]
    finished_sessions = [o for o in outs if o.completed]
    prompt = sum(o.prompt_tokens for o in outs)
    ttfts = [t for o in outs for t in o.ttft_s]
    norm: list[float] = []
    if limit is not None:
        for o in done:
            lim = limit(o.session_id)
            if lim is None:
                raise ReportError(f"no physical limit for session {o.session_id!r} of {system}")
            if not lim > 0:
                raise ReportError(f"physical limit of {o.session_id!r} must be > 0, got {lim}")
            norm.append(max(o.completion_s, 1e-12) / lim)
    return GroupStats(
        system=system,
        tenant=tenant,
        tasks=len(tasks),
        completed=len(done),
        mean_s=sum(times) / len(times) if times else None,
        p50_s=percentile(times, 50),
        p99_s=percentile(times, 99),
        slo_attainment=(sum(1 for o in with_dl if o.slo_met and o.completed) / len(with_dl))
        if with_dl
        else None,
        slo_tasks=len(with_dl),
        tasks_per_min=len(done) / (duration_s / 60.0),
        tokens_per_s=sum(o.prompt_tokens + o.output_tokens for o in finished_sessions) / duration_s,
        output_tokens_per_s=sum(o.output_tokens for o in finished_sessions) / duration_s,
        recomputed_share=sum(o.recomputed_tokens for o in outs) / prompt if prompt else None,
        cache_token_share=sum(o.cached_tokens for o in outs) / prompt if prompt else None,
        steals=sum(o.steals for o in outs),
        rejected=sum(o.rejected for o in outs),
        deferred=sum(o.deferred for o in outs),
        ttft_p50_s=percentile(ttfts, 50),
        ttft_p99_s=percentile(ttfts, 99),
        limit_ratio=geomean(norm) if norm else None,
        jain_tasks=jain(norm if limit is not None else [max(t, 0.0) for t in times]),
    )


MEASURED_KEY = "measured_arrivals_s"  # RunResult.meta key of the measurement window


def measured(r: RunResult) -> RunResult:
    """``r`` restricted to the sessions arriving in its measurement window (itself if none)."""
    w = r.meta.get(MEASURED_KEY)
    if w is None:
        return r
    try:
        lo, hi = (float(x) for x in w)
    except (TypeError, ValueError):
        raise ReportError(f"{r.system}: meta.{MEASURED_KEY} must be [lo, hi] seconds, got {w!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and 0 <= lo < hi):
        raise ReportError(f"{r.system}: meta.{MEASURED_KEY} must have 0 <= lo < hi, got {w!r}")
    outs = tuple(o for o in r.outcomes if lo <= o.start_s < hi)
    return replace(r, outcomes=outs, duration_s=hi - lo)


def scenario_of(r: RunResult) -> Scenario:
    return Scenario(r.workload, r.seed, r.replicas, r.load)


def build_report(
    results: Sequence[RunResult],
    *,
    baseline: str | None = None,
    limits: Mapping[str, float] | LimitFn | None = None,
) -> Report:
    """Compute every metric; ``limits`` maps session id -> physical limit (seconds).

    Raises :class:`ReportError` on empty input, a system twice in one scenario, a baseline
    missing from a scenario, or a scenario with no completed task.
    """
    if not results:
        raise ReportError("no results to report")
    for r in results:
        r.validate()
    results = [measured(r) for r in results]
    by_scn: dict[Scenario, list[RunResult]] = {}
    for r in results:
        by_scn.setdefault(scenario_of(r), []).append(r)
    limit = _limit_lookup(limits)
    reports = []
    for scn, rs in by_scn.items():
        systems = [r.system for r in rs]
        dup = {s for s in systems if systems.count(s) > 1}
        if dup:
            raise ReportError(f"{scn.label}: system(s) {sorted(dup)} appear more than once")
        if baseline is not None and baseline not in systems:
            raise ReportError(f"{scn.label}: baseline {baseline!r} not among systems {systems}")
        stats: list[GroupStats] = []
        completion: dict[str, tuple[float, ...]] = {}
        for r in rs:
            tasks_done = [o for o in r.outcomes if o.completed and not o.is_subagent]
            completion[r.system] = tuple(sorted(o.completion_s for o in tasks_done))
            all_g = _group(r.system, ALL, r.outcomes, r.duration_s, limit)
            tenants: dict[str, list[SessionOutcome]] = {}
            for o in r.outcomes:
                tenants.setdefault(o.tenant, []).append(o)
            tenant_groups = [
                _group(r.system, t, outs, r.duration_s, limit) for t, outs in sorted(tenants.items())
            ]
            tenant_means = _tenant_norm_means(r, limit)
            kv = [m for m in (s.mean() for s in r.kv_util.values()) if m is not None]
            lane = _lane_stats(r.lane_replicas)
            stats.append(
                replace(
                    all_g,
                    jain_tenants=jain(tenant_means) if len(tenant_means) > 1 else None,
                    kv_util_mean=sum(kv) / len(kv) if kv else None,
                    hit_rate_mean=r.cache_hit_rate.mean(),
                    lane_mean=lane[0],
                    lane_max=lane[1],
                    lane_first_s=lane[2],
                )
            )
            stats.extend(tenant_groups)
        if not any(completion.values()):
            raise ReportError(f"{scn.label}: no system completed any task")
        speedups: dict[str, float | None] = {}
        pairs: dict[str, int] = {}
        if baseline is not None:
            base = {
                o.session_id: o
                for o in _by_system(rs, baseline).outcomes
                if o.completed and not o.is_subagent
            }
            for r in rs:
                ratios = [
                    max(base[o.session_id].completion_s, 1e-12) / max(o.completion_s, 1e-12)
                    for o in r.outcomes
                    if o.completed and not o.is_subagent and o.session_id in base
                ]
                speedups[r.system] = geomean(ratios)
                pairs[r.system] = len(ratios)
        reports.append(
            ScenarioReport(
                scenario=scn,
                systems=tuple(systems),
                stats=tuple(stats),
                speedups=speedups,
                speedup_pairs=pairs,
                baseline=baseline,
                completion=completion,
            )
        )
    overall: dict[str, float | None] = {}
    if baseline is not None:
        names = sorted({s for rep in reports for s in rep.systems})
        for s in names:
            vals = [v for rep in reports if (v := rep.speedups.get(s)) is not None]
            overall[s] = geomean(vals)
    return Report(scenarios=tuple(reports), baseline=baseline, overall_speedups=overall)


def _by_system(rs: Sequence[RunResult], system: str) -> RunResult:
    for r in rs:
        if r.system == system:
            return r
    raise ReportError(f"system {system!r} missing")  # pragma: no cover - checked by the caller


def _tenant_norm_means(r: RunResult, limit: LimitFn | None) -> list[float]:
    per: dict[str, list[float]] = {}
    for o in r.outcomes:
        if o.is_subagent or not o.completed:
            continue
        x = o.completion_s
        if limit is not None:
            lim = limit(o.session_id)
            if lim is None or not lim > 0:
                raise ReportError(f"no positive physical limit for session {o.session_id!r}")
            x = x / lim
        per.setdefault(o.tenant, []).append(x)
    return [sum(v) / len(v) for _, v in sorted(per.items())]


def _lane_stats(lane: Series) -> tuple[float | None, float | None, float | None]:
    """(mean, most, seconds from the first sample to the first with a lane) of a lane-size
    series; all None when no lane formed."""
    first = next((t for t, v in zip(lane.t_s, lane.values, strict=True) if v > 0), None)
    if first is None:
        return None, None, None
    return lane.mean(), max(lane.values), first - lane.t_s[0]
