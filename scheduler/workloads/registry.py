"""The workload registry: ``get_workload(name, **params)`` and the workload builders.

Names: ``claude_code``, ``swe_bench``, ``webarena`` (one tenant, ``default``) and
``multi_tenant`` (heavy / medium / light tenants). Common parameters (all keyword-only):

- ``seed`` (int, default 0): every random draw derives from it.
- How many sessions: ``n_sessions`` (exactly that many) or ``duration_s`` (all arrivals in
  ``[0, duration_s)``); exactly one.
- Arrival rate: ``rate`` (sessions/s), or ``replicas`` + ``load`` (fraction of cluster
  capacity, e.g. 0.8) with ``cost`` (:class:`IterationCostModel`, default its defaults) or a
  caller-supplied ``demand`` function (replica-seconds per session); the rate is
  :func:`~saga.scheduler.workloads.demand.calibrate_rate` over the source's pool.
- ``arrival``: :class:`ArrivalProcess` (default Poisson; ``ArrivalProcess("gamma", cv=2)``
  for bursts).

Per workload: ``swe_bench_params`` / ``webarena_params`` (generator parameters);
``claude_code``: ``path``, ``gaps`` (:class:`GapPolicy`, default caps human think time at
120 s), ``shared_prefix`` (default True), ``min_calls``, ``sessions`` (a pre-loaded list).
``multi_tenant``: see :func:`multi_tenant`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from saga.graphs.trace import SessionTrace
from saga.scheduler.workloads.arrivals import (
    DEFAULT_TENANT_CLASSES,
    ArrivalProcess,
    TenantClassProfile,
    arrival_times,
)
from saga.scheduler.workloads.demand import DemandFn, IterationCostModel, calibrate_rate, demand_fn
from saga.scheduler.workloads.model import (
    SLO_BATCH,
    SLO_INTERACTIVE,
    SLO_STANDARD,
    TenantSpec,
    Workload,
    WorkloadError,
)
from saga.scheduler.workloads.sources import ClaudeCodeSource, SessionSource, SyntheticSource
from saga.scheduler.workloads.synthetic import (
    SweBenchParams,
    WebArenaParams,
    swe_bench_session,
    webarena_session,
)
from saga.scheduler.workloads.transform import GapPolicy, place

DEFAULT_TENANT = "default"
# Claude Code human think time is capped at 120 s by default (recorded p50 210 s, p99 11 h):
# long enough to expire any sensible KV pin, short enough that a simulated hour is not idle.
DEFAULT_CC_GAPS = GapPolicy(max_human_gap_s=120.0)


@dataclass(frozen=True, slots=True)
class Sizing:
    """How many sessions, at which rate, with which arrival process."""

    n_sessions: int | None = None
    duration_s: float | None = None
    rate: float | None = None
    replicas: int | None = None
    load: float | None = None
    cost: IterationCostModel | None = None
    demand: DemandFn | None = None
    arrival: ArrivalProcess = field(default_factory=ArrivalProcess)

    def check(self) -> None:
        if (self.n_sessions is None) == (self.duration_s is None):
            raise WorkloadError("give exactly one of n_sessions or duration_s")
        if self.n_sessions is not None and self.n_sessions < 1:
            raise WorkloadError(f"n_sessions must be >= 1, got {self.n_sessions}")
        if self.duration_s is not None and not self.duration_s > 0:
            raise WorkloadError(f"duration_s must be > 0, got {self.duration_s}")
        if self.rate is not None and (self.replicas is not None or self.load is not None):
            raise WorkloadError("give either rate, or replicas and load, not both")
        if self.rate is None and (self.replicas is None or self.load is None):
            raise WorkloadError("give rate (sessions/s), or replicas and load to calibrate it")

    def resolve_rate(self, pool: Sequence[SessionTrace]) -> float:
        if self.rate is not None:
            if not (math.isfinite(self.rate) and self.rate > 0):
                raise WorkloadError(f"rate must be > 0, got {self.rate}")
            return self.rate
        assert self.replicas is not None
        assert self.load is not None
        dem = self.demand or demand_fn(self.cost or IterationCostModel())
        return calibrate_rate(pool, self.replicas, self.load, dem)

    def record(self, rate: float) -> dict[str, Any]:
        return {
            "n_sessions": self.n_sessions,
            "duration_s": self.duration_s,
            "rate_per_s": rate,
            "replicas": self.replicas,
            "load": self.load,
            "cost": None if self.cost is None else asdict(self.cost),
            "custom_demand": self.demand is not None,
            "arrival": {"kind": self.arrival.kind, "cv": self.arrival.cv},
        }


def _prefix_ids(s: SessionTrace, prefix: str) -> SessionTrace:
    if not prefix:
        return s
    return replace(
        s,
        session_id=f"{prefix}{s.session_id}",
        parent_id=None if s.parent_id is None else f"{prefix}{s.parent_id}",
        subagents=tuple(replace(x, session=_prefix_ids(x.session, prefix)) for x in s.subagents),
    )


def single_tenant(
    name: str,
    source: SessionSource,
    sizing: Sizing,
    *,
    seed: int,
    description: str,
    params: Mapping[str, Any],
    tenant: TenantSpec = TenantSpec(),
) -> Workload:
    """Sessions of ``source`` arriving by ``sizing`` for one tenant named ``default``."""
    sizing.check()
    rate = sizing.resolve_rate(source.pool())
    rng = np.random.default_rng([seed, 0xA771])
    times = arrival_times(rng, sizing.arrival, rate, n=sizing.n_sessions, horizon_s=sizing.duration_s)
    sessions = tuple(place(source.take(), t, DEFAULT_TENANT) for t in times)
    if not sessions:
        raise WorkloadError(f"{name}: no session arrived within duration_s={sizing.duration_s} at {rate}/s")
    w = Workload(
        name=name,
        sessions=sessions,
        tenants={DEFAULT_TENANT: tenant},
        seed=seed,
        description=description,
        params={**params, **sizing.record(rate), "seed": seed},
    )
    w.validate()
    return w


def _sizing(kw: dict[str, Any]) -> Sizing:
    arrival = kw.pop("arrival", ArrivalProcess())
    if isinstance(arrival, str):
        arrival = ArrivalProcess(arrival, float(kw.pop("cv", 1.0)))
    return Sizing(
        n_sessions=kw.pop("n_sessions", None),
        duration_s=kw.pop("duration_s", None),
        rate=kw.pop("rate", None),
        replicas=kw.pop("replicas", None),
        load=kw.pop("load", None),
        cost=kw.pop("cost", None),
        demand=kw.pop("demand", None),
        arrival=arrival,
    )


def _no_leftovers(name: str, kw: Mapping[str, Any]) -> None:
    if kw:
        raise WorkloadError(f"workload {name!r}: unknown parameters {sorted(kw)}")


def swe_bench(**kw: Any) -> Workload:
    seed = int(kw.pop("seed", 0))
    p: SweBenchParams = kw.pop("swe_bench_params", SweBenchParams())
    sizing = _sizing(kw)
    pool_size = int(kw.pop("pool_size", 256))
    _no_leftovers("swe_bench", kw)
    src = SyntheticSource("swe_bench", lambda sd, i: swe_bench_session(sd, i, p), seed, pool_size)
    return single_tenant(
        "swe_bench",
        src,
        sizing,
        seed=seed,
        description="SWE-bench-like coding agent sessions (synthetic, append-only context)",
        params={"generator": _jsonable(asdict(p))},
    )


def webarena(**kw: Any) -> Workload:
    seed = int(kw.pop("seed", 0))
    p: WebArenaParams = kw.pop("webarena_params", WebArenaParams())
    sizing = _sizing(kw)
    pool_size = int(kw.pop("pool_size", 256))
    _no_leftovers("webarena", kw)
    src = SyntheticSource("webarena", lambda sd, i: webarena_session(sd, i, p), seed, pool_size)
    return single_tenant(
        "webarena",
        src,
        sizing,
        seed=seed,
        description="WebArena-like browser agent sessions (synthetic, observation replaced per step)",
        params={"generator": _jsonable(asdict(p))},
    )


def _cc_source(seed: int, kw: dict[str, Any]) -> tuple[ClaudeCodeSource, dict[str, Any]]:
    gaps: GapPolicy = kw.pop("gaps", DEFAULT_CC_GAPS)
    path = kw.pop("path", None)
    shared_prefix = bool(kw.pop("shared_prefix", True))
    min_calls = int(kw.pop("min_calls", 1))
    sessions = kw.pop("sessions", None)
    src = ClaudeCodeSource(
        seed, path=path, gaps=gaps, shared_prefix=shared_prefix, min_calls=min_calls, sessions=sessions
    )
    rec = {
        "path": None if sessions is not None else str(path or "default"),
        "gaps": asdict(gaps),
        "shared_prefix": shared_prefix,
        "min_calls": min_calls,
        "pool": len(src.pool()),
    }
    return src, rec


def claude_code(**kw: Any) -> Workload:
    seed = int(kw.pop("seed", 0))
    sizing = _sizing(kw)
    src, rec = _cc_source(seed, kw)
    _no_leftovers("claude_code", kw)
    return single_tenant(
        "claude_code",
        src,
        sizing,
        seed=seed,
        description="Claude Code sessions (WEKA traces) with synthetic session arrivals",
        params=rec,
    )


# Per load class: SLO class, slo_factor and the base workloads its tenants draw sessions from.
CLASS_DEFAULTS: dict[str, tuple[str, float, tuple[str, ...]]] = {
    "heavy": (SLO_BATCH, 3.0, ("swe_bench",)),
    "medium": (SLO_STANDARD, 2.0, ("swe_bench", "webarena")),
    "light": (SLO_INTERACTIVE, 1.5, ("webarena",)),
}


def multi_tenant(**kw: Any) -> Workload:
    """Heavy / medium / light tenants with ServeGen-like skew and burstiness.

    Parameters beyond the common ones:

    - ``tenants_per_class`` (dict class -> int, default heavy 1, medium 2, light 4).
    - ``classes``: tuple of :class:`TenantClassProfile` (default
      :data:`DEFAULT_TENANT_CLASSES`, derived from ServeGen; ``servegen_tenant_classes``
      re-derives them from the file): each class's share of the sessions and its
      inter-arrival CV. A class's share is split evenly among its tenants, then every
      tenant's share is raised to at least ``min_tenant_share`` (default 0.02, so each
      tenant has enough sessions to measure its SLO attainment) and all are renormalised.
    - ``class_workloads`` (dict class -> tuple of base workloads, from ``swe_bench``,
      ``webarena``, ``claude_code``): what a tenant of the class runs (uniform choice).
    - ``weights`` (dict class -> fair-share weight, default 1 each), ``slo_factors``
      (dict class -> factor; defaults heavy 3.0 batch, medium 2.0 standard, light 1.5
      interactive).
    - ``swe_bench_params``, ``webarena_params`` and the ``claude_code`` parameters.

    Each tenant arrives as its own Gamma renewal process at ``share x rate`` with its class's
    CV (``arrival`` is ignored: burstiness comes from the classes). The total rate is
    calibrated over a pool mixing the classes' base workloads by share.
    """
    seed = int(kw.pop("seed", 0))
    sizing = _sizing(kw)
    per_class: dict[str, int] = kw.pop("tenants_per_class", {"heavy": 1, "medium": 2, "light": 4})
    classes: tuple[TenantClassProfile, ...] = kw.pop("classes", DEFAULT_TENANT_CLASSES)
    min_share = float(kw.pop("min_tenant_share", 0.02))
    class_wl: dict[str, tuple[str, ...]] = kw.pop(
        "class_workloads", {c: v[2] for c, v in CLASS_DEFAULTS.items()}
    )
    weights: dict[str, float] = kw.pop("weights", {})
    slo_factors: dict[str, float] = kw.pop("slo_factors", {})
    swe_p: SweBenchParams = kw.pop("swe_bench_params", SweBenchParams())
    web_p: WebArenaParams = kw.pop("webarena_params", WebArenaParams())
    pool_size = int(kw.pop("pool_size", 256))
    needs_cc = any("claude_code" in v for v in class_wl.values())
    cc_kw: dict[str, Any] = {
        k: kw.pop(k) for k in ("path", "gaps", "shared_prefix", "min_calls", "sessions") if k in kw
    }
    _no_leftovers("multi_tenant", kw)
    sizing.check()
    if not 0 <= min_share < 1:
        raise WorkloadError(f"min_tenant_share must be in [0, 1), got {min_share}")

    sources: dict[str, SessionSource] = {
        "swe_bench": SyntheticSource(
            "swe_bench", lambda sd, i: swe_bench_session(sd, i, swe_p), seed, pool_size
        ),
        "webarena": SyntheticSource(
            "webarena", lambda sd, i: webarena_session(sd, i, web_p), seed, pool_size
        ),
    }
    cc_rec: dict[str, Any] = {}
    if needs_cc:
        sources["claude_code"], cc_rec = _cc_source(seed, cc_kw)

    tenants: dict[str, TenantSpec] = {}
    shares: dict[str, float] = {}
    tenant_class: dict[str, TenantClassProfile] = {}
    for prof in classes:
        n = int(per_class.get(prof.name, 0))
        if n <= 0:
            continue
        if prof.name not in class_wl or not class_wl[prof.name]:
            raise WorkloadError(f"multi_tenant: class {prof.name!r} has no base workload in class_workloads")
        for wl in class_wl[prof.name]:
            if wl not in sources:
                raise WorkloadError(f"multi_tenant: unknown base workload {wl!r} for class {prof.name!r}")
        slo_class, factor, _ = CLASS_DEFAULTS.get(prof.name, (SLO_STANDARD, 2.0, ()))
        for k in range(n):
            t = f"{prof.name}-{k}"
            tenants[t] = TenantSpec(
                weight=float(weights.get(prof.name, 1.0)),
                slo_factor=float(slo_factors.get(prof.name, factor)),
                slo_class=slo_class,
                load_class=prof.name,
            )
            shares[t] = prof.share / n
            tenant_class[t] = prof
    if not tenants:
        raise WorkloadError("multi_tenant: no tenant (tenants_per_class gives none)")
    total = sum(shares.values())
    if not total > 0:
        raise WorkloadError("multi_tenant: class shares sum to 0")
    shares = {t: max(v / total, min_share) for t, v in shares.items()}
    total = sum(shares.values())
    shares = {t: v / total for t, v in shares.items()}

    # Calibration pool: each class's base workloads weighted by the class's share.
    pool: list[SessionTrace] = []
    pools = {name: src.pool() for name, src in sources.items()}
    for t, share in shares.items():
        names = class_wl[tenant_class[t].name]
        for nm in names:
            k = max(1, round(share * 400 / len(names)))
            pp = pools[nm]
            pool.extend(pp[i % len(pp)] for i in range(k))
    rate = sizing.resolve_rate(pool)

    arrivals: list[tuple[float, str]] = []
    for t, share in shares.items():
        rng = np.random.default_rng([seed, 0x7E4A, sorted(tenants).index(t)])
        proc = ArrivalProcess("gamma", tenant_class[t].cv)
        if sizing.n_sessions is not None:
            n = max(1, round(sizing.n_sessions * share))
            times = arrival_times(rng, proc, rate * share, n=n)
        else:
            times = arrival_times(rng, proc, rate * share, horizon_s=sizing.duration_s)
        arrivals.extend((x, t) for x in times)
    arrivals.sort()
    pick = np.random.default_rng([seed, 0x91C4])
    sessions = []
    for x, t in arrivals:
        names = class_wl[tenant_class[t].name]
        nm = names[int(pick.integers(len(names)))]
        sessions.append(place(_prefix_ids(sources[nm].take(), f"{t}/"), x, t))
    if not sessions:
        raise WorkloadError("multi_tenant: no session arrived; raise duration_s or the rate")
    w = Workload(
        name="multi_tenant",
        sessions=tuple(sessions),
        tenants=tenants,
        seed=seed,
        description="heavy/medium/light tenants with ServeGen-derived skew and Gamma bursts",
        params={
            **sizing.record(rate),
            "seed": seed,
            "shares": shares,
            "classes": [asdict(c) for c in classes],
            "tenants_per_class": dict(per_class),
            "class_workloads": {k: list(v) for k, v in class_wl.items()},
            "min_tenant_share": min_share,
            "claude_code": cc_rec,
        },
    )
    w.validate()
    return w


def _jsonable(d: Any) -> Any:
    if isinstance(d, dict):
        return {str(k): _jsonable(v) for k, v in d.items()}
    if isinstance(d, (list, tuple)):
        return [_jsonable(v) for v in d]
    if isinstance(d, float) and not math.isfinite(d):
        return None
    if isinstance(d, Path):
        return str(d)
    return d


WORKLOADS: dict[str, Callable[..., Workload]] = {
    "claude_code": claude_code,
    "swe_bench": swe_bench,
    "webarena": webarena,
    "multi_tenant": multi_tenant,
}


def get_workload(name: str, **params: Any) -> Workload:
    """Build the workload ``name`` (one of :data:`WORKLOADS`) with ``params`` (module docstring)."""
    fn = WORKLOADS.get(name)
    if fn is None:
        raise WorkloadError(f"unknown workload {name!r}; known: {sorted(WORKLOADS)}")
    return fn(**params)
