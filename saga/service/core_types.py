"""Shared types of the service core: who calls, what a session and a call are, and helpers.

Split out of :mod:`saga.service.core` so that the core's parts (engine driver, session book,
KV keeper, call path) and the transports import one small module. Nothing here does I/O.

``SESSION_ID_RE`` bounds session ids (1-128 characters of ``[A-Za-z0-9._:/-]``, ``/`` for
sub-agent ids like ``parent/child``; no whitespace or control characters) so that ids are
safe in Redis keys, metric-free logs and SGLang session ids; ``TOOL_RE`` bounds tool names.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from saga.clock import Clock
from saga.scheduler.api import Dispatch, Prompt, Reject, RejectReason, Usage
from saga.service.backend.api import ReplicaClient
from saga.service.errors import InvalidArgument, Rejected, ServiceError, Unavailable

SESSION_ID_RE = re.compile(r"^[A-Za-z0-9._:/\-]{1,128}$")  # "/" for sub-agent ids (parent/child)
SESSION_ID_RULE = "session_id must be 1-128 characters of [A-Za-z0-9._:/-]"
TOOL_RE = re.compile(r"^[A-Za-z0-9._:/\- ]{1,64}$")


class EngineClient(ReplicaClient, Protocol):
    """A replica client that can also add SGLang's scheduling fields to a body."""

    def engine_fields(
        self,
        payload: Any,
        *,
        rid: str | None = None,
        priority: int | None = None,
        engine_session: str | None = None,
    ) -> dict[str, Any]: ...


ClientLookup = Callable[[str], EngineClient | None]
InputLimit = Callable[[], int | None]
"""The longest prompt in tokens any ready replica accepts now; None while none is ready (or
says). What ``spec.limits.max_prompt_tokens: 0`` (auto) holds prompts to."""


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the tenant its API key (or the anonymous default) grants."""

    tenant: str


@dataclass(slots=True)
class LiveSession:
    """What this process holds of an open session (kept small: ~1 KB with the engine's)."""

    session_id: str
    tenant: str
    agent_type: str
    started: float  # clock time
    slo_s: float | None
    last_active: float
    calls: int = 0
    in_flight: int = 0
    current_tool: str | None = None
    inferred_tool: bool = False  # the tool gap was inferred from a tool-call response
    replica_id: str | None = None
    pinned_on: str | None = None
    engine_session: str | None = None
    binding_version: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    output_tokens: int = 0
    context_tokens: int = 0  # its KV as the tenant's quota counts it (saga.service.quotas)


@dataclass(frozen=True, slots=True)
class SessionView:
    session_id: str
    tenant: str
    agent_type: str
    state: str
    current_tool: str
    calls: int
    replica_id: str
    pinned: bool
    age_s: float
    usage: Usage


@dataclass(slots=True)
class Pending:
    tenant: str
    session_id: str | None
    future: asyncio.Future[Dispatch]
    deferred: bool = False
    redispatch: Dispatch | None = None  # the engine moved the running call (replica removed)


@dataclass(frozen=True, slots=True)
class CallSpec:
    """A call as the core schedules it (the transport already parsed the request)."""

    prompt: Prompt
    max_new_tokens: int
    request_id: str = ""


@dataclass(slots=True)
class CallResult:
    """Filled in by the forwarder as the call runs."""

    usage: Usage | None = None
    stop: str = ""
    replica_id: str = ""
    queued_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


# Forwards a dispatched call: given the client and the Dispatch, yields items for the caller
# and fills in ``CallResult`` (usage, stop) by its end.
Forwarder = Callable[[EngineClient, Dispatch, CallResult], AsyncIterator[Any]]


def default_process_id() -> str:
    return f"{os.uname().nodename}-{os.getpid()}"


class NoClient(Exception):
    retryable = True

    def __init__(self, replica_id: str) -> None:
        super().__init__(f"replica {replica_id} is not in the pool")


def rejection(a: Reject) -> ServiceError:
    """The engine's Reject as the client sees it: a prompt that no replica can hold is the
    caller's error; no healthy replica is unavailability; the rest is admission control."""
    msg = a.message or f"rejected: {a.reason}"
    if a.reason == RejectReason.PROMPT_TOO_LONG:
        return InvalidArgument(msg)
    if a.reason == RejectReason.NO_REPLICA:
        return Unavailable(msg)
    return Rejected(msg, reason=str(a.reason), retry_after_s=a.retry_after_s)


def to_wall(clock: Clock, model_s: float) -> float:
    to_wall = getattr(clock, "to_wall", None)
    return float(to_wall(model_s)) if to_wall is not None else model_s
