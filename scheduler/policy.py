"""Policy contracts: what placement and fairness policies see and return.

Placement: ``PlacementPolicy.select(request, replicas) -> replica_id | None``. All hints about
the call travel in one :class:`PlacementRequest`; ``replicas`` are the *eligible* replicas
(the engine has already filtered out unhealthy ones and those whose KV cannot hold the
prompt) seen through the read-only :class:`ReplicaView`. ``None`` means "no replica should
take this now" (the engine then holds the call), never an exception. Policies keep their own
private state (e.g. cache_aware's approximate radix trees) and learn what was dispatched
through ``on_dispatch``; they never emit metrics or actions (the engine returns actions, the
service observes them).

Fairness: ``FairnessPolicy`` decides admission of a session's first call (admit / defer /
reject with a reason), the order in which held calls leave the engine's queues
(``queue_key``: lower first), the SGLang engine priority of a dispatch, and learns from
completed calls and sessions.

Every placement policy passes ``tests/contract/scheduler/test_placement_conformance.py``;
every fairness policy passes ``tests/contract/scheduler/test_fairness_conformance.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from saga.scheduler.api import RejectReason


class ReplicaView(Protocol):
    """Read-only view of one replica as the engine accounts it."""

    @property
    def replica_id(self) -> str: ...
    @property
    def max_running(self) -> int: ...
    @property
    def kv_total(self) -> int: ...
    @property
    def inflight_count(self) -> int:
        """Calls dispatched to the replica and not finished."""
        ...

    @property
    def queued_count(self) -> int:
        """Calls the engine holds for this replica (not dispatched yet)."""
        ...

    @property
    def committed_tokens(self) -> int:
        """KV tokens committed: in-flight contexts + pinned sessions, shared prefixes once."""
        ...

    @property
    def reported_waiting(self) -> int:
        """Waiting requests the replica itself last reported."""
        ...

    @property
    def load(self) -> float:
        """max(slot use, committed KV fraction) + queued / max_running (0 idle, 1 full)."""
        ...

    @property
    def call_s(self) -> float:
        """Mean seconds a call occupies a slot on this replica (EWMA)."""
        ...

    def cached_prefix_tokens(self, block_hashes: Sequence[int], block_size: int) -> int:
        """Tokens of the prompt's leading prefix the replica holds in its cache."""
        ...

    @property
    def inflight_tokens(self) -> int:
        """Prompt + output tokens of the calls in flight (the KV a decode iteration reads)."""
        ...

    @property
    def inflight_urgency(self) -> float:
        """Sum of the deadline urgency of the calls in flight (PlacementRequest.urgency)."""
        ...

    def est_wait_s(self, need_tokens: int = 0) -> float:
        """Modelled seconds a call needing ``need_tokens`` of KV placed here now waits to run."""
        ...


@dataclass(frozen=True, slots=True)
class PlacementRequest:
    """Everything a placement policy may use about one call (one record, all hints)."""

    call_id: str
    session_id: str | None
    tenant: str
    agent_type: str
    prompt_tokens: int
    max_new_tokens: int
    block_hashes: tuple[int, ...] = ()
    block_size: int = 0
    home: str | None = None  # replica holding the session's KV (last call's replica)
    pinned: bool = False  # the session's KV is pinned on ``home``
    group: tuple[str, ...] = ()  # replicas of the parent / siblings (sub-agent batching)
    first_call: bool = False
    routing_key: str = ""  # session id (or call id without a session): sticky hashing key
    now: float = 0.0
    remaining_calls: float = 0.0  # the session's expected LLM calls after this one (predictor)
    urgency: float = 1.0  # its tenant's deadline urgency, as counted in ReplicaView.inflight_urgency


class PlacementPolicy(Protocol):
    name: str

    def select(self, request: PlacementRequest, replicas: Sequence[ReplicaView]) -> str | None:
        """The replica to place ``request`` on, or None when none should take it now."""
        ...

    def on_dispatch(self, request: PlacementRequest, replica_id: str) -> None:
        """The engine dispatched (or queued) the call there."""
        ...

    def on_replica_removed(self, replica_id: str) -> None: ...


class PlacementBase:
    """No-op hooks for policies that keep no state."""

    name = "base"

    def on_dispatch(self, request: PlacementRequest, replica_id: str) -> None:
        return None

    def on_replica_removed(self, replica_id: str) -> None:
        return None


# --------------------------------------------------------------------------- fairness


@dataclass(frozen=True, slots=True)
class QueuedCall:
    """A call held by the engine, as fairness policies see it."""

    call_id: str
    session_id: str | None
    tenant: str
    submitted_at: float  # clock time the call arrived
    session_start: float  # clock time its session started (== submitted_at without a session)
    deadline: float | None  # absolute clock time of the session's completion deadline
    context_tokens: int  # KV the call needs (prompt + expected output)
    remaining_s: float  # expected seconds of work left in the session's task
    steps_done: int


@dataclass(frozen=True, slots=True)
class ClusterPressure:
    """Cluster-wide load summary for admission decisions."""

    replicas: int  # healthy replicas
    queued: int  # calls held in the engine's queues (all replicas)
    deferred_sessions: int  # new sessions waiting for admission
    deferred_of_tenant: int  # ... of the requesting tenant
    live_sessions_of_tenant: int
    live_sessions: int


@dataclass(frozen=True, slots=True)
class Admission:
    """Verdict on a session's first call. ``verdict``: "admit", "defer" or "reject"."""

    verdict: str
    reason: str = ""
    reject_reason: RejectReason | None = None
    retry_after_s: float = 0.0


ADMIT = Admission("admit")


class FairnessPolicy(Protocol):
    name: str

    def admit(self, call: QueuedCall, pressure: ClusterPressure, now: float) -> Admission: ...

    def queue_key(self, call: QueuedCall, now: float) -> float:
        """Order of held calls: the lowest key leaves first."""
        ...

    def engine_priority(self, call: QueuedCall, now: float) -> int:
        """SGLang request priority for the dispatch (larger = more urgent; 0 = default)."""
        ...

    def on_call_done(self, tenant: str, service_s: float, now: float) -> None: ...

    def on_session_done(self, tenant: str, completion_s: float, expected_s: float, now: float) -> None: ...
