"""The transport-independent service core: requests in, engine decisions carried out.

The gRPC servicer (:mod:`saga.service.grpc_api`) and the OpenAI endpoint
(:mod:`saga.service.openai_api`) only convert messages and call this class; every rule lives
here once.

Flow of one LLM call::

    authenticate → check session/tenant → estimate prompt → engine.handle(CallSubmitted)
      → Dispatch?  → forward to the replica (priority, engine session) → stream back
      → Defer?     → wait for a later Dispatch (from a tick or another event), bounded by
                     ``limits.queue_timeout_s`` (then Rejected/overloaded)
      → Reject?    → Rejected(reason, retry_after_s)
    first chunk → FirstToken; end → CallCompleted(usage, stop); failure → CallFailed

**Replica failures.** A failure before the first chunk reached the client
(``ReplicaUnavailable``, a 503) is reported as ``CallFailed(retryable=True)``; the call is
then submitted again under a fresh call id with the failed replica marked unhealthy, so it
lands on another replica, up to ``limits.max_attempts`` times. A failure after the first
chunk ends the client's stream with :class:`Unavailable` naming the replica. Garbage from
a replica (``ReplicaProtocolError``) is an :class:`Internal` error and is not retried (the
replica is still up; retrying elsewhere would hide a broken deployment).

**Engine actions.** ``Dispatch`` resolves the waiting call; ``Pin`` opens an SGLang session
on the replica (``/open_session``) so the session's radix entries stay referenced across
the tool gap, and ``Release`` closes it; ``Reject`` fails the waiting call; ``Defer`` and
``Steal`` are recorded (a stolen call's ``Dispatch`` follows). A tick task sleeps until
``engine.next_deadline()`` and is woken whenever an event may have moved that deadline.

**State.** The local :class:`LiveSession` table is the hot path; the state store holds the
session binding (tenant, agent type, replica, pin) so that another scheduler process that
receives the session's next call adopts it (see ``docs/service.md``, "State"). A session the
engine has never seen is re-announced with ``SessionStart`` before its call.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import re
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from saga.clock import Clock
from saga.scheduler.api import (
    Action,
    CallCompleted,
    CallFailed,
    CallSubmitted,
    Defer,
    Dispatch,
    EngineError,
    EngineProtocol,
    Event,
    FirstToken,
    InvalidInput,
    Pin,
    Prompt,
    Reject,
    RejectReason,
    Release,
    ReplicaAdded,
    ReplicaHealth,
    ReplicaLoad,
    ReplicaRemoved,
    SessionEnd,
    SessionEnded,
    SessionStart,
    Steal,
    TenantMismatch,
    ToolEnded,
    ToolStarted,
    UnknownCall,
    UnknownSession,
    Usage,
    WorkflowHints,
)
from saga.service.backend.api import (
    BackendError,
    ReplicaClient,
    ReplicaEvent,
    ReplicaProtocolError,
    StreamBroken,
)
from saga.service.config import SchedulerConfig
from saga.service.errors import (
    AlreadyExists,
    Internal,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Rejected,
    ServiceError,
    Unauthenticated,
    Unavailable,
)
from saga.service.metrics import ServiceMetrics
from saga.service.state.api import SessionBinding, StateError, StateStore

log = logging.getLogger(__name__)

SESSION_ID_RE = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
TOOL_RE = re.compile(r"^[A-Za-z0-9._:/\- ]{1,64}$")
_ENDED_MEMORY = 100_000  # ended session ids remembered to tell "ended" from "unknown"


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
class _Pending:
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


class ServiceCore:
    """Owns the engine, the clock, the state store and the view of the replica pool."""

    def __init__(
        self,
        config: SchedulerConfig,
        engine: EngineProtocol,
        clock: Clock,
        store: StateStore,
        clients: ClientLookup,
        metrics: ServiceMetrics,
        *,
        process_id: str | None = None,
    ) -> None:
        self.config = config
        self.engine = engine
        self.clock = clock
        self.store = store
        self._client = clients
        self.metrics = metrics
        self.process_id = process_id or default_process_id()
        self.sessions: dict[str, LiveSession] = {}
        self._ended: OrderedDict[str, None] = OrderedDict()
        self._pending: dict[str, _Pending] = {}
        self._ids = itertools.count(1)
        self._id_prefix = f"{self.process_id}-{int(time.time() * 1000) % 10**9:x}"
        self._keys = {k.key: k.tenant for k in config.spec.auth.api_keys}
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._opening: dict[tuple[str, str], asyncio.Task[str | None]] = {}
        self._pinned: set[tuple[str, str]] = set()
        self._closing: dict[tuple[str, str], asyncio.Task[Any]] = {}
        self._healthy: dict[str, bool] = {}
        self._tick_task: asyncio.Task[None] | None = None
        self._closed = False

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        self._tick_task = asyncio.create_task(self._tick_loop(), name="saga-engine-tick")

    async def stop(self) -> None:
        self._closed = True
        if self._tick_task is not None:
            self._tick_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._tick_task
        for p in self._pending.values():
            if not p.future.done():
                p.future.set_exception(Unavailable("the scheduler is shutting down"))
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # ------------------------------------------------------------------ auth

    def authenticate(self, api_key: str | None) -> Principal:
        anon = self.config.spec.auth.anonymous_tenant
        if api_key:
            tenant = self._keys.get(api_key)
            if tenant is not None:
                return Principal(tenant)
            # With no keys configured, any key is anonymous (OpenAI clients always send one).
            if self._keys or anon is None:
                raise Unauthenticated("unknown API key")
            return Principal(anon)
        if anon is None:
            raise Unauthenticated("an API key is required (authorization: Bearer <key>)")
        return Principal(anon)

    def resolve_tenant(self, principal: Principal, requested: str) -> str:
        if requested and requested != principal.tenant:
            raise PermissionDenied(f"the API key does not grant tenant {requested!r}")
        return principal.tenant

    # ------------------------------------------------------------------ engine plumbing

    def _engine(self, event: Event) -> list[Action]:
        t0 = time.perf_counter()
        try:
            actions = self.engine.handle(event)
        finally:
            self.metrics.engine_decision.observe(time.perf_counter() - t0)
        self._apply(actions)
        self._wake.set()
        return actions

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
                    err = _rejection(a)
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
                self._on_pin(a)
            elif isinstance(a, Release):
                self._on_release(a)
            elif isinstance(a, Steal):
                pass  # counted in metrics; the stolen call's Dispatch follows

    async def _tick_loop(self) -> None:
        while not self._closed:
            deadline = self.engine.next_deadline()
            timeout = None
            if deadline is not None:
                timeout = max(0.0, _to_wall(self.clock, deadline - self.clock.now()))
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

    # ------------------------------------------------------------------ KV pins

    # The engine names an SGLang session on every Dispatch of a session it retains
    # (``engine_session``); the session is opened on that replica before the first such call
    # and stays open until the engine's ``Release``. ``Pin`` only bounds how long it stays open
    # across a tool gap (the engine releases it by the pin's deadline).

    def _ensure_open(
        self, replica_id: str, session_id: str, timeout_s: float | None
    ) -> asyncio.Task[str | None]:
        key = (replica_id, session_id)
        task = self._opening.get(key)
        if task is None:
            task = self._spawn(self._open(replica_id, session_id, timeout_s), f"open-{session_id}")
            self._opening[key] = task
        return task

    def _on_pin(self, pin: Pin) -> None:
        key = (pin.replica_id, pin.session_id)
        if key not in self._pinned:
            self._pinned.add(key)
            self.metrics.kv_pinned.labels(pin.replica_id).inc()
        timeout = max(1.0, _to_wall(self.clock, pin.until - self.clock.now()))
        self._ensure_open(pin.replica_id, pin.session_id, timeout)
        s = self.sessions.get(pin.session_id)
        if s is not None:
            s.pinned_on = pin.replica_id
            self._spawn(self._save_binding(s, pinned_until=time.time() + timeout), f"bind-{s.session_id}")

    async def _open(self, replica_id: str, session_id: str, timeout_s: float | None) -> str | None:
        closing = self._closing.get((replica_id, session_id))
        if closing is not None:  # a close of the same id is in flight: the replica refuses a
            with contextlib.suppress(Exception):  # second open of an id still open
                await asyncio.shield(closing)
        client = self._client(replica_id)
        if client is None:
            return None
        try:
            engine_session = await client.open_session(
                session_id, capacity_of_str_len=1 << 20, timeout_s=timeout_s
            )
        except BackendError as exc:
            log.warning("open_session %s on %s failed: %s", session_id, replica_id, exc)
            return None
        s = self.sessions.get(session_id)
        if s is not None:
            s.engine_session = engine_session
        return engine_session

    def _on_release(self, rel: Release) -> None:
        key = (rel.replica_id, rel.session_id)
        if key in self._pinned:
            self._pinned.discard(key)
            self.metrics.kv_pinned.labels(rel.replica_id).dec()
        s = self.sessions.get(rel.session_id)
        if s is not None and s.pinned_on == rel.replica_id:
            s.pinned_on = None
        opening = self._opening.pop(key, None)
        if opening is None:
            return  # never opened there (or already released)
        if s is not None:
            s.engine_session = None
        task = self._spawn(self._close(rel, opening), f"release-{rel.session_id}")
        self._closing[key] = task
        task.add_done_callback(
            lambda t: self._closing.pop(key, None) if self._closing.get(key) is t else None
        )

    async def _close(self, rel: Release, opening: asyncio.Task[str | None]) -> None:
        try:
            engine_session = await opening
        except (asyncio.CancelledError, BackendError):
            return
        client = self._client(rel.replica_id)
        if engine_session is None or client is None:
            return
        try:
            await client.close_session(engine_session)
        except BackendError as exc:
            log.info("close_session %s on %s: %s", engine_session, rel.replica_id, exc)

    async def _engine_session_for(self, d: Dispatch) -> str | None:
        """The SGLang session to send with ``d``, opened on that replica first if needed;
        None when the open failed (the call then runs without one)."""
        if d.engine_session is None:
            return None
        opening = self._ensure_open(d.replica_id, d.engine_session, None)
        try:
            return await asyncio.shield(opening)
        except (asyncio.CancelledError, BackendError):
            return None

    # ------------------------------------------------------------------ sessions

    def _new_id(self, kind: str) -> str:
        return f"{kind}-{self._id_prefix}-{next(self._ids)}"

    async def start_session(
        self,
        principal: Principal,
        *,
        tenant: str,
        agent_type: str,
        hints: WorkflowHints,
        session_id: str = "",
    ) -> str:
        tenant = self.resolve_tenant(principal, tenant)
        if not agent_type or len(agent_type) > 128:
            raise InvalidArgument("agent_type must be 1-128 characters")
        if session_id and not SESSION_ID_RE.match(session_id):
            raise InvalidArgument("session_id must be 1-128 characters of [A-Za-z0-9._:-]")
        if hints.deadline_s is not None and not hints.deadline_s > 0:
            raise InvalidArgument("hints.deadline_s must be > 0 seconds")
        if len(self.sessions) >= self.config.spec.limits.max_sessions:
            raise Rejected("too many open sessions", reason="overloaded", retry_after_s=5.0)
        sid = session_id or self._new_id("s")
        if sid in self.sessions:
            raise AlreadyExists(f"session {sid!r} is already open")
        outcome = await self._store_call(
            self.store.bind(
                SessionBinding(sid, tenant, agent_type, owner=self.process_id), expected_version=0
            )
        )
        if not outcome.won:
            raise AlreadyExists(f"session {sid!r} is already open")
        self._ended.pop(sid, None)
        s = self._add_local(sid, tenant, agent_type, hints)
        s.binding_version = outcome.binding.version if outcome.binding else 1
        return sid

    def _add_local(self, sid: str, tenant: str, agent_type: str, hints: WorkflowHints) -> LiveSession:
        t_cfg = self.config.tenant(tenant)
        slo = hints.deadline_s or (t_cfg.slo_s if t_cfg and t_cfg.slo_s > 0 else None)
        now = self.clock.now()
        if hints.deadline_s is None and slo is not None:
            hints = WorkflowHints(
                expected_calls=hints.expected_calls,
                deadline_s=slo,
                parent_session_id=hints.parent_session_id,
                priority=hints.priority,
            )
        try:
            self._engine(SessionStart(sid, tenant, agent_type, hints))
        except InvalidInput as exc:
            raise InvalidArgument(str(exc)) from exc
        s = LiveSession(sid, tenant, agent_type, started=now, slo_s=slo, last_active=now)
        self.sessions[sid] = s
        self.metrics.session_started(tenant)
        return s

    async def session(self, principal: Principal, session_id: str) -> LiveSession:
        """The open session ``session_id`` of the caller's tenant, adopting it from the state
        store when another scheduler process started it."""
        if not session_id or not SESSION_ID_RE.match(session_id):
            raise InvalidArgument("session_id must be 1-128 characters of [A-Za-z0-9._:-]")
        s = self.sessions.get(session_id)
        if s is None:
            binding = await self._store_call(self.store.get_binding(session_id))
            if binding is None:
                if session_id in self._ended:
                    raise NotFound(f"session {session_id!r} has ended")
                raise NotFound(f"unknown session {session_id!r}")
            if binding.tenant != principal.tenant:
                raise PermissionDenied(f"session {session_id!r} belongs to another tenant")
            s = self.sessions.get(session_id)  # another task may have adopted it meanwhile
            if s is None:
                s = self._add_local(session_id, binding.tenant, binding.agent_type, WorkflowHints())
                s.binding_version = binding.version
                s.replica_id = binding.replica_id
        if s.tenant != principal.tenant:
            raise PermissionDenied(f"session {session_id!r} belongs to another tenant")
        return s

    async def implicit_session(self, principal: Principal, session_id: str, agent_type: str) -> LiveSession:
        """The OpenAI endpoint's sessions: named by a header, started on first use."""
        try:
            return await self.session(principal, session_id)
        except NotFound:
            with contextlib.suppress(AlreadyExists):  # a concurrent first request started it
                await self.start_session(
                    principal, tenant="", agent_type=agent_type, hints=WorkflowHints(), session_id=session_id
                )
            return await self.session(principal, session_id)

    async def end_session(self, principal: Principal, session_id: str) -> tuple[float, int]:
        s = await self.session(principal, session_id)
        return await self._end(s)

    async def _end(self, s: LiveSession) -> tuple[float, int]:
        if self.sessions.pop(s.session_id, None) is None:
            raise NotFound(f"session {s.session_id!r} has ended")
        self._ended[s.session_id] = None
        while len(self._ended) > _ENDED_MEMORY:
            self._ended.popitem(last=False)
        duration = _to_wall(self.clock, self.clock.now() - s.started)
        with contextlib.suppress(EngineError):
            self._engine(SessionEnd(s.session_id))
        self.metrics.session_ended(s.tenant, s.agent_type, duration, s.slo_s)
        with contextlib.suppress(StateError):
            await self.store.delete_binding(s.session_id)
            await self.store.add_usage(s.tenant, completed_tasks=1, task_time_s=duration)
        return duration, s.calls

    async def tool_start(self, principal: Principal, session_id: str, tool: str) -> None:
        if not TOOL_RE.match(tool or ""):
            raise InvalidArgument("tool must be 1-64 characters of [A-Za-z0-9._:/- ]")
        s = await self.session(principal, session_id)
        if s.current_tool is not None:
            raise InvalidArgument(f"tool {s.current_tool!r} is still running in session {session_id!r}")
        s.current_tool = tool
        s.inferred_tool = False
        s.last_active = self.clock.now()
        self._engine_session_event(ToolStarted(session_id, tool))

    async def tool_end(self, principal: Principal, session_id: str, tool: str, status: str = "ok") -> None:
        if status not in ("ok", "error", ""):
            raise InvalidArgument("status must be 'ok' or 'error'")
        s = await self.session(principal, session_id)
        if s.current_tool is None:
            raise InvalidArgument(f"no tool is running in session {session_id!r}")
        if tool and tool != s.current_tool:
            raise InvalidArgument(f"tool {tool!r} is not the running tool {s.current_tool!r}")
        self._close_tool(s, status or "ok")

    def _close_tool(self, s: LiveSession, status: str) -> None:
        tool = s.current_tool
        if tool is None:
            return
        s.current_tool = None
        s.inferred_tool = False
        s.last_active = self.clock.now()
        self._engine_session_event(ToolEnded(s.session_id, tool, status))

    def infer_tool_start(self, s: LiveSession, tool: str) -> None:
        """A response ended in tool calls: the session is now in a tool gap."""
        if s.current_tool is None and s.session_id in self.sessions:
            s.current_tool = tool or "tool"
            s.inferred_tool = True
            self._engine_session_event(ToolStarted(s.session_id, s.current_tool))

    def _engine_session_event(self, event: Event) -> None:
        try:
            self._engine(event)
        except (UnknownSession, SessionEnded) as exc:
            raise NotFound(str(exc)) from exc
        except (InvalidInput, TenantMismatch) as exc:
            raise InvalidArgument(str(exc)) from exc

    def view(self, s: LiveSession) -> SessionView:
        state = "tool" if s.current_tool else "llm"
        return SessionView(
            s.session_id,
            s.tenant,
            s.agent_type,
            state,
            s.current_tool or "",
            s.calls,
            s.replica_id or "",
            s.pinned_on is not None,
            _to_wall(self.clock, self.clock.now() - s.started),
            Usage(s.prompt_tokens, s.cached_tokens, s.output_tokens),
        )

    async def sweep_idle(self) -> int:
        """End sessions idle longer than ``limits.idle_session_timeout_s``; returns how many."""
        limit = self.config.spec.limits.idle_session_timeout_s
        if limit <= 0:
            return 0
        now = self.clock.now()
        idle = [
            s
            for s in self.sessions.values()
            if s.in_flight == 0 and _to_wall(self.clock, now - s.last_active) > limit
        ]
        for s in idle:
            with contextlib.suppress(NotFound):
                await self._end(s)
        return len(idle)

    async def _save_binding(self, s: LiveSession, *, pinned_until: float | None = None) -> None:
        b = SessionBinding(
            s.session_id,
            s.tenant,
            s.agent_type,
            replica_id=s.replica_id,
            pinned_until=pinned_until,
            engine_session=s.engine_session,
            owner=self.process_id,
        )
        try:
            out = await self.store.bind(b, expected_version=s.binding_version)
        except StateError as exc:
            log.warning("state store: binding of %s not saved: %s", s.session_id, exc)
            return
        if out.binding is not None:
            s.binding_version = out.binding.version
            if not out.won:  # another process placed it first: adopt its replica
                s.replica_id = out.binding.replica_id

    async def _store_call(self, aw: Awaitable[Any]) -> Any:
        try:
            return await aw
        except StateError as exc:
            raise Unavailable(f"state store unavailable: {exc}") from exc

    # ------------------------------------------------------------------ calls

    def check_call(self, spec: CallSpec) -> None:
        lim = self.config.spec.limits
        if spec.prompt.num_tokens > lim.max_prompt_tokens:
            raise InvalidArgument(
                f"prompt of ~{spec.prompt.num_tokens} tokens exceeds the limit of {lim.max_prompt_tokens}"
            )
        if not 1 <= spec.max_new_tokens <= lim.max_new_tokens:
            raise InvalidArgument(f"max_new_tokens must be in [1, {lim.max_new_tokens}]")

    async def run_call(
        self,
        principal: Principal,
        session: LiveSession | None,
        spec: CallSpec,
        forward: Forwarder,
        result: CallResult,
    ) -> AsyncIterator[Any]:
        """Schedule one call and run it through ``forward``; yields what ``forward`` yields.

        Retries on another replica while nothing was yielded; raises :class:`ServiceError`s.
        """
        self.check_call(spec)
        if session is not None:
            if session.session_id not in self.sessions:
                raise NotFound(f"session {session.session_id!r} has ended")
            if session.current_tool is not None and session.inferred_tool:
                self._close_tool(session, "ok")  # the next request closes an inferred gap
            session.in_flight += 1
            session.calls += 1
            session.last_active = self.clock.now()
        tenant = principal.tenant
        attempts = self.config.spec.limits.max_attempts
        call_id = self._new_id("c")
        pending = _Pending(
            tenant, session.session_id if session else None, asyncio.get_running_loop().create_future()
        )
        self._pending[call_id] = pending
        sent = False
        try:
            t_submit = time.perf_counter()
            dispatch = await self._submit(call_id, pending, tenant, session, spec)
            result.queued_s = time.perf_counter() - t_submit
            attempt = 1
            while True:
                result.replica_id = dispatch.replica_id
                client = self._client(dispatch.replica_id)
                try:
                    if client is None:
                        raise _NoClient(dispatch.replica_id)
                    if session is not None and session.replica_id != dispatch.replica_id:
                        session.replica_id = dispatch.replica_id
                        self._spawn(self._save_binding(session), f"bind-{session.session_id}")
                    es = await self._engine_session_for(dispatch)
                    d = Dispatch(call_id, dispatch.replica_id, dispatch.priority, es, dispatch.reason)
                    async for item in forward(client, d, result):
                        if not sent:
                            sent = True
                            self._engine_quiet(FirstToken(call_id))
                        yield item
                except (BackendError, _NoClient) as exc:
                    retryable = not sent and getattr(exc, "retryable", False)
                    if retryable:
                        self._mark_unhealthy(dispatch.replica_id)
                    nxt = None
                    if retryable and attempt < attempts:
                        log.info(
                            "call %s failed on %s before any token: %s", call_id, dispatch.replica_id, exc
                        )
                        nxt = await self._redispatch(call_id, pending, str(exc))
                    else:
                        self._engine_quiet(CallFailed(call_id, str(exc), retryable=False))
                    if nxt is not None:
                        dispatch, attempt = nxt, attempt + 1
                        continue
                    self.metrics.call_done(tenant, ok=False)
                    if isinstance(exc, ReplicaProtocolError):
                        raise Internal(
                            f"replica {dispatch.replica_id} returned an invalid answer: {exc}"
                        ) from exc
                    if isinstance(exc, StreamBroken):
                        raise Unavailable(f"replica {dispatch.replica_id} failed mid-stream: {exc}") from exc
                    raise Unavailable(f"replica {dispatch.replica_id} failed: {exc}") from exc
                except BaseException:
                    # The client went away (cancelled) or a bug: the call is over for the engine.
                    self._engine_quiet(CallFailed(call_id, "cancelled", retryable=False))
                    raise
                usage = result.usage or Usage(spec.prompt.num_tokens, 0, 0)
                self._engine_quiet(CallCompleted(call_id, usage, result.stop))
                self.metrics.call_done(tenant, ok=True)
                if session is not None:
                    session.prompt_tokens += usage.prompt_tokens
                    session.cached_tokens += usage.cached_tokens
                    session.output_tokens += usage.output_tokens
                return
        finally:
            self._pending.pop(call_id, None)
            if pending.deferred:
                self.metrics.queue_depth.dec()
            if not pending.future.done():
                pending.future.cancel()
            if session is not None:
                session.in_flight -= 1
                session.last_active = self.clock.now()

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

    async def _wait_dispatch(self, call_id: str, pending: _Pending) -> Dispatch:
        timeout = self.config.spec.limits.queue_timeout_s
        try:
            return await asyncio.wait_for(asyncio.shield(pending.future), timeout)
        except TimeoutError:
            self._engine_quiet(CallFailed(call_id, "queue timeout", retryable=False))
            self.metrics.rejected(pending.tenant, str(RejectReason.OVERLOADED))
            raise Rejected(
                f"call waited {timeout:.0f} s in the queue", reason="overloaded", retry_after_s=5.0
            ) from None

    async def _redispatch(self, call_id: str, pending: _Pending, reason: str) -> Dispatch | None:
        """After a retryable failure: the engine's next placement of the call, or None when
        the engine gave up on it (its own attempt limit)."""
        if pending.redispatch is not None:  # the engine already moved it (replica removed)
            d, pending.redispatch = pending.redispatch, None
            return d
        pending.future = asyncio.get_running_loop().create_future()
        try:
            actions = self._engine(CallFailed(call_id, reason, retryable=True))
        except (UnknownCall, UnknownSession, SessionEnded):
            return None
        if not pending.future.done() and not any(
            isinstance(a, Dispatch | Defer) and a.call_id == call_id for a in actions
        ):
            return None
        return await self._wait_dispatch(call_id, pending)

    async def _submit(
        self, call_id: str, pending: _Pending, tenant: str, session: LiveSession | None, spec: CallSpec
    ) -> Dispatch:
        event = CallSubmitted(
            call_id,
            session.session_id if session else None,
            spec.prompt,
            spec.max_new_tokens,
            tenant=tenant,
        )
        try:
            self._engine(event)
        except (UnknownSession, SessionEnded) as exc:
            raise NotFound(str(exc)) from exc
        except (InvalidInput, TenantMismatch) as exc:
            raise InvalidArgument(str(exc)) from exc
        if pending.future.done():
            return pending.future.result()
        return await self._wait_dispatch(call_id, pending)


def default_process_id() -> str:
    return f"{os.uname().nodename}-{os.getpid()}"


class _NoClient(Exception):
    retryable = True

    def __init__(self, replica_id: str) -> None:
        super().__init__(f"replica {replica_id} is not in the pool")


def _rejection(a: Reject) -> ServiceError:
    """The engine's Reject as the client sees it: a prompt that no replica can hold is the
    caller's error; no healthy replica is unavailability; the rest is admission control."""
    msg = a.message or f"rejected: {a.reason}"
    if a.reason == RejectReason.PROMPT_TOO_LONG:
        return InvalidArgument(msg)
    if a.reason == RejectReason.NO_REPLICA:
        return Unavailable(msg)
    return Rejected(msg, reason=str(a.reason), retry_after_s=a.retry_after_s)


def _to_wall(clock: Clock, model_s: float) -> float:
    to_wall = getattr(clock, "to_wall", None)
    return float(to_wall(model_s)) if to_wall is not None else model_s
