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

**Parts.** This module keeps the lifecycle, authentication and the call path; the rest is
split by concern and composed here:

- :mod:`saga.service.core_types`: principals, sessions, call specs/results, helpers;
- :mod:`saga.service.driver`: engine events in, actions carried out (``Dispatch``, ``Reject``,
  ``Defer``, ``Steal``), tick loop, replica events and health re-probes (``EngineDriver``);
- :mod:`saga.service.sessions`: session lifecycle, adoption from the state store (a session
  the engine has never seen is re-announced with ``SessionStart``), tool gaps, bindings
  (``SessionBook``);
- :mod:`saga.service.kv`: SGLang sessions opened/closed for ``Pin``/``Release`` (``KvKeeper``).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import Any

from saga.clock import Clock
from saga.scheduler.api import (
    CallCompleted,
    CallFailed,
    CallSubmitted,
    Defer,
    Dispatch,
    EngineProtocol,
    FirstToken,
    RejectReason,
    SessionEnded,
    UnknownCall,
    UnknownSession,
    Usage,
)
from saga.service.backend.api import BackendError, ReplicaProtocolError, StreamBroken
from saga.service.config import SchedulerConfig
from saga.service.core_types import (
    SESSION_ID_RE,
    TOOL_RE,
    CallResult,
    CallSpec,
    ClientLookup,
    EngineClient,
    Forwarder,
    InputLimit,
    LiveSession,
    NoClient,
    Pending,
    Principal,
    SessionView,
    default_process_id,
)
from saga.service.errors import (
    Internal,
    InvalidArgument,
    NotFound,
    Rejected,
    Unauthenticated,
    Unavailable,
)
from saga.service.kv import KvKeeper
from saga.service.metrics import ServiceMetrics
from saga.service.quotas import NO_QUOTA, Quota, TenantQuotas, ledger_for
from saga.service.sessions import SessionBook
from saga.service.state.api import StateStore

__all__ = [
    "SESSION_ID_RE",
    "TOOL_RE",
    "CallResult",
    "CallSpec",
    "ClientLookup",
    "EngineClient",
    "Forwarder",
    "LiveSession",
    "Principal",
    "ServiceCore",
    "SessionView",
    "default_process_id",
]

log = logging.getLogger(__name__)


