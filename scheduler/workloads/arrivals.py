"""Session arrival processes, and per-tenant burstiness derived from ServeGen.

Arrivals are renewal processes: inter-arrival times are i.i.d. with mean ``1/rate`` and a
coefficient of variation ``cv`` (std/mean):

- ``poisson``: exponential gaps (cv = 1).
- ``gamma``: Gamma gaps, shape ``k = 1/cv^2``, scale ``1/(rate k)``. cv > 1 gives bursts
  (many short gaps, a few long ones) as ServeGen measured for real tenants.
- ``weibull``: Weibull gaps with the shape solved from ``cv`` (bisection on
  ``Γ(1+2/k)/Γ(1+1/k)^2 - 1 = cv^2``), scale set for the mean.

ServeGen (``../shared/traces/servegen_client_arrivals.csv.gz``, alibaba/ServeGen, Apache-2.0,
arXiv 2505.09999) gives per-client (tenant) 600 s windows of mean rate and inter-arrival CV
with a fitted Gamma or Weibull. :func:`servegen_tenant_classes` ranks the clients of one
model by total requests (sum of ``rate x 600``) and splits them into classes: ``heavy`` (top
10% of clients), ``medium`` (next 40%), ``light`` (bottom 50%), returning each class's share
of all requests and the median window CV of its clients. The defaults
(:data:`DEFAULT_TENANT_CLASSES`) are that function's output on the ``m-large`` model
(162 clients); a unit test checks they still match the file when it is present.
"""

from __future__ import annotations

import csv
import gzip
import math
import statistics
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from saga.scheduler.workloads.model import WorkloadError

ARRIVAL_KINDS = ("poisson", "gamma", "weibull")


@dataclass(frozen=True, slots=True)
class ArrivalProcess:
    """A renewal arrival process: ``kind`` in ARRIVAL_KINDS, inter-arrival ``cv`` (ignored for poisson)."""

    kind: str = "poisson"
    cv: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in ARRIVAL_KINDS:
            raise WorkloadError(f"arrival kind must be one of {ARRIVAL_KINDS}, got {self.kind!r}")
        if not (math.isfinite(self.cv) and 0.05 <= self.cv <= 20):
            raise WorkloadError(f"arrival cv must be in [0.05, 20], got {self.cv}")


def _weibull_shape(cv: float) -> float:
    def cv_of(k: float) -> float:
        g1 = math.lgamma(1 + 1 / k)
        g2 = math.lgamma(1 + 2 / k)
        return math.sqrt(max(0.0, math.exp(g2 - 2 * g1) - 1))

    lo, hi = 0.05, 50.0  # cv decreases in k
    for _ in range(100):
        mid = math.sqrt(lo * hi)
        if cv_of(mid) > cv:
            lo = mid
        else:
            hi = mid
    return math.sqrt(lo * hi)


def interarrival_gaps(rng: np.random.Generator, proc: ArrivalProcess, rate: float, n: int) -> np.ndarray:
    """``n`` inter-arrival gaps (seconds) of ``proc`` at ``rate`` arrivals per second."""
    if not (math.isfinite(rate) and rate > 0):
        raise WorkloadError(f"arrival rate must be > 0, got {rate}")
    if n < 0:
        raise WorkloadError(f"number of arrivals must be >= 0, got {n}")
    mean = 1.0 / rate
    if proc.kind == "poisson":
        return rng.exponential(mean, n)
    if proc.kind == "gamma":
        k = 1.0 / proc.cv**2
        return rng.gamma(k, mean / k, n)
    k = _weibull_shape(proc.cv)
    scale = mean / math.exp(math.lgamma(1 + 1 / k))
    return scale * rng.weibull(k, n)


def arrival_times(
    rng: np.random.Generator,
    proc: ArrivalProcess,
    rate: float,
    *,
    n: int | None = None,
    horizon_s: float | None = None,
    start_s: float = 0.0,
) -> list[float]:
    """Arrival times from ``start_s``: exactly ``n`` of them, or all before ``horizon_s``.

    The first arrival is one gap after ``start_s`` (a stationary start would differ only in
    the first gap). Exactly one of ``n`` / ``horizon_s`` must be given.
    """
    if (n is None) == (horizon_s is None):
        raise WorkloadError("give exactly one of n (sessions) or horizon_s (seconds)")
    if n is not None:
        return [start_s + float(t) for t in np.cumsum(interarrival_gaps(rng, proc, rate, n))]
    assert horizon_s is not None
    if not horizon_s > 0:
        raise WorkloadError(f"horizon_s must be > 0, got {horizon_s}")
    out: list[float] = []
    t = start_s
    batch = max(16, int(rate * horizon_s * 1.2) + 16)
    while True:
        for g in interarrival_gaps(rng, proc, rate, batch):
            t += float(g)
            if t >= start_s + horizon_s:
                return out
            out.append(t)


@dataclass(frozen=True, slots=True)
class TenantClassProfile:
    """A class of tenants: how many clients, their share of all requests, their burstiness."""

    name: str  # "heavy" / "medium" / "light"
    clients: int
    share: float  # fraction of all requests sent by the class
    cv: float  # median inter-arrival CV over the class's 600 s windows


# servegen_tenant_classes("../shared/traces/servegen_client_arrivals.csv.gz", model="m-large")
DEFAULT_TENANT_CLASSES: tuple[TenantClassProfile, ...] = (
    TenantClassProfile("heavy", 16, 0.738, 1.144),
    TenantClassProfile("medium", 65, 0.245, 1.175),
    TenantClassProfile("light", 81, 0.017, 1.225),
)
CLASS_CUTS = (("heavy", 0.0, 0.1), ("medium", 0.1, 0.5), ("light", 0.5, 1.0))


def servegen_tenant_classes(path: str, *, model: str = "m-large") -> tuple[TenantClassProfile, ...]:
    """Heavy/medium/light tenant classes of one ServeGen model (see the module docstring)."""
    totals: dict[str, float] = defaultdict(float)
    cvs: dict[str, list[float]] = defaultdict(list)
    try:
        with gzip.open(path, "rt", encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f)
            for lineno, row in enumerate(reader, start=2):
                if row.get("model") != model:
                    continue
                try:
                    totals[row["client_id"]] += float(row["rate_rps"]) * 600.0
                    if row["cv"]:
                        cv = float(row["cv"])
                        if math.isfinite(cv):
                            cvs[row["client_id"]].append(cv)
                except (KeyError, ValueError) as e:
                    raise WorkloadError(f"{path}: line {lineno}: bad row: {e}") from None
    except OSError as e:
        raise WorkloadError(f"{path}: cannot read: {e.strerror or e}") from None
    if len(totals) < 3:
        raise WorkloadError(f"{path}: fewer than 3 clients for model {model!r}")
    ranked = sorted(totals, key=lambda k: (-totals[k], k))
    grand = sum(totals.values())
    out = []
    for name, lo, hi in CLASS_CUTS:
        sel = ranked[int(lo * len(ranked)) : int(hi * len(ranked))]
        vals = [c for k in sel for c in cvs[k]]
        out.append(
            TenantClassProfile(
                name=name,
                clients=len(sel),
                share=round(sum(totals[k] for k in sel) / grand, 3),
                cv=round(statistics.median(vals), 3) if vals else 1.0,
            )
        )
    return tuple(out)
