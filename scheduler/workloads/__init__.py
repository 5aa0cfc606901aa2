"""Workloads for the cluster simulator and the live benchmark (pure, seeded, reproducible).

- ``model``: :class:`Workload` (sessions sorted by arrival, tenants, seed) and :class:`TenantSpec`.
- ``arrivals``: Poisson / Gamma / Weibull session arrivals; ServeGen-derived tenant classes.
- ``synthetic``: SWE-bench-like and WebArena-like session generators.
- ``sources``: Claude Code sessions from the WEKA traces; synthetic sources.
- ``transform``: gap compression, shared cross-session prefix, copies, placement.
- ``demand``: iteration-time cost model, per-session demand, physical limit, load calibration.
- ``registry``: ``get_workload(name, **params)`` for claude_code, swe_bench, webarena, multi_tenant.
- ``io``: JSON-lines read/write so every run replays exactly the same sessions.

docs/workloads.md describes each workload, its parameters and sources.
"""

from saga.scheduler.workloads.arrivals import (
    DEFAULT_TENANT_CLASSES,
    ArrivalProcess,
    TenantClassProfile,
    arrival_times,
    servegen_tenant_classes,
)
from saga.scheduler.workloads.demand import (
    DemandFn,
    IterationCostModel,
    calibrate_rate,
    demand_fn,
    new_prefill_tokens,
    offered_load,
    physical_limit_s,
    replay_end_s,
    session_demand_s,
)
from saga.scheduler.workloads.io import load_workload, read_workload, save_workload, write_workload
from saga.scheduler.workloads.model import (
    SLO_BATCH,
    SLO_CLASSES,
    SLO_INTERACTIVE,
    SLO_STANDARD,
    TenantSpec,
    Workload,
    WorkloadError,
)
from saga.scheduler.workloads.registry import WORKLOADS, get_workload
from saga.scheduler.workloads.synthetic import LogNormal, SweBenchParams, WebArenaParams
from saga.scheduler.workloads.transform import GapPolicy

__all__ = [
    "DEFAULT_TENANT_CLASSES",
    "SLO_BATCH",
    "SLO_CLASSES",
    "SLO_INTERACTIVE",
    "SLO_STANDARD",
    "WORKLOADS",
    "ArrivalProcess",
    "DemandFn",
    "GapPolicy",
    "IterationCostModel",
    "LogNormal",
    "SweBenchParams",
    "TenantClassProfile",
    "TenantSpec",
    "WebArenaParams",
    "Workload",
    "WorkloadError",
    "arrival_times",
    "calibrate_rate",
    "demand_fn",
    "get_workload",
    "load_workload",
    "new_prefill_tokens",
    "offered_load",
    "physical_limit_s",
    "read_workload",
    "replay_end_s",
    "save_workload",
    "servegen_tenant_classes",
    "session_demand_s",
    "write_workload",
]