class ServiceCore(SessionBook):
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
        max_input_tokens: InputLimit | None = None,
    ) -> None:
        self.config = config
        self.engine = engine
        self.clock = clock
        self.store = store
        self._client = clients
        # The replicas' own prompt limit (the pool's), for spec.limits.max_prompt_tokens: 0.
        self._max_input = max_input_tokens or (lambda: None)
        self.metrics = metrics
        self.process_id = process_id or default_process_id()
        self.sessions: dict[str, LiveSession] = {}
        self._ended: OrderedDict[str, None] = OrderedDict()
        self._pending: dict[str, Pending] = {}
        self._ids = itertools.count(1)
        self._id_prefix = f"{self.process_id}-{int(time.time() * 1000) % 10**9:x}"
        self._keys = {k.key: k.tenant for k in config.spec.auth.api_keys}
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._healthy: dict[str, bool] = {}
        self._tick_task: asyncio.Task[None] | None = None
        self._closed = False
        self.kv = KvKeeper(clients, clock, metrics, self.sessions, self._spawn, self._on_pinned)
        # Shared by every scheduler process on the store's Redis, else this process's counts.
        self.quotas = TenantQuotas(clock, self._quota_of, ledger_for(store, self.process_id), metrics=metrics)

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
        await self.quotas.close()

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

    # ------------------------------------------------------------------ tenants

    def _quota_of(self, tenant: str) -> Quota:
        t = self.config.tenant(tenant)
        if t is None:
            return NO_QUOTA
        return Quota(t.max_active_sessions, t.max_calls_per_second, t.max_kv_tokens)

    def observe_ttft(self, tenant: str, ttft_s: float) -> None:
        """A call's client-observed time to first token, against its tenant's TTFT objective."""
        t = self.config.tenant(tenant)
        self.metrics.first_token(tenant, ttft_s, t.ttft_s if t is not None else 0.0)

    async def _admit_call(self, tenant: str, session: LiveSession | None, prompt_tokens: int) -> int:
        """The tenant's call quotas (:mod:`saga.service.quotas`); returns the KV tokens the
        call added to the tenant's count."""
        grown = prompt_tokens if session is None else max(0, prompt_tokens - session.context_tokens)
        try:
            await self.quotas.admit_call(tenant, grown, session.session_id if session else None)
        except Rejected as exc:
            self.metrics.rejected(tenant, exc.reason)
            raise
        if session is not None:
            if self.sessions.get(session.session_id) is not session:  # ended during the check
                self.quotas.adjust_kv(tenant, -grown, session.session_id)
                raise NotFound(f"session {session.session_id!r} has ended")
            session.context_tokens += grown
        return grown

    def _set_context(self, s: LiveSession, tokens: int) -> None:
        """``s``'s context after a finished call (its KV quota count), while it is open."""
        if self.sessions.get(s.session_id) is s:
            self.quotas.adjust_kv(s.tenant, tokens - s.context_tokens, s.session_id)
            s.context_tokens = tokens

    # ------------------------------------------------------------------ calls

    def check_call(self, spec: CallSpec) -> None:
        """Refuse a call no replica would serve. The prompt limit is ``limits.max_prompt_tokens``,
        or with 0 (auto) the longest prompt any ready replica accepts (none ready: no check
        here, the call waits for one); text prompts' sizes are estimates, the replica's own
        refusal (a 4xx) still passes through."""
        lim = self.config.spec.limits
        n = spec.prompt.num_tokens
        if lim.max_prompt_tokens > 0:
            if n > lim.max_prompt_tokens:
                raise InvalidArgument(
                    f"prompt of ~{n} tokens exceeds the limit of {lim.max_prompt_tokens}"
                    " (spec.limits.max_prompt_tokens)"
                )
        elif (top := self._max_input()) is not None and n > top:
            raise InvalidArgument(
                f"prompt of ~{n} tokens exceeds the largest prompt any ready replica accepts ({top} tokens,"
                " one below SGLang's max_req_input_len; spec.limits.max_prompt_tokens: 0 = auto)"
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
        if session is not None and session.session_id not in self.sessions:
            raise NotFound(f"session {session.session_id!r} has ended")
        tenant = principal.tenant
        grown = await self._admit_call(tenant, session, spec.prompt.num_tokens)
        if session is not None:
            if session.current_tool is not None and session.inferred_tool:
                self._close_tool(session, "ok")  # the next request closes an inferred gap
            session.in_flight += 1
            session.calls += 1
            session.last_active = self.clock.now()
        attempts = self.config.spec.limits.max_attempts
        call_id = self._new_id("c")
        pending = Pending(
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
                        raise NoClient(dispatch.replica_id)
                    if session is not None and session.replica_id != dispatch.replica_id:
                        session.replica_id = dispatch.replica_id
                        # Saved before the call runs, so that the session's next call follows
                        # it whichever process receives it (one store write per placement).
                        await self._save_binding(session)
                    es = await self.kv.engine_session_for(dispatch)
                    d = Dispatch(call_id, dispatch.replica_id, dispatch.priority, es, dispatch.reason)
                    async for item in forward(client, d, result):
                        if not sent:
                            sent = True
                            self._engine_quiet(FirstToken(call_id))
                        yield item
                except (BackendError, NoClient) as exc:
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
                    self._set_context(session, usage.prompt_tokens + usage.output_tokens)
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
            else:
                self.quotas.adjust_kv(tenant, -grown)  # a session-less call holds no KV after

    async def _wait_dispatch(self, call_id: str, pending: Pending) -> Dispatch:
        timeout = self.config.spec.limits.queue_timeout_s
        try:
            return await asyncio.wait_for(asyncio.shield(pending.future), timeout)
        except TimeoutError:
            self._engine_quiet(CallFailed(call_id, "queue timeout", retryable=False))
            self.metrics.rejected(pending.tenant, str(RejectReason.OVERLOADED))
            raise Rejected(
                f"call waited {timeout:.0f} s in the queue", reason="overloaded", retry_after_s=5.0
            ) from None

    async def _redispatch(self, call_id: str, pending: Pending, reason: str) -> Dispatch | None:
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
        self, call_id: str, pending: Pending, tenant: str, session: LiveSession | None, spec: CallSpec
    ) -> Dispatch:
        home = await self._sync_binding(session) if session is not None else None
        event = CallSubmitted(
            call_id,
            session.session_id if session else None,
            spec.prompt,
            spec.max_new_tokens,
            tenant=tenant,
            home_replica=home,
        )
        self._engine_checked(event)
        if pending.future.done():
            return pending.future.result()
        return await self._wait_dispatch(call_id, pending)
