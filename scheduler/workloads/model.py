"""The workload model: sessions on one timeline, their tenants, and how they were made.

A :class:`Workload` is what the simulator (``saga simulate``) and the live benchmark replay:
a list of :class:`~saga.graphs.trace.SessionTrace` sorted by ``start_s`` (absolute arrival
on the workload's timeline, seconds from 0), each with its ``tenant`` set, plus one
:class:`TenantSpec` per tenant (fair-share weight and SLO). ``params`` records every
generator parameter (seed included) so the workload can be regenerated, and
``saga.scheduler.workloads.io`` writes it to JSON lines so a run replays exactly the same
sessions.

Session ids are unique across the workload (sub-agent sessions included); block hashes are
namespaced so that equal ids mean equal content across the whole workload (the shared
system-prompt chain of an agent type is the same ids in every session of that type).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from saga.graphs.trace import SessionTrace, TraceError, validate_session

WORKLOAD_MODEL_VERSION = 1

# SLO classes: how a tenant's task-completion deadline is set (see TenantSpec.slo_factor).
SLO_INTERACTIVE = "interactive"
SLO_STANDARD = "standard"
SLO_BATCH = "batch"
SLO_CLASSES = (SLO_INTERACTIVE, SLO_STANDARD, SLO_BATCH)


class WorkloadError(ValueError):
    """Bad workload parameters or data (the message names the parameter, file or line)."""


@dataclass(frozen=True, slots=True)
class TenantSpec:
    """One tenant's fair-share weight and completion-time SLO.

    ``slo_factor``: a session's deadline is ``slo_factor`` x its expected completion time,
    where "expected" is its physical limit (alone on an idle replica with an infinite cache,
    :func:`saga.scheduler.workloads.demand.physical_limit_s`). The paper uses 1.5 x the
    expected completion time; interactive tenants default to that, batch tenants get more.
    """

    weight: float = 1.0  # relative fair-share weight (> 0); AFS divides capacity by weight
    slo_factor: float = 1.5  # deadline = slo_factor x expected completion time (> 1)
    slo_class: str = SLO_STANDARD  # one of SLO_CLASSES: reporting group and SLO family
    load_class: str = ""  # "heavy" / "medium" / "light" when the workload sets it

    def validate(self, where: str) -> None:
        if not (math.isfinite(self.weight) and self.weight > 0):
            raise WorkloadError(f"{where}: weight must be > 0, got {self.weight}")
        if not (math.isfinite(self.slo_factor) and self.slo_factor >= 1.0):
            raise WorkloadError(f"{where}: slo_factor must be >= 1, got {self.slo_factor}")
        if self.slo_class not in SLO_CLASSES:
            raise WorkloadError(f"{where}: slo_class must be one of {SLO_CLASSES}, got {self.slo_class!r}")


@dataclass(frozen=True, slots=True)
class Workload:
    """Sessions to replay, sorted by arrival, with their tenants."""

    name: str
    sessions: tuple[SessionTrace, ...]
    tenants: Mapping[str, TenantSpec]
    seed: int
    description: str = ""
    params: Mapping[str, Any] = field(default_factory=dict)  # generator parameters (JSON-able)

    def validate(self) -> None:
        """Raise :class:`WorkloadError` unless sorted, tenants known, ids unique, traces valid."""
        if not self.name:
            raise WorkloadError("workload name is empty")
        if not self.sessions:
            raise WorkloadError(f"workload {self.name!r} has no sessions")
        for name, spec in self.tenants.items():
            spec.validate(f"tenants[{name!r}]")
        seen: set[str] = set()
        prev = -math.inf
        for i, s in enumerate(self.sessions):
            where = f"sessions[{i}] ({s.session_id})"
            if s.start_s < prev:
                raise WorkloadError(f"{where}: not sorted by start_s ({s.start_s} < {prev})")
            prev = s.start_s
            if s.tenant not in self.tenants:
                raise WorkloadError(f"{where}: tenant {s.tenant!r} is not in the workload's tenants")
            try:
                validate_session(s)
            except TraceError as e:
                raise WorkloadError(f"{where}: {e}") from None
            for sub in s.walk():
                if sub.session_id in seen:
                    raise WorkloadError(f"{where}: duplicate session id {sub.session_id!r}")
                seen.add(sub.session_id)

    @property
    def span_s(self) -> float:
        """Arrival span: last session start minus first (0 for a single session)."""
        return self.sessions[-1].start_s - self.sessions[0].start_s if self.sessions else 0.0

    def by_tenant(self) -> dict[str, list[SessionTrace]]:
        out: dict[str, list[SessionTrace]] = {t: [] for t in self.tenants}
        for s in self.sessions:
            out.setdefault(s.tenant, []).append(s)
        return out
