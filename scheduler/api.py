"""The scheduler engine's contract: the events it is fed and the actions it returns.

The engine is pure: the service (live) and the simulator (virtual time) translate the
outside world into these events, call ``Engine.handle(event)`` / ``Engine.tick()``, and carry
out the returned actions (forward a call to a replica, open/close an SGLang session to keep
KV, answer a client with a rejection). The engine reads time only from its injected clock.

Identifiers are opaque strings. Token counts are ints >= 0; times are seconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

# --------------------------------------------------------------------------- errors


class EngineError(Exception):
    """Base of the engine's typed errors (the service maps each to a status code once)."""


class UnknownSession(EngineError):
    pass


class SessionEnded(EngineError):
    pass


class UnknownCall(EngineError):
    pass


class UnknownReplica(EngineError):
    pass


class InvalidInput(EngineError):
    """Bad arguments: negative tokens, empty ids, a duplicate call id, ..."""


class TenantMismatch(EngineError):
    """A tenant used another tenant's session."""


# --------------------------------------------------------------------------- inputs


@dataclass(frozen=True, slots=True)
class WorkflowHints:
    """Optional hints a client gives when it starts a session."""

    expected_calls: int | None = None
    deadline_s: float | None = None  # task-completion deadline relative to the session start
    parent_session_id: str | None = None  # set for sub-agents (fork/join)
    priority: int | None = None
    # The replica the session is already bound to, when another scheduler process placed it
    # (read from the shared state store). The engine starts the session with that home when the
    # replica is known and healthy, so its next call follows its KV; ignored otherwise.
    home_replica: str | None = None


@dataclass(frozen=True, slots=True)
class Prompt:
    """What the engine knows of a call's prompt.

    ``block_hashes`` are cumulative prefix-block hashes (see ``saga.graphs.trace``); the
    service computes them from token ids with the replicas' page size. Empty when unknown.
    """

    num_tokens: int
    block_hashes: tuple[int, ...] = ()
    block_size: int = 0


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int
    cached_tokens: int
    output_tokens: int


@dataclass(frozen=True, slots=True)
class SessionStart:
    session_id: str
    tenant: str
    agent_type: str
    hints: WorkflowHints = field(default_factory=WorkflowHints)


@dataclass(frozen=True, slots=True)
class SessionEnd:
    session_id: str


@dataclass(frozen=True, slots=True)
class CallSubmitted:
    """An LLM call arrived. ``session_id`` None: a request without a session (per-request)."""

    call_id: str
    session_id: str | None
    prompt: Prompt
    max_new_tokens: int
    tenant: str = "default"
    priority: int | None = None
    # The replica the session is bound to in the shared state store when another scheduler
    # process moved it since this engine last placed it; adopted as the session's home when
    # known and healthy (as ``WorkflowHints.home_replica``), ignored otherwise.
    home_replica: str | None = None


@dataclass(frozen=True, slots=True)
class FirstToken:
    call_id: str


@dataclass(frozen=True, slots=True)
class CallCompleted:
    call_id: str
    usage: Usage
    stop: str = ""  # "tool_use", "end_turn", ""


@dataclass(frozen=True, slots=True)
class CallFailed:
    """The replica failed the call. ``retryable``: no token was sent to the client yet."""

    call_id: str
    reason: str
    retryable: bool


@dataclass(frozen=True, slots=True)
class ToolStarted:
    session_id: str
    tool: str


@dataclass(frozen=True, slots=True)
class ToolEnded:
    session_id: str
    tool: str
    status: str = "ok"


@dataclass(frozen=True, slots=True)
class ReplicaLoad:
    """A replica's reported load (SGLang ``/v1/loads`` or the replica model)."""

    replica_id: str
    running: int
    waiting: int
    kv_used_tokens: int
    kv_total_tokens: int
    cache_hit_rate: float | None = None


@dataclass(frozen=True, slots=True)
class ReplicaCache:
    """Change in which prefix blocks a replica holds (SGLang KV events, or the model)."""

    replica_id: str
    stored: tuple[int, ...] = ()
    removed: tuple[int, ...] = ()
    cleared: bool = False


@dataclass(frozen=True, slots=True)
class ReplicaAdded:
    replica_id: str
    kv_total_tokens: int
    max_running_requests: int
    page_size: int = 1
    # False when the replica cannot keep a session's KV across tool gaps (SGLang without
    # --enable-session-radix-cache, or before 0.5.17): the engine then pins nothing there.
    keeps_sessions: bool = True


@dataclass(frozen=True, slots=True)
class ReplicaRemoved:
    replica_id: str


@dataclass(frozen=True, slots=True)
class ReplicaHealth:
    replica_id: str
    healthy: bool


Event = (
    SessionStart
    | SessionEnd
    | CallSubmitted
    | FirstToken
    | CallCompleted
    | CallFailed
    | ToolStarted
    | ToolEnded
    | ReplicaLoad
    | ReplicaCache
    | ReplicaAdded
    | ReplicaRemoved
    | ReplicaHealth
)

# --------------------------------------------------------------------------- outputs


class RejectReason(StrEnum):
    OVERLOADED = "overloaded"  # admission control: the cluster cannot take more work now
    TENANT_QUOTA = "tenant_quota"  # the tenant is over its fair share / quota
    NO_REPLICA = "no_replica"  # no healthy replica exists
    PROMPT_TOO_LONG = "prompt_too_long"  # larger than any replica's KV capacity


@dataclass(frozen=True, slots=True)
class Dispatch:
    """Send ``call_id`` to ``replica_id`` now, with SGLang engine ``priority``.

    ``engine_session``: pass this SGLang session id with the request so the replica keeps
    the session's radix entries referenced (set when the session is pinned on that replica).
    """

    call_id: str
    replica_id: str
    priority: int = 0
    engine_session: str | None = None
    reason: str = ""  # why this replica: "affinity", "prefix", "least_load", "steal", ...


@dataclass(frozen=True, slots=True)
class Pin:
    """Keep ``session_id``'s KV on ``replica_id`` until ``until`` (clock time) at the latest."""

    session_id: str
    replica_id: str
    until: float


@dataclass(frozen=True, slots=True)
class Release:
    """Stop keeping ``session_id``'s KV on ``replica_id`` (close its SGLang session)."""

    session_id: str
    replica_id: str
    reason: str  # "tool_ended", "expired", "memory_pressure", "session_end", "replica_removed"


@dataclass(frozen=True, slots=True)
class Steal:
    """A queued session moves from an overloaded replica to an idle one."""

    session_id: str
    call_id: str
    from_replica: str
    to_replica: str
    est_cost_s: float  # modelled cost of losing/moving the cache


@dataclass(frozen=True, slots=True)
class Defer:
    """The call waits in the scheduler's queue (admission control, fair share)."""

    call_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class Reject:
    call_id: str
    reason: RejectReason
    retry_after_s: float
    message: str = ""


Action = Dispatch | Pin | Release | Steal | Defer | Reject


class EngineProtocol(Protocol):
    """The one interface both the service and the simulator drive."""

    def handle(self, event: Event) -> list[Action]:
        """Apply ``event`` at the clock's current time; return the actions to carry out."""
        ...

    def tick(self) -> list[Action]:
        """Periodic work at the clock's current time (pin expiry, work stealing, deferred calls)."""
        ...

    def next_deadline(self) -> float | None:
        """Earliest clock time at which ``tick`` has work to do (None: nothing scheduled)."""
        ...

    @property
    def lane_replicas(self) -> frozenset[str]:
        """Replicas kept for the tight-deadline class now (``lanes.py``; empty: no lane)."""
        ...
