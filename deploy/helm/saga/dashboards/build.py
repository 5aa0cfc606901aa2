"""Generate SAGA's Grafana dashboards (``saga-*.json``) from one description.

Run ``python deploy/helm/saga/dashboards/build.py`` after editing; the tests check that the
checked-in JSON equals this script's output, type-check the JSON against ``@grafana/schema``
with ``tsc`` and parse every PromQL expression with ``promtool``. Every query uses only the
metric names of ``docs/metrics.md``.

Dashboards:

- ``saga-slo``: SLO attainment and task completion time per tenant, active sessions, TTFT;
- ``saga-replicas``: KV kept / released / expired across tool gaps, pinned sessions, cache hit
  rate, KV usage, running and waiting requests and health per replica;
- ``saga-scheduler``: placement decisions and steals, queue depth, admission rejections, call
  outcomes, proxy overhead and engine decision time (scheduler health).

Template variables: ``datasource`` (a Prometheus), ``tenant`` and ``replica`` (multi-select,
from the metrics' label values). ``$__rate_interval`` is Grafana's scrape-aware rate window.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DS = {"type": "prometheus", "uid": "${datasource}"}
Json = dict[str, Any]


def target(expr: str, legend: str, ref: str) -> Json:
    return {"datasource": DS, "expr": expr, "legendFormat": legend, "refId": ref, "range": True}


def panel(
    pid: int,
    title: str,
    exprs: list[tuple[str, str]],
    *,
    x: int,
    y: int,
    w: int = 12,
    h: int = 8,
    unit: str = "short",
    kind: str = "timeseries",
    description: str = "",
    thresholds: list[tuple[str, float | None]] | None = None,
    minmax: tuple[float | None, float | None] = (None, None),
) -> Json:
    steps = [{"color": c, "value": v} for c, v in (thresholds or [("green", None)])]
    defaults: Json = {"unit": unit, "thresholds": {"mode": "absolute", "steps": steps}}
    if minmax[0] is not None:
        defaults["min"] = minmax[0]
    if minmax[1] is not None:
        defaults["max"] = minmax[1]
    if kind == "timeseries":
        defaults["custom"] = {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10, "showPoints": "never"}
    p: Json = {
        "id": pid,
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DS,
        "gridPos": {"h": h, "w": w, "x": x, "y": y},
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True}}
        if kind == "timeseries"
        else {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}},
        "targets": [target(e, leg, chr(ord("A") + i)) for i, (e, leg) in enumerate(exprs)],
    }
    return p


def variable(name: str, label: str, query: str) -> Json:
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DS,
        "query": {"query": query, "refId": f"{name}-var"},
        "refresh": 2,
        "includeAll": True,
        "multi": True,
        "allValue": ".*",
        "current": {"text": "All", "value": "$__all"},
        "sort": 1,
        "hide": 0,
        "options": [],
    }


def dashboard(uid: str, title: str, description: str, panels: list[Json], variables: list[Json]) -> Json:
    ds_var: Json = {
        "name": "datasource",
        "label": "Prometheus",
        "type": "datasource",
        "query": "prometheus",
        "current": {"selected": False, "text": "default", "value": "default"},
        "hide": 0,
        "options": [],
        "refresh": 1,
        "regex": "",
    }
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["saga", "llm", "agents"],
        "timezone": "browser",
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "timepicker": {},
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "weekStart": "",
        "links": [],
        "annotations": {"list": []},
        "templating": {"list": [ds_var, *variables]},
        "panels": panels,
    }


T = 'tenant=~"$tenant"'
R = 'replica=~"$replica"'
RI = "$__rate_interval"


def hq(q: float, metric: str, by: str, sel: str = "") -> str:
    """``histogram_quantile`` of a histogram's rate, aggregated by ``by`` (plus ``le``)."""
    inner = f"{metric}_bucket{{{sel}}}" if sel else f"{metric}_bucket"
    return f"histogram_quantile({q}, sum by ({by}) (rate({inner}[{RI}])))"


