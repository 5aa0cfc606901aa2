"""In-memory state store: the embedded default for a single scheduler process.

Plain dictionaries, no locks: every method runs to completion on the event loop without
awaiting anything, so each compare-and-set is atomic with respect to other coroutines.

Tunables
--------

``binding_ttl_s`` (default 86,400 s = 24 h): a binding that is not written for this long is
forgotten (an abandoned session whose client never called ``end``). Refreshed on every
successful :meth:`MemoryStore.bind`. Expired entries are dropped lazily on read and by a
sweep every ``sweep_every`` (1,024) writes, so memory stays bounded without a timer task.
``wall``: the Unix-time source (``time.time``), injected so tests control expiry.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from saga.service.state.api import (
    BindOutcome,
    GraphDocument,
    InvalidState,
    SessionBinding,
    TenantUsage,
)

DEFAULT_BINDING_TTL_S = 86_400.0


def check_id(kind: str, value: str) -> None:
    if not isinstance(value, str) or not value:
        raise InvalidState(f"{kind} must be a non-empty string, got {value!r}")


def check_usage(service_s: float, completed_tasks: int, task_time_s: float) -> None:
    if service_s < 0 or completed_tasks < 0 or task_time_s < 0:
        raise InvalidState(
            "usage increments must be >= 0, got "
            f"service_s={service_s}, completed_tasks={completed_tasks}, task_time_s={task_time_s}"
        )


class MemoryStore:
    """A :class:`~saga.service.state.api.StateStore` in process memory."""

    def __init__(
        self,
        *,
        process_id: str = "local",
        binding_ttl_s: float = DEFAULT_BINDING_TTL_S,
        wall: Callable[[], float] = time.time,
        sweep_every: int = 1024,
    ) -> None:
        if binding_ttl_s <= 0:
            raise ValueError(f"binding_ttl_s must be > 0 seconds, got {binding_ttl_s}")
        self.process_id = process_id
        self.binding_ttl_s = binding_ttl_s
        self._wall = wall
        self._sweep_every = max(1, sweep_every)
        self._writes = 0
        self._bindings: dict[str, tuple[SessionBinding, float]] = {}  # id -> (binding, expires_at)
        self._usage: dict[str, TenantUsage] = {}
        self._graphs: dict[str, GraphDocument] = {}
        self._heartbeats: dict[str, float] = {}
        self._closed = False

    # ---- session bindings

    async def get_binding(self, session_id: str) -> SessionBinding | None:
        self._check_open()
        return self._get(session_id)

    def _get(self, session_id: str) -> SessionBinding | None:
        entry = self._bindings.get(session_id)
        if entry is None:
            return None
        binding, expires_at = entry
        if expires_at <= self._wall():
            del self._bindings[session_id]
            return None
        return binding

    async def bind(self, binding: SessionBinding, *, expected_version: int) -> BindOutcome:
        self._check_open()
        return self.bind_now(binding, expected_version=expected_version)

    def bind_now(self, binding: SessionBinding, *, expected_version: int) -> BindOutcome:
        """Synchronous :meth:`bind` (used by RedisStore's local copy)."""
        check_id("session_id", binding.session_id)
        if expected_version < 0:
            raise InvalidState(f"expected_version must be >= 0, got {expected_version}")
        current = self._get(binding.session_id)
        current_version = current.version if current is not None else 0
        if current_version != expected_version:
            return BindOutcome(binding=current, won=False)
        now = self._wall()
        stored = replace(
            binding,
            version=expected_version + 1,
            owner=binding.owner or self.process_id,
            updated_at=now,
        )
        self._bindings[binding.session_id] = (stored, now + self.binding_ttl_s)
        self._count_write()
        return BindOutcome(binding=stored, won=True)

    def put_now(self, binding: SessionBinding) -> None:
        """Store ``binding`` as is, version included (a cache adopting the shared copy)."""
        self._bindings[binding.session_id] = (binding, self._wall() + self.binding_ttl_s)

    async def delete_binding(self, session_id: str, *, expected_version: int | None = None) -> bool:
        self._check_open()
        return self.delete_now(session_id, expected_version=expected_version)

    def delete_now(self, session_id: str, *, expected_version: int | None = None) -> bool:
        current = self._get(session_id)
        if current is None:
            return False
        if expected_version is not None and current.version != expected_version:
            return False
        del self._bindings[session_id]
        return True

    async def list_bindings(self, replica_id: str | None = None) -> list[SessionBinding]:
        self._check_open()
        self._sweep()
        return [b for b, _ in self._bindings.values() if replica_id is None or b.replica_id == replica_id]

    # ---- fair share

    async def add_usage(
        self,
        tenant: str,
        *,
        service_s: float = 0.0,
        completed_tasks: int = 0,
        task_time_s: float = 0.0,
    ) -> TenantUsage:
        self._check_open()
        return self.add_usage_now(
            tenant, service_s=service_s, completed_tasks=completed_tasks, task_time_s=task_time_s
        )

    def add_usage_now(
        self, tenant: str, *, service_s: float, completed_tasks: int, task_time_s: float
    ) -> TenantUsage:
        check_id("tenant", tenant)
        check_usage(service_s, completed_tasks, task_time_s)
        old = self._usage.get(tenant, TenantUsage(tenant))
        new = TenantUsage(
            tenant,
            attained_service_s=old.attained_service_s + service_s,
            completed_tasks=old.completed_tasks + completed_tasks,
            task_time_s=old.task_time_s + task_time_s,
        )
        self._usage[tenant] = new
        return new

    def set_usage_now(self, usage: TenantUsage) -> None:
        self._usage[usage.tenant] = usage

    async def get_usage(self, tenant: str) -> TenantUsage:
        self._check_open()
        check_id("tenant", tenant)
        return self._usage.get(tenant, TenantUsage(tenant))

    async def all_usage(self) -> dict[str, TenantUsage]:
        self._check_open()
        return dict(self._usage)

    # ---- graph documents

    async def put_graph(
        self, agent_type: str, document: dict[str, Any], *, expected_version: int | None = None
    ) -> int:
        self._check_open()
        check_id("agent_type", agent_type)
        if not isinstance(document, dict):
            raise InvalidState(f"graph document of {agent_type!r} must be a JSON object")
        current = self._graphs.get(agent_type)
        version = current.version if current is not None else 0
        if expected_version is not None and expected_version != version:
            return version
        self._graphs[agent_type] = GraphDocument(agent_type, version + 1, copy.deepcopy(document))
        return version + 1

    def put_graph_now(self, doc: GraphDocument) -> None:
        self._graphs[doc.agent_type] = doc

    async def get_graph(self, agent_type: str) -> GraphDocument | None:
        self._check_open()
        doc = self._graphs.get(agent_type)
        if doc is None:
            return None
        return GraphDocument(doc.agent_type, doc.version, copy.deepcopy(doc.document))

    async def graph_versions(self) -> dict[str, int]:
        self._check_open()
        return {k: d.version for k, d in self._graphs.items()}

    async def delete_graph(self, agent_type: str, *, expected_version: int | None = None) -> bool:
        self._check_open()
        check_id("agent_type", agent_type)
        return self.delete_graph_now(agent_type, expected_version=expected_version)

    def delete_graph_now(self, agent_type: str, *, expected_version: int | None = None) -> bool:
        current = self._graphs.get(agent_type)
        if current is None:
            return False
        if expected_version is not None and current.version != expected_version:
            return False
        del self._graphs[agent_type]
        return True

    # ---- heartbeats

    async def heartbeat(self, process_id: str, ttl_s: float) -> None:
        self._check_open()
        check_id("process_id", process_id)
        if ttl_s <= 0:
            raise InvalidState(f"heartbeat ttl_s must be > 0 seconds, got {ttl_s}")
        self._heartbeats[process_id] = self._wall() + ttl_s

    async def live_processes(self) -> list[str]:
        self._check_open()
        now = self._wall()
        for pid in [p for p, exp in self._heartbeats.items() if exp <= now]:
            del self._heartbeats[pid]
        return sorted(self._heartbeats)

    # ---- lifecycle

    async def ping(self) -> bool:
        return not self._closed

    async def close(self) -> None:
        self._closed = True

    # ---- internals

    def _check_open(self) -> None:
        if self._closed:
            raise InvalidState("the store is closed")

    def _count_write(self) -> None:
        self._writes += 1
        if self._writes % self._sweep_every == 0:
            self._sweep()

    def _sweep(self) -> None:
        now = self._wall()
        for sid in [s for s, (_, exp) in self._bindings.items() if exp <= now]:
            del self._bindings[sid]
