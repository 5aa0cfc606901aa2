"""The session book: sessions opened, adopted from the state store, ended; tool gaps.

Part of the service core (:class:`saga.service.core.ServiceCore` inherits it). The local
:class:`~saga.service.core_types.LiveSession` table is the hot path; the state store holds the
session binding (tenant, agent type, replica, pin) so that another scheduler process that
receives the session's next call adopts it: it reads the binding, checks the tenant and
re-announces the session to its engine with ``SessionStart`` (see ``docs/service.md``, "State").
Binding writes are compare-and-set on the version this process last saw; on a lost race the
stored replica is adopted.

Ended session ids are remembered (the last ``_ENDED_MEMORY`` = 100,000, about 10 MB) to answer
"has ended" rather than "unknown"; sessions idle longer than ``limits.idle_session_timeout_s``
are ended by :meth:`SessionBook.sweep_idle`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import logging
from collections import OrderedDict
from collections.abc import Awaitable
from typing import Any

from saga.scheduler.api import (
    EngineError,
    InvalidInput,
    SessionEnd,
    SessionStart,
    ToolEnded,
    ToolStarted,
    Usage,
    WorkflowHints,
)
from saga.service.core_types import (
    SESSION_ID_RE,
    SESSION_ID_RULE,
    TOOL_RE,
    LiveSession,
    Principal,
    SessionView,
    to_wall,
)
from saga.service.driver import EngineDriver
from saga.service.errors import (
    AlreadyExists,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Rejected,
    Unavailable,
)
from saga.service.quotas import TenantQuotas
from saga.service.state.api import SessionBinding, StateError, StateStore

log = logging.getLogger(__name__)

_ENDED_MEMORY = 100_000  # ended session ids remembered to tell "ended" from "unknown"


class SessionBook(EngineDriver):
    """Session lifecycle and bindings; the state is set by ``ServiceCore``."""

    store: StateStore
    process_id: str
    sessions: dict[str, LiveSession]
    _ended: OrderedDict[str, None]
    _ids: itertools.count[int]
    _id_prefix: str
    quotas: TenantQuotas

    def resolve_tenant(self, principal: Principal, requested: str) -> str:
        if requested and requested != principal.tenant:
            raise PermissionDenied(f"the API key does not grant tenant {requested!r}")
        return principal.tenant

    def _on_pinned(self, s: LiveSession, pinned_until: float) -> None:
        """The KV keeper pinned ``s``: record the pin in its binding (epoch seconds)."""
        self._spawn(self._save_binding(s, pinned_until=pinned_until), f"bind-{s.session_id}")

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
        if session_id and not SESSION_ID_RE.fullmatch(session_id):
            raise InvalidArgument(SESSION_ID_RULE)
        if hints.deadline_s is not None and not hints.deadline_s > 0:
            raise InvalidArgument("hints.deadline_s must be > 0 seconds")
        if len(self.sessions) >= self.config.spec.limits.max_sessions:
            raise Rejected("too many open sessions", reason="overloaded", retry_after_s=5.0)
        sid = session_id or self._new_id("s")
        if sid in self.sessions:
            raise AlreadyExists(f"session {sid!r} is already open")
        try:
            await self.quotas.admit_session(tenant, sid)  # counted: held across the store's await
        except Rejected as exc:
            self.metrics.session_rejected(tenant, exc.reason)
            raise
        try:
            outcome = await self._store_call(
                self.store.bind(
                    SessionBinding(sid, tenant, agent_type, owner=self.process_id), expected_version=0
                )
            )
            if not outcome.won:
                raise AlreadyExists(f"session {sid!r} is already open")
            self._ended.pop(sid, None)
            s = self._add_local(sid, tenant, agent_type, hints)
        except BaseException:
            self.quotas.session_closed(tenant, sid)  # this admission's count only
            raise
        s.binding_version = outcome.binding.version if outcome.binding else 1
        return sid

    def _add_local(self, sid: str, tenant: str, agent_type: str, hints: WorkflowHints) -> LiveSession:
        t_cfg = self.config.tenant(tenant)
        slo = hints.deadline_s or (t_cfg.slo_s if t_cfg and t_cfg.slo_s > 0 else None)
        now = self.clock.now()
        if hints.deadline_s is None and slo is not None:
            hints = dataclasses.replace(hints, deadline_s=slo)
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
        if not session_id or not SESSION_ID_RE.fullmatch(session_id):
            raise InvalidArgument(SESSION_ID_RULE)
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
                # The engine starts it on the stored replica (when it knows it and it is healthy)
                # so the call follows the session's KV, whichever process placed it.
                hints = WorkflowHints(home_replica=binding.replica_id)
                s = self._add_local(session_id, binding.tenant, binding.agent_type, hints)
                self.quotas.session_opened(binding.tenant, session_id)  # adopted: counted, never refused
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
        duration = to_wall(self.clock, self.clock.now() - s.started)
        with contextlib.suppress(EngineError):
            self._engine(SessionEnd(s.session_id))
        self.metrics.session_ended(s.tenant, s.agent_type, duration, s.slo_s)
        self.quotas.session_closed(s.tenant, s.session_id)
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
        self._engine_checked(ToolStarted(session_id, tool))

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
        self._engine_checked(ToolEnded(s.session_id, tool, status))

    def infer_tool_start(self, s: LiveSession, tool: str) -> None:
        """A response ended in tool calls: the session is now in a tool gap."""
        if s.current_tool is None and s.session_id in self.sessions:
            s.current_tool = tool or "tool"
            s.inferred_tool = True
            self._engine_checked(ToolStarted(s.session_id, s.current_tool))

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
            to_wall(self.clock, self.clock.now() - s.started),
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
            if s.in_flight == 0 and to_wall(self.clock, now - s.last_active) > limit
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
        if out.won and out.binding is not None:
            s.binding_version = out.binding.version
        # Lost: another process placed or moved it first. The running call stays where it is;
        # the next call reads the newer binding (``_sync_binding``) and its engine adopts it.

    async def _sync_binding(self, s: LiveSession) -> str | None:
        """Re-read ``s``'s binding before a call: when another process wrote it since this one
        did (its version moved), adopt the stored replica and return it for the engine
        (``CallSubmitted.home_replica``); None when nothing changed or the store is unreachable
        (the local view is then used, as in a Redis outage)."""
        try:
            b = await self.store.get_binding(s.session_id)
        except StateError as exc:
            log.debug("state store: binding of %s not read: %s", s.session_id, exc)
            return None
        if b is None or b.version <= s.binding_version:
            return None
        s.binding_version = b.version
        if b.replica_id is None or b.replica_id == s.replica_id:
            return None
        s.replica_id = b.replica_id
        return b.replica_id

    async def _store_call(self, aw: Awaitable[Any]) -> Any:
        try:
            return await aw
        except StateError as exc:
            raise Unavailable(f"state store unavailable: {exc}") from exc
