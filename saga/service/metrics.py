"""Every ``saga_*`` metric of the service, in one place (names and meanings: ``docs/metrics.md``).

:class:`ServiceMetrics` registers the metrics on a :class:`CollectorRegistry` it is given
(tests pass a fresh one; nothing is global), and offers one method per thing that happened
(``call_done``, ``session_ended``, ``decision``...) so that the service core never touches a
``prometheus_client`` object. :func:`start_metrics_server` serves the registry on its own
port (``spec.listen.metrics``), apart from the API ports.

Histogram buckets: task completion times span seconds to an hour (agent tasks); TTFT spans
milliseconds to a minute; proxy overhead and engine decisions are sub-millisecond (the
benchmark's target is p50 <= 1 ms), so their buckets start at 50 µs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from saga import __version__
from saga.scheduler.api import Action, Defer, Dispatch, Pin, Reject, Release, Steal

TASK_BUCKETS = (1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800, 3600, float("inf"))
TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, float("inf"))
FAST_BUCKETS = (
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    float("inf"),
)

METRIC_NAMES: tuple[str, ...] = (
    "saga_task_completion_seconds",
    "saga_tasks_total",
    "saga_sessions_active",
    "saga_calls_total",
    "saga_call_ttft_seconds",
    "saga_decisions_total",
    "saga_steals_total",
    "saga_kv_retention_total",
    "saga_kv_pinned_sessions",
    "saga_admission_rejections_total",
    "saga_queue_depth",
    "saga_slo_lane_replicas",
    "saga_replica_running_requests",
    "saga_replica_waiting_requests",
    "saga_replica_kv_usage_ratio",
    "saga_replica_cache_hit_ratio",
    "saga_replica_healthy",
    "saga_proxy_overhead_seconds",
    "saga_engine_decision_seconds",
    "saga_build_info",
    "saga_tenant_policy_reloads_total",
    "saga_tenant_policy_rejected_documents",
    "saga_kv_events_total",
    "saga_ttft_slo_calls_total",
    "saga_tenant_slo_attainment_target",
    "saga_quota_local_fallbacks_total",
)


class ServiceMetrics:
    """The service's metrics on an injected registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        r = registry
        self.task_completion = Histogram(
            "saga_task_completion_seconds",
            "Session start to session end (task completion time).",
            ["tenant", "agent_type"],
            buckets=TASK_BUCKETS,
            registry=r,
        )
        self.tasks = Counter("saga_tasks", "Finished sessions by SLO outcome.", ["tenant", "slo"], registry=r)
        self.sessions_active = Gauge("saga_sessions_active", "Open sessions.", ["tenant"], registry=r)
        self.calls = Counter("saga_calls", "LLM calls handled.", ["tenant", "status"], registry=r)
        self.ttft = Histogram(
            "saga_call_ttft_seconds",
            "Client-observed time to first token.",
            ["tenant"],
            buckets=TTFT_BUCKETS,
            registry=r,
        )
        self.ttft_slo = Counter(
            "saga_ttft_slo_calls",
            "Calls of tenants with a TTFT objective, by outcome (met: first token within it).",
            ["tenant", "slo"],
            registry=r,
        )
        self.attainment_target = Gauge(
            "saga_tenant_slo_attainment_target",
            "Configured fraction of a tenant's tasks that should meet their SLO (tenant policy).",
            ["tenant"],
            registry=r,
        )
        self._target_tenants: set[str] = set()
        self.decisions = Counter("saga_decisions", "Engine actions.", ["decision", "reason"], registry=r)
        self.steals = Counter("saga_steals", "Queued sessions moved by work stealing.", registry=r)
        self.kv_retention = Counter(
            "saga_kv_retention", "KV pins across tool gaps by outcome.", ["outcome"], registry=r
        )
        self.kv_pinned = Gauge(
            "saga_kv_pinned_sessions", "Sessions whose KV is pinned now.", ["replica"], registry=r
        )
        self.rejections = Counter(
            "saga_admission_rejections",
            "Calls rejected by admission control.",
            ["tenant", "reason"],
            registry=r,
        )
        self.queue_depth = Gauge("saga_queue_depth", "Calls deferred in the scheduler's queue.", registry=r)
        self.lane_replicas = Gauge(
            "saga_slo_lane_replicas", "Replicas the SLO lane keeps for tight-deadline tenants.", registry=r
        )
        self.replica_running = Gauge(
            "saga_replica_running_requests", "Running requests (/v1/loads).", ["replica"], registry=r
        )
        self.replica_waiting = Gauge(
            "saga_replica_waiting_requests", "Waiting requests (/v1/loads).", ["replica"], registry=r
        )
        self.replica_kv = Gauge(
            "saga_replica_kv_usage_ratio", "Used / total KV tokens.", ["replica"], registry=r
        )
        self.replica_hit = Gauge(
            "saga_replica_cache_hit_ratio", "Replica-reported prefix cache hit rate.", ["replica"], registry=r
        )
        self.replica_healthy = Gauge("saga_replica_healthy", "1 healthy, 0 not.", ["replica"], registry=r)
        self.proxy_overhead = Histogram(
            "saga_proxy_overhead_seconds",
            "Time SAGA adds to a call (excluding the replica's own time).",
            ["path"],
            buckets=FAST_BUCKETS,
            registry=r,
        )
        self.engine_decision = Histogram(
            "saga_engine_decision_seconds",
            "Time of one engine handle/tick.",
            buckets=FAST_BUCKETS,
            registry=r,
        )
        self.build_info = Gauge("saga_build_info", "Always 1.", ["version"], registry=r)
        self.build_info.labels(version=__version__).set(1)
        self.tenant_policy_reloads = Counter(
            "saga_tenant_policy_reloads",
            "Tenant policy reloads: policy sets applied, documents rejected.",
            ["outcome"],
            registry=r,
        )
        self.tenant_policy_rejected_documents = Gauge(
            "saga_tenant_policy_rejected_documents",
            "Tenant policy documents rejected now (their last good policy stays in force).",
            registry=r,
        )
        self.kv_events = Counter(
            "saga_kv_events",
            "Replica KV event batches by outcome (unmapped: stored blocks whose parent is unknown).",
            ["outcome"],
            registry=r,
        )

        self.quota_fallbacks = Counter(
            "saga_quota_local_fallbacks",
            "Tenant quota checks decided on this process's counts because the shared ledger "
            "(Redis) could not decide them.",
            ["reason"],
            registry=r,
        )

    # ------------------------------------------------------------------ recording

    def actions(self, actions: Iterable[Action]) -> None:
        for a in actions:
            if isinstance(a, Dispatch):
                self.decisions.labels("dispatch", a.reason or "none").inc()
            elif isinstance(a, Pin):
                self.decisions.labels("pin", "tool_gap").inc()
                self.kv_retention.labels("kept").inc()
            elif isinstance(a, Release):
                self.decisions.labels("release", a.reason or "none").inc()
                self.kv_retention.labels("expired" if a.reason == "expired" else "released").inc()
            elif isinstance(a, Steal):
                self.decisions.labels("steal", "imbalance").inc()
                self.steals.inc()
            elif isinstance(a, Defer):
                self.decisions.labels("defer", a.reason or "none").inc()
            elif isinstance(a, Reject):
                self.decisions.labels("reject", str(a.reason)).inc()

    def rejected(self, tenant: str, reason: str) -> None:
        self.rejections.labels(tenant, reason).inc()
        self.calls.labels(tenant, "rejected").inc()

    def first_token(self, tenant: str, ttft_s: float, objective_s: float) -> None:
        """A call's client-observed TTFT; counted against ``objective_s`` when > 0."""
        self.ttft.labels(tenant).observe(ttft_s)
        if objective_s > 0:
            self.ttft_slo.labels(tenant, "met" if ttft_s <= objective_s else "missed").inc()

    def tenant_targets(self, targets: dict[str, float]) -> None:
        """Export tenant → attainment target; tenants with none (0) are not exported."""
        keep = {t: v for t, v in targets.items() if v > 0}
        for tenant in self._target_tenants - set(keep):
            self.attainment_target.remove(tenant)
        for tenant, target in keep.items():
            self.attainment_target.labels(tenant).set(target)
        self._target_tenants = set(keep)

    def session_rejected(self, tenant: str, reason: str) -> None:
        """A session start refused (counted with the calls' rejections; no call is counted)."""
        self.rejections.labels(tenant, reason).inc()

    def call_done(self, tenant: str, ok: bool) -> None:
        self.calls.labels(tenant, "ok" if ok else "error").inc()

    def session_started(self, tenant: str) -> None:
        self.sessions_active.labels(tenant).inc()

    def session_ended(self, tenant: str, agent_type: str, duration_s: float, slo_s: float | None) -> None:
        self.sessions_active.labels(tenant).dec()
        self.task_completion.labels(tenant, agent_type).observe(duration_s)
        slo = "none" if not slo_s else ("met" if duration_s <= slo_s else "missed")
        self.tasks.labels(tenant, slo).inc()

    def replica_load(
        self, replica: str, running: int, waiting: int, used: int, total: int, hit: float | None
    ) -> None:
        self.replica_running.labels(replica).set(running)
        self.replica_waiting.labels(replica).set(waiting)
        self.replica_kv.labels(replica).set(used / total if total > 0 else 0.0)
        if hit is not None:
            self.replica_hit.labels(replica).set(hit)

    def replica_gone(self, replica: str) -> None:
        for g in (
            self.replica_running,
            self.replica_waiting,
            self.replica_kv,
            self.replica_hit,
            self.replica_healthy,
            self.kv_pinned,
        ):
            with contextlib.suppress(KeyError):
                g.remove(replica)

    def kv_event(self, outcome: str, n: int = 1) -> None:
        self.kv_events.labels(outcome).inc(n)

    def quota_fallback(self, reason: str) -> None:
        """A quota check fell back to local counting (``unreachable`` / ``error``)."""
        self.quota_fallbacks.labels(reason).inc()

    def tenant_policy_reload(self, outcome: str) -> None:
        self.tenant_policy_reloads.labels(outcome).inc()

    def tenant_policy_rejected(self, n: int) -> None:
        self.tenant_policy_rejected_documents.set(n)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


async def start_metrics_server(registry: CollectorRegistry, host: str, port: int) -> web.AppRunner:
    """Serve ``registry`` at ``/metrics`` on ``host:port`` (port 0: a free port; read it back
    from ``runner.addresses``)."""

    async def handle(_: web.Request) -> web.Response:
        body = generate_latest(registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/metrics", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
