"""The state store contract: what scheduler processes share.

One interface, two implementations: :class:`~saga.service.state.memory.MemoryStore` (the
embedded default, one process) and :class:`~saga.service.state.redis_store.RedisStore`
(several scheduler processes behind one load balancer share it). See ``docs/state.md`` for
what is authoritative where.

What is stored
--------------

* **Session bindings** (``session_id`` → :class:`SessionBinding`): the tenant and agent type
  of a session, the replica it is bound to, until when its KV is pinned and the SGLang
  engine session that keeps it. Every write goes through :meth:`StateStore.bind`, an atomic
  compare-and-set on the binding's ``version``: ``expected_version=0`` creates the binding
  only if none exists; ``expected_version=v`` replaces version ``v`` only. The loser of a
  race gets ``won=False`` and the binding that is stored, which it adopts. So two processes
  can never bind one session to two replicas: the first binder wins.
* **Fair-share accounting** per tenant (:class:`TenantUsage`): attained service, completed
  tasks and the summed task completion time, as atomic increments (order-free, so any
  process may add its share without reading first).
* **Graph documents** (agent type → versioned AEG JSON, :class:`GraphDocument`): the
  operator or a scheduler publishes a new document; others poll
  :meth:`StateStore.graph_versions` (one cheap round trip) and reload the types whose
  version changed. :meth:`StateStore.delete_graph` removes a type (its ``AgentWorkflow`` was
  deleted): it leaves :meth:`~StateStore.graph_versions`, so pollers drop it; a later put
  starts again at version 1.
* **Process heartbeats**: each scheduler process refreshes ``heartbeat(process_id, ttl_s)``;
  :meth:`StateStore.live_processes` lists the others (for ownership of periodic work and for
  operators).

Times
-----

``pinned_until`` and heartbeat expiry are **Unix epoch seconds** (``time.time()``): they are
shared between processes, whose monotonic clocks have different origins. The service
converts from its engine clock at the edge. All durations are seconds.

Errors
------

:class:`StateError` is the base; :class:`StateUnavailable` means the backing store cannot
be reached (a Redis store configured to fail closed raises it; one configured to degrade
serves from its local copy and raises nothing, see ``docs/state.md``);
:class:`InvalidState` is bad input (empty ids, negative increments) or a stored value that
cannot be decoded (named with its key).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

# --------------------------------------------------------------------------- errors


class StateError(Exception):
    """Base of the state store's typed errors."""


class StateUnavailable(StateError):
    """The backing store cannot be reached (connection refused, timed out)."""


class InvalidState(StateError):
    """Bad arguments, or a stored value that cannot be decoded (the message names the key)."""


# --------------------------------------------------------------------------- records


@dataclass(frozen=True, slots=True)
class SessionBinding:
    """Where a session lives.

    ``replica_id`` None: the session is known but not placed yet. ``pinned_until`` None: its
    KV is not pinned (Unix epoch seconds otherwise). ``engine_session``: the SGLang session id
    opened on ``replica_id`` to keep the KV (None when none is open). ``version`` is assigned
    by the store: 1 on creation, +1 on every successful :meth:`StateStore.bind`; callers pass
    the version they read as ``expected_version``. ``owner`` is the process id of the last
    writer (diagnostics only). ``updated_at`` is the store's Unix time of the last write.
    """

    session_id: str
    tenant: str
    agent_type: str
    replica_id: str | None = None
    pinned_until: float | None = None
    engine_session: str | None = None
    version: int = 0
    owner: str = ""
    updated_at: float = 0.0


@dataclass(frozen=True, slots=True)
class BindOutcome:
    """Result of a compare-and-set on a binding.

    ``won`` True: the caller's write is what is stored now (``binding`` carries the new
    version). ``won`` False: the stored binding had another version (or existed already on a
    create); ``binding`` is what is stored (None if it was deleted meanwhile): adopt it.
    """

    binding: SessionBinding | None
    won: bool


