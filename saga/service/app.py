"""Assemble the service from a :class:`SchedulerConfig`: engine, state store, replica pool,
core, gRPC API, OpenAI endpoint, metrics server, and the periodic chores.

:class:`Service` is what ``saga serve`` runs and what the integration tests start on free
ports (``port 0`` in ``spec.listen``; the bound ports are read back from the instance).
KV event subscribers (``spec.replicas.kv_events``, :mod:`saga.service.kv_events`) feed the
replicas' exact caches to the engine; the pool's ``ReplicaAdded`` / ``ReplicaRemoved`` (with
the replica's base URL from the pool) open and close the subscriptions of discovered replicas.
Periodic chores: graph hot reload (``spec.graphs``, :mod:`saga.service.graphs_reload`),
tenant policy hot reload (``spec.tenant_policies``, :mod:`saga.service.tenants_reload`), a
heartbeat in the state store every ``HEARTBEAT_S``, the first before the API ports open (so
operators see the scheduler processes sharing a Redis, and the shared tenant quotas count a
process's sessions only while it is alive) and a sweep ending sessions idle longer than
``limits.idle_session_timeout_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
from collections.abc import Mapping
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry

from saga.clock import Clock, MonotonicClock
from saga.scheduler.api import EngineProtocol, InvalidInput, ReplicaAdded, ReplicaRemoved
from saga.scheduler.engine import Engine
from saga.scheduler.settings import EngineSettings
from saga.service.backend.api import ClientSettings, ClientTimeouts, Discovery, PoolSettings, ReplicaEvent
from saga.service.backend.discovery import EndpointSliceDiscovery, StaticDiscovery
from saga.service.backend.pool import ReplicaPool
from saga.service.config import ConfigError, ReplicaSettings, SchedulerConfig, _build, host_port
from saga.service.core import EngineClient, ServiceCore, default_process_id
from saga.service.graphs_reload import GraphReloader
from saga.service.grpc_api import start_grpc_server
from saga.service.kv_events import KvEventSubscribers
from saga.service.metrics import ServiceMetrics, start_metrics_server
from saga.service.openai_api import start_http_server
from saga.service.state.api import StateStore
from saga.service.state.memory import MemoryStore
from saga.service.tenants_reload import (
    TenantPolicy,
    TenantPolicyReloader,
    effective_tenants,
    set_engine_tenants,
)

log = logging.getLogger(__name__)
HEARTBEAT_S = 5.0  # seconds between state-store heartbeats (TTL is three times this)


def client_settings(
    r: ReplicaSettings, timeouts: ClientTimeouts, environ: Mapping[str, str]
) -> ClientSettings:
    """How the replicas are called: ``spec.replicas`` with the keys read from the environment
    variables it names (:class:`ConfigError` when a named variable is unset or empty)."""
    keys: dict[str, str | None] = {}
    problems: list[tuple[str, str]] = []
    for name in ("api_key_env", "admin_api_key_env"):
        var = getattr(r, name)
        keys[name] = environ.get(var) or None if var else None
        if var and keys[name] is None:
            problems.append((f"spec.replicas.{name}", f"environment variable {var} is not set"))
    if problems:
        raise ConfigError(problems)
    return ClientSettings(
        timeouts=timeouts,
        session_field="session_params" if r.session_field == "session_params" else "top_level",
        api_key=keys["api_key_env"],
        admin_api_key=keys["admin_api_key_env"],
    )


def engine_settings(cfg: SchedulerConfig) -> EngineSettings:
    """``spec.engine`` as :class:`EngineSettings`, with tenant weights and deadline factors
    from ``spec.tenants`` (``spec.engine``'s own maps win where both name a tenant)."""
    problems: list[tuple[str, str]] = []
    settings = _build(EngineSettings, cfg.spec.engine, "spec.engine", problems)
    if problems:
        raise ConfigError(problems)
    assert isinstance(settings, EngineSettings)
    weights = {t.name: t.weight for t in cfg.spec.tenants}
    weights.update(settings.fairness.weights)
    factors = {t.name: t.deadline_factor for t in cfg.spec.tenants if t.deadline_factor > 0}
    factors.update(settings.fairness.slo_factors)
    fairness = dataclasses.replace(settings.fairness, weights=weights, slo_factors=factors)
    settings = dataclasses.replace(settings, fairness=fairness)
    try:
        settings.validate()
    except InvalidInput as exc:
        raise ConfigError([("spec.engine", str(exc).removeprefix("settings."))]) from exc
    return settings


def make_store(cfg: SchedulerConfig, process_id: str) -> StateStore:
    st = cfg.spec.state
    if st.backend == "redis":
        from saga.service.state.redis_store import RedisStore

        return RedisStore(st.redis_url, process_id=process_id, namespace=st.key_prefix.rstrip(":"))
    return MemoryStore(process_id=process_id)


def make_discovery(cfg: SchedulerConfig) -> Discovery:
    r = cfg.spec.replicas
    if r.kubernetes is not None:
        k = r.kubernetes
        return EndpointSliceDiscovery(k.namespace, k.label_selector, port_name=k.port_name, scheme=k.scheme)
    return StaticDiscovery(list(r.static))


class Service:
    """One scheduler process. ``await start()``, then ``await stop()``."""

    def __init__(
        self,
        config: SchedulerConfig,
        *,
        registry: CollectorRegistry | None = None,
        clock: Clock | None = None,
        engine: EngineProtocol | None = None,
        store: StateStore | None = None,
        process_id: str | None = None,
        discovery: Discovery | None = None,
    ) -> None:
        self.config = config
        self.registry = registry if registry is not None else CollectorRegistry()
        self.clock = clock or MonotonicClock()
        self.metrics = ServiceMetrics(self.registry)
        self.engine = engine or Engine(self.clock, engine_settings(config))
        self._store_arg = store
        # Where replicas come from; None: from spec.replicas (make_discovery).
        self._discovery_arg = discovery
        self.process_id = process_id
        self.core: ServiceCore | None = None
        self.pool: ReplicaPool | None = None
        self.store: StateStore | None = None
        self.grpc_port = 0
        self.http_port = 0
        self.metrics_port = 0
        self._grpc: Any = None
        self._http: web.AppRunner | None = None
        self._metrics: web.AppRunner | None = None
        self._chores: list[asyncio.Task[None]] = []
        # Graph hot reload (spec.graphs); None when no source is configured.
        self.graphs: GraphReloader | None = None
        # KV event subscribers (spec.replicas.kv_events); None without endpoints or discovered_port.
        self.kv_events: KvEventSubscribers | None = None
        # Tenant policy hot reload (spec.tenant_policies); None when no folder is configured.
        self.tenant_policies: TenantPolicyReloader | None = None
        # spec.tenants and the engine's tenant maps as configured: what policies apply over.
        self._base_tenants = list(config.spec.tenants)
        base = self.engine.settings.fairness if isinstance(self.engine, Engine) else None
        self._base_weights: dict[str, float] = dict(base.weights) if base else {}
        self._base_factors: dict[str, float] = dict(base.slo_factors) if base else {}

    async def start(self) -> None:
        cfg = self.config
        spec = cfg.spec
        r = spec.replicas
        timeouts = ClientTimeouts(
            connect_s=r.connect_timeout_s,
            total_s=r.request_timeout_s,
            first_byte_s=min(60.0, r.request_timeout_s),
            probe_s=r.health_timeout_s,
        )
        # before anything is started: a key variable the config names but the environment lacks
        # is a configuration error, not a half-started service
        replica_clients = client_settings(r, timeouts, os.environ)
        pid = self.process_id or default_process_id()
        self.store = self._store_arg or make_store(cfg, pid)
        core = ServiceCore(
            cfg,
            self.engine,
            self.clock,
            self.store,
            self._client,
            self.metrics,
            process_id=pid,
            max_input_tokens=lambda: self.pool.max_input_tokens() if self.pool is not None else None,
        )
        self.core = core
        self.metrics.tenant_targets({t.name: t.attainment_target for t in spec.tenants})
        g = spec.graphs
        if g.directory is not None or g.from_store:
            if isinstance(self.engine, Engine):
                self.graphs = GraphReloader(g, self.engine.set_predictor, store=self.store)
                await self.graphs.poll()  # graphs in place before the first call
            else:
                log.warning("spec.graphs ignored: the injected engine has no set_predictor")
        if spec.tenant_policies.directory is not None:
            self.tenant_policies = TenantPolicyReloader(
                spec.tenant_policies, self.apply_tenant_policies, metrics=self.metrics
            )
            await self.tenant_policies.poll()  # policies in force before the first call
        kv = r.kv_events
        if kv.endpoints or kv.discovered_port:
            self.kv_events = KvEventSubscribers(
                kv, spec.tokens.block_size, core.on_replica_cache, self.metrics
            )
        self.pool = ReplicaPool(
            self._discovery_arg or make_discovery(cfg),
            self._on_replica_event,
            settings=PoolSettings(load_interval_s=r.poll_interval_s),
            client_settings=replica_clients,
        )
        # Alive in the store before the first request: other processes count this one's
        # quota counts only while its heartbeat holds (saga.service.state.redis_quotas).
        await self._beat()
        await core.start()
        if self.kv_events is not None:
            self.kv_events.start()
        await self.pool.start()
        self._grpc, self.grpc_port = await start_grpc_server(core, *host_port(spec.listen.grpc))
        self._http, self.http_port = await start_http_server(core, *host_port(spec.listen.http))
        if spec.listen.metrics:
            host, port = host_port(spec.listen.metrics)
            self._metrics = await start_metrics_server(self.registry, host, port)
            self.metrics_port = _bound_port(self._metrics, port)
        self._chores = [
            asyncio.create_task(self._heartbeat(), name="saga-heartbeat"),
            asyncio.create_task(self._sweep(), name="saga-idle-sweep"),
        ]
        if self.graphs is not None:
            self._chores.append(asyncio.create_task(self.graphs.run(), name="saga-graph-reload"))
        if self.tenant_policies is not None:
            self._chores.append(
                asyncio.create_task(self.tenant_policies.run(), name="saga-tenant-policy-reload")
            )

    def apply_tenant_policies(self, policies: dict[str, TenantPolicy]) -> None:
        """Put ``policies`` (tenant → policy, from the reloader) in force: weights and deadline
        factors go to the engine from its next decision, SLOs to sessions started from now on,
        quotas and TTFT objectives to the next request, attainment targets to the exported
        gauge (``spec.tenants``, which the core reads per request). A tenant whose policy is
        gone gets its configured ``spec.tenants`` entry (or the defaults) back."""
        self.config.spec.tenants = effective_tenants(self._base_tenants, policies)
        weights = dict(self._base_weights)
        weights.update({name: p.weight for name, p in policies.items()})
        factors = dict(self._base_factors)
        for name, p in policies.items():
            if p.deadline_factor > 0:  # else the configured factor (or the engine's default)
                factors[name] = p.deadline_factor
        if not set_engine_tenants(self.engine, weights, factors) and policies:
            log.warning("tenant weights not applied: the injected engine is not saga's Engine")
        self.metrics.tenant_targets({t.name: t.attainment_target for t in self.config.spec.tenants})

    def _on_replica_event(self, event: ReplicaEvent) -> None:
        assert self.core is not None
        self.core.on_replica_event(event)
        if self.kv_events is None:
            return
        if isinstance(event, ReplicaAdded):  # the engine's view starts empty
            state = self.pool.replicas().get(event.replica_id) if self.pool is not None else None
            info = state.info if state is not None else None
            self.kv_events.on_replica_added(
                event.replica_id,
                state.spec.base_url if state is not None else None,
                state.spec.named_ports if state is not None else (),
                info.attn_dp_size if info is not None else 1,
            )
        elif isinstance(event, ReplicaRemoved):
            self.kv_events.on_replica_removed(event.replica_id)

    def _client(self, replica_id: str) -> EngineClient | None:
        if self.pool is None:
            return None
        try:
            return self.pool.client(replica_id)
        except Exception:  # UnknownReplica: removed meanwhile
            return None

    async def wait_replicas(self, n: int, timeout_s: float = 10.0) -> None:
        """Wait until ``n`` replicas are announced and healthy (startup, tests)."""
        async with asyncio.timeout(timeout_s):
            while self.pool is None or len(self.pool.healthy_ids()) < n:
                await asyncio.sleep(0.01)

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            await self._beat()

    async def _beat(self) -> None:
        assert self.store is not None
        assert self.core is not None
        with contextlib.suppress(Exception):
            await self.store.heartbeat(self.core.process_id, 3 * HEARTBEAT_S)

    async def _sweep(self) -> None:
        assert self.core is not None
        limit = self.config.spec.limits.idle_session_timeout_s
        if limit <= 0:
            return
        while True:
            await asyncio.sleep(min(30.0, max(0.05, limit / 4)))
            n = await self.core.sweep_idle()
            if n:
                log.info("ended %d idle sessions", n)

    async def stop(self) -> None:
        for t in self._chores:
            t.cancel()
        await asyncio.gather(*self._chores, return_exceptions=True)
        if self._grpc is not None:
            await self._grpc.stop(grace=1.0)
        if self._http is not None:
            await self._http.cleanup()
        if self._metrics is not None:
            await self._metrics.cleanup()
        if self.core is not None:
            await self.core.stop()
        if self.pool is not None:
            await self.pool.stop()
        if self.kv_events is not None:
            await self.kv_events.stop()
        if self.store is not None and self._store_arg is None:
            await self.store.close()


def _bound_port(runner: web.AppRunner, default: int) -> int:
    for addr in runner.addresses:
        if isinstance(addr, tuple) and len(addr) >= 2:
            return int(addr[1])
    return default
