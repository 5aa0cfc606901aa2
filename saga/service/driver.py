"""The engine driver: feeds events to the engine and carries out the actions it returns.

Part of the service core (:class:`saga.service.core.ServiceCore` inherits it). Every event goes
through :meth:`EngineDriver._engine`, which times the decision (``saga_engine_decision_seconds``),
applies the actions and wakes the tick task:

- ``Dispatch`` resolves the waiting call's future (or, when the call is already running, is
  kept as ``redispatch``: the engine moved it because its replica was removed);
- ``Reject`` fails the waiting call with the mapped error (:func:`core_types.rejection`);
- ``Defer`` is counted in ``saga_queue_depth`` until the call is dispatched or gives up;
- ``Pin`` / ``Release`` go to the :class:`~saga.service.kv.KvKeeper`;
- ``Steal`` is only counted (the stolen call's ``Dispatch`` follows).

**Tick loop.** One task sleeps until ``engine.next_deadline()`` and is woken by every event
(the deadline may have moved); it survives an engine bug (logged, 10 ms back-off).

**Replica events.** The replica pool's health, load, arrivals and departures update the
metrics and the local health view, then go to the engine. A replica that fails a call before
any byte is marked unhealthy here and re-probed with backoff 0.2 s doubling to 5 s until it
answers (the pool only reports transitions it saw itself).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable
from typing import Any

from saga.clock import Clock
from saga.scheduler.api import (
    Action,
    Defer,
    Dispatch,
    EngineError,
    EngineProtocol,
    Event,
    InvalidInput,
    Pin,
    Reject,
    Release,
    ReplicaAdded,
    ReplicaCache,
    ReplicaHealth,
    ReplicaLoad,
    ReplicaRemoved,
    SessionEnded,
    Steal,
    TenantMismatch,
    UnknownCall,
    UnknownSession,
)
from saga.service.backend.api import BackendError, ReplicaEvent
from saga.service.config import SchedulerConfig
from saga.service.core_types import ClientLookup, Pending, rejection, to_wall
from saga.service.errors import InvalidArgument, NotFound, Rejected
from saga.service.kv import KvKeeper
from saga.service.metrics import ServiceMetrics

log = logging.getLogger(__name__)


class EngineDriver:
    """Engine plumbing shared by the core's parts; the state is set by ``ServiceCore``."""

    config: SchedulerConfig
    engine: EngineProtocol
    clock: Clock
    metrics: ServiceMetrics
    kv: KvKeeper
    _client: ClientLookup
    _pending: dict[str, Pending]
    _wake: asyncio.Event
    _tasks: set[asyncio.Task[Any]]
    _healthy: dict[str, bool]
    _closed: bool

    def _engine(self, event: Event) -> list[Action]:
        t0 = time.perf_counter()
        try:
            actions = self.engine.handle(event)
        finally:
            self.metrics.engine_decision.observe(time.perf_counter() - t0)
        self._apply(actions)
        self.metrics.lane_replicas.set(len(self.engine.lane_replicas))
        self._wake.set()
        return actions

    def _engine_checked(self, event: Event) -> list[Action]:
        """Feed a client's event; the engine's input errors become the service's (mapped once)."""
        try:
            return self._engine(event)
        except (UnknownSession, SessionEnded) as exc:
            raise NotFound(str(exc)) from exc
        except (InvalidInput, TenantMismatch) as exc:
            raise InvalidArgument(str(exc)) from exc

    def on_replica_event(self, event: ReplicaEvent) -> None:
        """The replica pool's sink: health, load, arrivals and departures."""
        m = self.metrics
        if isinstance(event, ReplicaLoad):
            m.replica_load(
                event.replica_id,
                event.running,
                event.waiting,
                event.kv_used_tokens,
                event.kv_total_tokens,
                event.cache_hit_rate,
            )
        elif isinstance(event, ReplicaHealth):
            self._healthy[event.replica_id] = event.healthy
            m.replica_healthy.labels(event.replica_id).set(1 if event.healthy else 0)
        elif isinstance(event, ReplicaAdded):
            self._healthy[event.replica_id] = True
            m.replica_healthy.labels(event.replica_id).set(1)
        elif isinstance(event, ReplicaRemoved):
            self._healthy.pop(event.replica_id, None)
            m.replica_gone(event.replica_id)
        try:
            self._engine(event)
        except EngineError as exc:  # e.g. load for a replica the engine dropped meanwhile
            log.debug("engine ignored %s: %s", type(event).__name__, exc)

    def on_replica_cache(self, event: ReplicaCache) -> bool:
        """A replica's KV events (:mod:`saga.service.kv_events`); False when the engine does
        not know the replica (not announced yet, or removed)."""
        try:
            self._engine(event)
        except EngineError as exc:
            log.debug("engine ignored ReplicaCache: %s", exc)
            return False
        return True

    def _apply(self, actions: list[Action]) -> None:
        self.metrics.actions(actions)
        for a in actions:
            if isinstance(a, Dispatch):
                p = self._pending.get(a.call_id)
                if p is None:
                    continue
                if p.future.done():
                    p.redispatch = a
                    continue
                if p.deferred:
                    p.deferred = False
                    self.metrics.queue_depth.dec()
                p.future.set_result(a)
            elif isinstance(a, Reject):
                p = self._pending.get(a.call_id)
                if p is not None and not p.future.done():
                    if p.deferred:
                        p.deferred = False
                        self.metrics.queue_depth.dec()
                    err = rejection(a)
                    if isinstance(err, Rejected):
                        self.metrics.rejected(p.tenant, err.reason)
                    else:
                        self.metrics.call_done(p.tenant, ok=False)
                    p.future.set_exception(err)
            elif isinstance(a, Defer):
                p = self._pending.get(a.call_id)
                if p is not None and not p.deferred and not p.future.done():
                    p.deferred = True
                    self.metrics.queue_depth.inc()
            elif isinstance(a, Pin):
                self.kv.on_pin(a)
            elif isinstance(a, Release):
                self.kv.on_release(a)
            elif isinstance(a, Steal):
                pass  # counted in metrics; the stolen call's Dispatch follows

    async def _tick_loop(self) -> None:
        while not self._closed:
            deadline = self.engine.next_deadline()
            timeout = None
            if deadline is not None:
                timeout = max(0.0, to_wall(self.clock, deadline - self.clock.now()))
            self._wake.clear()
            if timeout is None or timeout > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout)
                if self._wake.is_set() and (deadline is None or self.clock.now() < deadline):
                    continue  # woken by an event: recompute the deadline
            t0 = time.perf_counter()
            try:
                actions = self.engine.tick()
            except Exception:  # the loop must survive an engine bug; the error is logged
                log.exception("engine tick failed")
                await asyncio.sleep(0.01)
                continue
            finally:
                self.metrics.engine_decision.observe(time.perf_counter() - t0)
            self._apply(actions)
            await asyncio.sleep(0)  # let woken calls run before the next tick

    def _spawn(self, coro: Awaitable[Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _engine_quiet(self, event: Event) -> None:
        """Feed a call-progress event; the engine may have dropped the call (replica removed)."""
        try:
            self._engine(event)
        except (UnknownCall, UnknownSession, SessionEnded) as exc:
            log.debug("engine: %s", exc)

    def _mark_unhealthy(self, replica_id: str) -> None:
        """A replica failed a call before any byte: stop placing there until a probe answers."""
        if self._healthy.get(replica_id, True) and replica_id in self._healthy:
            self.on_replica_event(ReplicaHealth(replica_id, healthy=False))
            self._spawn(self._recheck(replica_id), f"recheck-{replica_id}")

    async def _recheck(self, replica_id: str) -> None:
        """Probe a replica this core marked unhealthy until it answers (the pool only reports
        transitions it saw itself). Backoff 0.2 s doubling to 5 s; gives up when removed."""
        delay = 0.2
        while replica_id in self._healthy and not self._healthy[replica_id]:
            await asyncio.sleep(delay)
            delay = min(5.0, delay * 2)
            client = self._client(replica_id)
            if client is None:
                return
            try:
                ok = await client.health()
            except BackendError:
                continue
            if ok and replica_id in self._healthy and not self._healthy[replica_id]:
                self.on_replica_event(ReplicaHealth(replica_id, healthy=True))
                return