def slo_dashboard() -> Json:
    panels = [
        panel(
            1,
            "SLO attainment per tenant",
            [
                (
                    f'sum by (tenant) (rate(saga_tasks_total{{{T}, slo="met"}}[{RI}])) / '
                    f'sum by (tenant) (rate(saga_tasks_total{{{T}, slo=~"met|missed"}}[{RI}]))',
                    "{{tenant}}",
                ),
                (f"max by (tenant) (saga_tenant_slo_attainment_target{{{T}}})", "target {{tenant}}"),
            ],
            x=0,
            y=0,
            unit="percentunit",
            minmax=(0, 1),
            description=(
                "Finished tasks that met their deadline / tasks with a deadline (saga_tasks_total);"
                ' series "target": the tenant\'s attainment target where its policy sets one.'
            ),
            thresholds=[("red", None), ("orange", 0.95), ("green", 0.99)],
        ),
        panel(
            2,
            "SLO attainment (whole window)",
            [
                (
                    f'sum by (tenant) (increase(saga_tasks_total{{{T}, slo="met"}}[$__range])) / '
                    f'sum by (tenant) (increase(saga_tasks_total{{{T}, slo=~"met|missed"}}[$__range]))',
                    "{{tenant}}",
                )
            ],
            x=12,
            y=0,
            kind="stat",
            unit="percentunit",
            minmax=(0, 1),
            thresholds=[("red", None), ("orange", 0.95), ("green", 0.99)],
        ),
        panel(
            3,
            "Task completion time p50 / p95 per tenant",
            [
                (
                    hq(0.5, "saga_task_completion_seconds", "tenant, le", T),
                    "p50 {{tenant}}",
                ),
                (
                    hq(0.95, "saga_task_completion_seconds", "tenant, le", T),
                    "p95 {{tenant}}",
                ),
            ],
            x=0,
            y=8,
            unit="s",
            description="Session start to session end (saga_task_completion_seconds).",
        ),
        panel(
            4,
            "Tasks finished per tenant",
            [(f"sum by (tenant, slo) (rate(saga_tasks_total{{{T}}}[{RI}]))", "{{tenant}} {{slo}}")],
            x=12,
            y=8,
            unit="ops",
        ),
        panel(
            5,
            "Active sessions per tenant",
            [(f"sum by (tenant) (saga_sessions_active{{{T}}})", "{{tenant}}")],
            x=0,
            y=16,
        ),
        panel(
            6,
            "Time to first token p95 per tenant",
            [
                (
                    hq(0.95, "saga_call_ttft_seconds", "tenant, le", T),
                    "{{tenant}}",
                )
            ],
            x=12,
            y=16,
            unit="s",
        ),
        panel(
            7,
            "Calls within their tenant's TTFT objective",
            [
                (
                    f'sum by (tenant) (rate(saga_ttft_slo_calls_total{{{T}, slo="met"}}[{RI}])) / '
                    f"sum by (tenant) (rate(saga_ttft_slo_calls_total{{{T}}}[{RI}]))",
                    "{{tenant}}",
                )
            ],
            x=0,
            y=24,
            unit="percentunit",
            minmax=(0, 1),
            description="Streamed calls whose first token came within the tenant's ttft_s (if it has one).",
        ),
    ]
    return dashboard(
        "saga-slo",
        "SAGA / SLOs and tenants",
        "Per-tenant SLO attainment and task completion time (Agent Fair Share).",
        panels,
        [variable("tenant", "Tenant", "label_values(saga_sessions_active, tenant)")],
    )


def replicas_dashboard() -> Json:
    panels = [
        panel(
            1,
            "KV across tool gaps: kept / released / expired",
            [(f"sum by (outcome) (rate(saga_kv_retention_total[{RI}]))", "{{outcome}}")],
            x=0,
            y=0,
            unit="ops",
            description="KV pins at tool boundaries: kept (reused), released early, expired by TTL.",
        ),
        panel(
            2,
            "KV kept share",
            [
                (
                    f'sum(rate(saga_kv_retention_total{{outcome="kept"}}[{RI}])) / '
                    f"sum(rate(saga_kv_retention_total[{RI}]))",
                    "kept",
                )
            ],
            x=12,
            y=0,
            unit="percentunit",
            minmax=(0, 1),
        ),
        panel(
            3,
            "Sessions with pinned KV per replica",
            [(f"sum by (replica) (saga_kv_pinned_sessions{{{R}}})", "{{replica}}")],
            x=0,
            y=8,
        ),
        panel(
            4,
            "Prefix cache hit rate per replica",
            [(f"saga_replica_cache_hit_ratio{{{R}}}", "{{replica}}")],
            x=12,
            y=8,
            unit="percentunit",
            minmax=(0, 1),
        ),
        panel(
            5,
            "KV cache usage per replica",
            [(f"saga_replica_kv_usage_ratio{{{R}}}", "{{replica}}")],
            x=0,
            y=16,
            unit="percentunit",
            minmax=(0, 1),
            thresholds=[("green", None), ("orange", 0.8), ("red", 0.95)],
        ),
        panel(
            6,
            "Running / waiting requests per replica",
            [
                (f"saga_replica_running_requests{{{R}}}", "running {{replica}}"),
                (f"saga_replica_waiting_requests{{{R}}}", "waiting {{replica}}"),
            ],
            x=12,
            y=16,
        ),
        panel(
            7,
            "Healthy replicas",
            [
                (f"sum(saga_replica_healthy{{{R}}})", "healthy"),
                (f"count(saga_replica_healthy{{{R}}})", "known"),
            ],
            x=0,
            y=24,
            w=24,
            h=6,
            kind="stat",
        ),
    ]
    return dashboard(
        "saga-replicas",
        "SAGA / Replicas and KV cache",
        "KV retention across tool calls and per-replica cache state.",
        panels,
        [variable("replica", "Replica", "label_values(saga_replica_healthy, replica)")],
    )


