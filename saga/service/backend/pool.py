"""The replica pool: which replicas exist, whether they are healthy, how loaded they are.

Algorithm
---------

* **Discovery** (every ``discovery_interval_s``): the pool asks its :class:`Discovery` for
  the current replicas. New ids get a client and a monitor task; ids that vanished (or whose
  URL or named ports changed, e.g. a pod rescheduled with a new IP, a KV event port moved) are
  stopped and reported ``ReplicaRemoved`` (if they had been announced), then announced anew.
  A discovery error keeps the previous list and is logged: a flaky API server never empties
  the pool.
* **Announce**: a new replica is reported ``ReplicaAdded`` (with ``kv_total_tokens``,
  ``max_running_requests`` and ``page_size`` from ``/server_info``) only after it answered
  a health probe and ``/server_info``; until then it receives no calls. A replica that says
  it cannot keep sessions' KV across tool gaps (no ``--enable-session-radix-cache``, or SGLang
  before 0.5.17: ``retention_problems``) is announced all the same, with a warning and
  ``keeps_sessions=False``, so the engine pins nothing there.
* **Health** (every ``health_interval_s``): ``GET /health`` (or ``/health_generate``).
  Load polls count too: a ``/v1/loads`` that fails or returns garbage is a failed probe.
  ``unhealthy_after`` consecutive failures of either kind → ``ReplicaHealth(healthy=False)``
  with the reason logged; ``healthy_after`` consecutive clean rounds (health ok and the last
  load poll ok) → ``ReplicaHealth(healthy=True)``. Events are sent on transitions only.
* **Load** (every ``load_interval_s``): ``GET /v1/loads`` → ``ReplicaLoad`` (DP ranks summed).
* **Metrics** (every ``metrics_interval_s``, 0 = off): ``GET /metrics`` → the latest
  ``sglang:*`` values in :attr:`ReplicaState.metrics` (dashboards, debugging), no event.

Nothing a replica answers can crash the pool: every probe error is caught, counted and
logged; an exception raised by the event sink is logged and swallowed. Events reach the sink
in order per replica, synchronously on the pool's event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp

from saga.scheduler.api import ReplicaAdded, ReplicaHealth, ReplicaRemoved, UnknownReplica
from saga.service.backend.api import (
    BackendError,
    ClientSettings,
    Discovery,
    EventSink,
    LoadReport,
    PoolSettings,
    ReplicaEvent,
    ReplicaSpec,
    ServerInfo,
    retention_problems,
)
from saga.service.backend.client import SGLangClient

log = logging.getLogger(__name__)


@dataclass
class ReplicaState:
    """What the pool knows of one replica (a live view; read it, do not mutate it)."""

    spec: ReplicaSpec
    client: SGLangClient
    announced: bool = False
    healthy: bool = False
    info: ServerInfo | None = None
    load: LoadReport | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    last_error: str = ""
    health_fails: int = 0
    load_fails: int = 0
    ok_streak: int = 0
    task: asyncio.Task[None] | None = None


class ReplicaPool:
    """Holds the replicas of one scheduler process (see the module docstring)."""

    def __init__(
        self,
        discovery: Discovery,
        sink: EventSink,
        *,
        settings: PoolSettings | None = None,
        client_settings: ClientSettings | None = None,
        http: aiohttp.ClientSession | None = None,
        client_factory: Callable[[ReplicaSpec, aiohttp.ClientSession, ClientSettings], SGLangClient]
        | None = None,
    ) -> None:
        self.discovery = discovery
        self.settings = settings or PoolSettings()
        self.client_settings = client_settings or ClientSettings()
        self._sink = sink
        self._http = http
        self._owns_http = http is None
        self._factory = client_factory or (
            lambda spec, session, cs: SGLangClient(
                spec.replica_id, spec.base_url, session=session, settings=cs
            )
        )
        self._replicas: dict[str, ReplicaState] = {}
        self._discovery_task: asyncio.Task[None] | None = None
        self._refresh_lock = asyncio.Lock()

    # ---- queries

    def client(self, replica_id: str) -> SGLangClient:
        """The client of an announced replica; :class:`UnknownReplica` otherwise."""
        state = self._replicas.get(replica_id)
        if state is None or not state.announced:
            raise UnknownReplica(f"no announced replica {replica_id!r}")
        return state.client

    def replicas(self) -> dict[str, ReplicaState]:
        return dict(self._replicas)

    def healthy_ids(self) -> list[str]:
        return sorted(r for r, s in self._replicas.items() if s.announced and s.healthy)

    def max_input_tokens(self) -> int | None:
        """The longest prompt any announced replica accepts (``ServerInfo.max_input_tokens``;
        one unhealthy for now counts: a call may wait for it); None while none reports one."""
        limits = [
            s.info.max_input_tokens
            for s in self._replicas.values()
            if s.announced and s.info is not None and s.info.max_input_tokens is not None
        ]
        return max(limits, default=None)

    # ---- lifecycle

    async def start(self) -> None:
        """Discover once (so replicas are known when this returns), then keep watching."""
        if self._http is None:
            self._http = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, limit_per_host=0, keepalive_timeout=30)
            )
        await self.refresh()
        self._discovery_task = asyncio.create_task(self._discovery_loop(), name="saga-pool-discovery")

    async def stop(self) -> None:
        tasks = [self._discovery_task] + [s.task for s in self._replicas.values()]
        for t in tasks:
            if t is not None:
                t.cancel()
        for t in tasks:
            if t is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await t
        self._replicas.clear()
        await self.discovery.close()
        if self._owns_http and self._http is not None:
            await self._http.close()

    async def wait_announced(self, replica_ids: list[str], timeout_s: float) -> None:
        """Wait until every id in ``replica_ids`` is announced (startup, tests)."""
        async with asyncio.timeout(timeout_s):
            while not all(
                self._replicas.get(r) is not None and self._replicas[r].announced for r in replica_ids
            ):
                await asyncio.sleep(min(0.01, self.settings.health_interval_s))

    # ---- discovery

    async def _discovery_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.discovery_interval_s)
            await self.refresh()

    async def refresh(self) -> None:
        """One discovery round: start monitors for new replicas, remove vanished ones."""
        async with self._refresh_lock:
            try:
                specs = await self.discovery.discover()
            except Exception as exc:
                log.warning(
                    "replica discovery failed, keeping %d known replicas: %s", len(self._replicas), exc
                )
                return
            wanted = {s.replica_id: s for s in specs}
            for rid, state in list(self._replicas.items()):
                if rid not in wanted or wanted[rid] != state.spec:  # gone, moved or re-ported
                    await self._remove(rid)
            for rid, spec in wanted.items():
                if rid not in self._replicas:
                    self._add(spec)

    def _add(self, spec: ReplicaSpec) -> None:
        assert self._http is not None, "start() the pool first"
        state = ReplicaState(spec, self._factory(spec, self._http, self.client_settings))
        self._replicas[spec.replica_id] = state
        state.task = asyncio.create_task(self._monitor(state), name=f"saga-pool-{spec.replica_id}")
        log.info("replica %s discovered at %s", spec.replica_id, spec.base_url)

    async def _remove(self, rid: str) -> None:
        state = self._replicas.pop(rid)
        if state.task is not None:
            state.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await state.task
        log.warning("replica %s (%s) removed: no longer discovered", rid, state.spec.base_url)
        if state.announced:
            self._emit(ReplicaRemoved(rid))

    # ---- monitoring

    async def _monitor(self, s: ReplicaState) -> None:
        loop = asyncio.get_running_loop()
        cfg = self.settings
        next_health = next_load = next_metrics = loop.time()
        while True:
            now = loop.time()
            if now >= next_health:
                await self._probe_health(s)
                next_health = now + cfg.health_interval_s
            if s.announced and now >= next_load:
                await self._poll_load(s)
                next_load = now + cfg.load_interval_s
            if s.announced and s.healthy and cfg.metrics_interval_s > 0 and now >= next_metrics:
                await self._poll_metrics(s)
                next_metrics = now + cfg.metrics_interval_s
            due = min(next_health, next_load if s.announced else next_health)
            await asyncio.sleep(max(0.0, due - loop.time()))

    async def _probe_health(self, s: ReplicaState) -> None:
        try:
            ok = await s.client.health(generate=self.settings.health_path == "/health_generate")
            reason = "" if ok else f"{self.settings.health_path} returned an error status"
            if ok and not s.announced:
                s.info = await s.client.server_info()
        except BackendError as exc:
            ok, reason = False, str(exc)
        except Exception as exc:  # never let a replica crash the pool
            ok, reason = False, f"unexpected {type(exc).__name__}: {exc}"
        if ok:
            s.health_fails = 0
        else:
            s.health_fails += 1
            s.last_error = reason
        if not s.announced:
            if ok and s.info is not None:
                s.announced = s.healthy = True
                s.ok_streak = 1
                log.info("replica %s ready: %s", s.spec.replica_id, s.info)
                problems = retention_problems(s.info)
                for problem in problems:
                    log.warning(
                        "replica %s %s: no KV pinned there (docs/backend.md)", s.spec.replica_id, problem
                    )
                self._emit(
                    ReplicaAdded(
                        s.spec.replica_id,
                        kv_total_tokens=s.info.kv_total_tokens,
                        max_running_requests=s.info.max_running_requests,
                        page_size=s.info.page_size,
                        keeps_sessions=not problems,
                    )
                )
            elif s.health_fails in (1, 10) or s.health_fails % 60 == 0:
                log.warning("replica %s not ready yet: %s", s.spec.replica_id, reason)
            return
        self._judge(s, clean_round=ok and s.load_fails == 0)

    async def _poll_load(self, s: ReplicaState) -> None:
        try:
            report = await s.client.loads()
        except BackendError as exc:
            s.load_fails += 1
            s.last_error = f"/v1/loads: {exc}"
            self._judge(s, clean_round=False)
            return
        except Exception as exc:
            s.load_fails += 1
            s.last_error = f"/v1/loads: unexpected {type(exc).__name__}: {exc}"
            self._judge(s, clean_round=False)
            return
        s.load_fails = 0
        s.load = report
        self._emit(report.to_event(s.spec.replica_id))

    async def _poll_metrics(self, s: ReplicaState) -> None:
        try:
            s.metrics = await s.client.metrics()
        except Exception as exc:  # metrics only feed dashboards: log, do not judge health
            log.debug("replica %s /metrics failed: %s", s.spec.replica_id, exc)

    def _judge(self, s: ReplicaState, *, clean_round: bool) -> None:
        cfg = self.settings
        s.ok_streak = s.ok_streak + 1 if clean_round else 0
        failing = max(s.health_fails, s.load_fails) >= cfg.unhealthy_after
        if s.healthy and failing:
            s.healthy = False
            log.warning("replica %s unhealthy: %s", s.spec.replica_id, s.last_error)
            self._emit(ReplicaHealth(s.spec.replica_id, healthy=False))
        elif not s.healthy and not failing and s.ok_streak >= cfg.healthy_after:
            s.healthy = True
            log.warning("replica %s healthy again", s.spec.replica_id)
            self._emit(ReplicaHealth(s.spec.replica_id, healthy=True))

    def _emit(self, event: ReplicaEvent) -> None:
        try:
            self._sink(event)
        except Exception:
            log.exception("replica event sink failed on %r", event)