@dataclass(frozen=True, slots=True)
class TenantUsage:
    """Fair-share totals of one tenant, summed over every scheduler process.

    ``attained_service_s``: GPU service the tenant's calls received (seconds of replica time,
    the unit AFS compares). ``completed_tasks``: sessions that ended. ``task_time_s``: their
    summed completion times (seconds), so mean completion time = task_time_s / completed_tasks.
    """

    tenant: str
    attained_service_s: float = 0.0
    completed_tasks: int = 0
    task_time_s: float = 0.0


@dataclass(frozen=True, slots=True)
class GraphDocument:
    """An agent type's AEG as JSON, with a store-assigned version (1, 2, ...)."""

    agent_type: str
    version: int
    document: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- protocol


@runtime_checkable
class StateStore(Protocol):
    """What the service needs from shared state. Every method is a coroutine.

    Implementations must pass the conformance suite in ``tests/contract/service_state/``.
    """

    # ---- session bindings

    async def get_binding(self, session_id: str) -> SessionBinding | None:
        """The stored binding of ``session_id``, or None."""
        ...

    async def bind(self, binding: SessionBinding, *, expected_version: int) -> BindOutcome:
        """Atomically store ``binding`` if the stored version equals ``expected_version``.

        ``expected_version=0``: create only if absent. The stored record gets
        ``version = expected_version + 1``; ``binding.version`` is ignored. A store may
        refresh an expiry (abandoned sessions are forgotten after its ``binding_ttl_s``).
        """
        ...

    async def delete_binding(self, session_id: str, *, expected_version: int | None = None) -> bool:
        """Delete the binding (only at ``expected_version`` when given). True if deleted."""
        ...

    async def list_bindings(self, replica_id: str | None = None) -> list[SessionBinding]:
        """Every stored binding (only those on ``replica_id`` when given). For recovery and
        operators, not the hot path (a Redis store scans)."""
        ...

    # ---- fair share

    async def add_usage(
        self,
        tenant: str,
        *,
        service_s: float = 0.0,
        completed_tasks: int = 0,
        task_time_s: float = 0.0,
    ) -> TenantUsage:
        """Atomically add to ``tenant``'s totals; return the totals after the addition."""
        ...

    async def get_usage(self, tenant: str) -> TenantUsage:
        """``tenant``'s totals (zeros for an unknown tenant)."""
        ...

    async def all_usage(self) -> dict[str, TenantUsage]:
        """Every tenant's totals."""
        ...

    # ---- graph documents

    async def put_graph(
        self, agent_type: str, document: dict[str, Any], *, expected_version: int | None = None
    ) -> int:
        """Store a new version of ``agent_type``'s AEG; return its version.

        With ``expected_version`` the write happens only if the stored version equals it
        (0: absent); otherwise nothing is written and the stored version is returned, so the
        write happened exactly when the result is ``expected_version + 1``.
        """
        ...

    async def get_graph(self, agent_type: str) -> GraphDocument | None:
        """The latest document of ``agent_type``, or None."""
        ...

    async def graph_versions(self) -> dict[str, int]:
        """agent type → latest version, for change detection in one round trip."""
        ...

    async def delete_graph(self, agent_type: str, *, expected_version: int | None = None) -> bool:
        """Delete ``agent_type``'s document (only at ``expected_version`` when given).

        True if deleted. The type leaves :meth:`graph_versions` in the same atomic step; the
        next :meth:`put_graph` of it starts at version 1 again (expect 0: absent).
        """
        ...

    # ---- process heartbeats

    async def heartbeat(self, process_id: str, ttl_s: float) -> None:
        """Mark ``process_id`` alive for ``ttl_s`` seconds from now."""
        ...

    async def live_processes(self) -> list[str]:
        """Process ids whose heartbeat has not expired, sorted."""
        ...

    # ---- lifecycle

    async def ping(self) -> bool:
        """True if the backing store answers now (always True for an in-memory store)."""
        ...

    async def close(self) -> None:
        """Release connections. The store is unusable afterwards."""
        ...