def scheduler_dashboard() -> Json:
    panels = [
        panel(
            1,
            "Placement decisions",
            [(f"sum by (decision) (rate(saga_decisions_total[{RI}]))", "{{decision}}")],
            x=0,
            y=0,
            unit="ops",
            description="Engine actions: dispatch, pin, release, steal, defer, reject.",
        ),
        panel(
            2,
            "Work steals",
            [(f"sum(rate(saga_steals_total[{RI}]))", "steals/s")],
            x=12,
            y=0,
            unit="ops",
        ),
        panel(
            3,
            "Queue depth and SLO lane",
            [
                ("sum(saga_queue_depth)", "deferred calls"),
                ("max(saga_slo_lane_replicas)", "SLO lane replicas"),
            ],
            x=0,
            y=8,
            description="Calls the engine holds; replicas kept for tight-deadline tenants (0: no lane).",
        ),
        panel(
            4,
            "Admission rejections",
            [
                (
                    f"sum by (tenant, reason) (rate(saga_admission_rejections_total{{{T}}}[{RI}]))",
                    "{{tenant}} {{reason}}",
                )
            ],
            x=12,
            y=8,
            unit="ops",
        ),
        panel(
            5,
            "Calls by outcome",
            [(f"sum by (status) (rate(saga_calls_total{{{T}}}[{RI}]))", "{{status}}")],
            x=0,
            y=16,
            unit="ops",
        ),
        panel(
            6,
            "Proxy overhead p50 / p99",
            [
                (
                    hq(0.5, "saga_proxy_overhead_seconds", "path, le"),
                    "p50 {{path}}",
                ),
                (
                    hq(0.99, "saga_proxy_overhead_seconds", "path, le"),
                    "p99 {{path}}",
                ),
            ],
            x=12,
            y=16,
            unit="s",
        ),
        panel(
            7,
            "Engine decision time p99",
            [
                (
                    hq(0.99, "saga_engine_decision_seconds", "le"),
                    "p99",
                )
            ],
            x=0,
            y=24,
            unit="s",
        ),
        panel(
            8,
            "Scheduler up",
            [("sum(saga_build_info)", "schedulers"), ("count by (version) (saga_build_info)", "{{version}}")],
            x=12,
            y=24,
            kind="stat",
        ),
    ]
    return dashboard(
        "saga-scheduler",
        "SAGA / Scheduler",
        "Placement, stealing, queueing, admission control and scheduler health.",
        panels,
        [variable("tenant", "Tenant", "label_values(saga_calls_total, tenant)")],
    )


DASHBOARDS = {
    "saga-slo.json": slo_dashboard,
    "saga-replicas.json": replicas_dashboard,
    "saga-scheduler.json": scheduler_dashboard,
}


def render(name: str) -> str:
    return json.dumps(DASHBOARDS[name](), indent=2, sort_keys=False) + "\n"


TS_HEADER = """\
// Generated by build.py: type-checks every SAGA dashboard against @grafana/schema (tsc --noEmit).
//
// Two checks per dashboard:
// 1. the JSON file itself, imported, against the Dashboard type with enum-typed strings widened
//    to string (TypeScript widens strings read from JSON, so they can never match a string enum);
// 2. the same content as an object literal against the exact Dashboard type with enums written
//    as their values: excess (misspelled) properties and wrong enum values fail here.
import type { Dashboard } from '@grafana/schema';

type Exact<T> = T extends string
  ? `${T}`
  : T extends readonly (infer U)[]
    ? Exact<U>[]
    : T extends object
      ? { [K in keyof T]: Exact<T[K]> }
      : T;
type Loose<T> = T extends string
  ? string
  : T extends readonly (infer U)[]
    ? Loose<U>[]
    : T extends object
      ? { [K in keyof T]: Loose<T[K]> }
      : T;
"""


def _ident(name: str) -> str:
    parts = name.removesuffix(".json").split("-")
    return parts[0] + "".join(p.capitalize() for p in parts[1:])


def render_ts() -> str:
    out = [TS_HEADER]
    for name in DASHBOARDS:
        out.append(f"import {_ident(name)}Json from './{name}';\n")
    for name in DASHBOARDS:
        ident = _ident(name)
        out.append(f"\nexport const {ident}File: Loose<Dashboard> = {ident}Json;\n")
        body = json.dumps(DASHBOARDS[name](), indent=2)
        out.append(f"export const {ident}: Exact<Dashboard> = {body};\n")
    return "".join(out)


def main() -> int:
    for name in DASHBOARDS:
        (HERE / name).write_text(render(name), encoding="utf-8")
        print(f"wrote {HERE / name}")
    (HERE / "typecheck.ts").write_text(render_ts(), encoding="utf-8")
    print(f"wrote {HERE / 'typecheck.ts'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
