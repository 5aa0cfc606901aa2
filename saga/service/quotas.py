"""Per-tenant admission quotas, enforced at the service's edge before the engine sees a request.

A tenant's quotas come from ``spec.tenants[]`` or its tenant policy's ``quotas`` (hot
reloaded, :mod:`saga.service.tenants_reload`); each is 0 for unlimited. A refusal is a
:class:`~saga.service.errors.Rejected` with reason ``tenant_quota`` (gRPC
RESOURCE_EXHAUSTED with ``retry-after-ms``, HTTP 429 with ``Retry-After``), counted in
``saga_admission_rejections_total{reason="tenant_quota"}``; nothing of the request reached
the engine, so a retry is safe.

- ``max_active_sessions``: the tenant's open sessions (see Scope). A new session beyond
  it is refused (retry after ``RETRY_AFTER_S``); a running session is never cut off, and a
  session adopted from the state store (started by another process) is always taken.
- ``max_calls_per_second``: a token bucket per tenant holding at most ``max(1, rate)`` tokens
  (one second's burst), refilled at ``rate`` per wall second; a call that finds it empty is
  refused with the wait until the next token as its retry-after.
- ``max_kv_tokens``: the KV the tenant's work holds, counted as each open session's current
  context (the prompt of its call in flight, else prompt + output of its last call) plus the
  prompts of its session-less calls in flight. A call that would take the tenant above the
  quota is refused; a session's new prompt replaces its old context in the sum (agents resend
  the conversation), so a session alone is refused only when its own context outgrows it.

Scope: the counts live in a quota ledger (:mod:`saga.service.state.quota_api`; the core picks
it with :func:`ledger_for`). With the in-memory state store it is this process's
(:class:`~saga.service.state.memory_quotas.LocalQuotaLedger`). With the Redis state store
(several scheduler processes behind one Service) it is
:class:`~saga.service.state.redis_quotas.RedisQuotaLedger`: a tenant's open sessions and KV
tokens are summed over every live process (a session served by several processes counts once)
and the tenant has one token bucket for the whole deployment. Each check of a tenant with a
quota is one atomic Lua script on Redis (one round trip); tenants without one cost nothing. A
crashed process's counts stop counting once its heartbeat expires (15 s). While Redis is
unreachable checks are decided on this process's counts against its share of each quota (1/N of
it with N live processes last seen, :meth:`~saga.service.state.quota_api.Quota.share`; named in
the refusal's message), logged once and counted in ``saga_quota_local_fallbacks_total``; no
request fails for it, and only the first check of an outage waits for Redis (at most the
store's ``op_timeout_s``, 0.5 s).

Times come from the injected clock, converted to wall seconds (``core_types.to_wall``: the
bench's time-scaled clock), so a rate is per real second.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

from saga.clock import Clock
from saga.service.core_types import to_wall
from saga.service.errors import Rejected
from saga.service.state.api import StateStore
from saga.service.state.memory_quotas import LocalQuotaLedger
from saga.service.state.quota_api import NO_QUOTA, Claim, Quota, QuotaLedger, Verdict

if TYPE_CHECKING:
    from saga.service.metrics import ServiceMetrics

__all__ = ["NO_QUOTA", "REASON", "RETRY_AFTER_S", "Quota", "TenantQuotas", "ledger_for"]

REASON = "tenant_quota"
RETRY_AFTER_S = 5.0  # hint on a session or KV refusal: sessions and contexts change in seconds


def ledger_for(store: StateStore, process_id: str) -> QuotaLedger:
    """The quota ledger that goes with ``store``: shared through Redis for the Redis state
    store (process ``process_id``, whose heartbeats the store keeps), else this process's."""
    from saga.service.state.redis_store import RedisStore  # only when Redis is in use

    if isinstance(store, RedisStore):
        return store.quota_ledger(process_id)
    return LocalQuotaLedger()


class TenantQuotas:
    """Checks each tenant's open sessions, KV tokens and call rate; refuses what exceeds its quota.

    ``quota_of(tenant)`` is read on every check, so a reloaded policy applies from the next
    request. The core awaits :meth:`admit_session` (which counts the session it admits) and
    calls :meth:`session_opened` for an adopted session and :meth:`session_closed` when one
    ends; it awaits :meth:`admit_call` before each call and calls :meth:`adjust_kv` when a
    call's context changes the count. The counting is the ``ledger``'s (default: this
    process's); ``metrics`` counts checks that fell back to this process's counts.
    """

    def __init__(
        self,
        clock: Clock,
        quota_of: Callable[[str], Quota],
        ledger: QuotaLedger | None = None,
        *,
        metrics: ServiceMetrics | None = None,
    ) -> None:
        self._clock = clock
        self._quota_of = quota_of
        self.ledger: QuotaLedger = ledger if ledger is not None else LocalQuotaLedger()
        self._metrics = metrics

    def held(self, tenant: str) -> tuple[int, int]:
        """This process's (open sessions, KV tokens) of ``tenant``."""
        return self.ledger.held(tenant)

    async def close(self) -> None:
        await self.ledger.close()

    # ------------------------------------------------------------------ sessions

    async def admit_session(self, tenant: str, session_id: str) -> None:
        """Count the new session ``session_id`` of ``tenant``, or raise :class:`Rejected`
        (counting nothing) when the tenant already has its quota of open sessions."""
        q = self._quota_of(tenant)
        v = await self.ledger.claim(tenant, Claim(session_id, open=True), q, self._now())
        self._checked(v)
        if not v.admitted:
            raise Rejected(
                f"tenant {tenant!r} has {v.held} open sessions, its quota is {q.max_active_sessions}"
                + _share(v, q.share(v.processes).max_active_sessions),
                reason=REASON,
                retry_after_s=RETRY_AFTER_S,
            )

    def session_opened(self, tenant: str, session_id: str) -> None:
        """A session adopted from the state store: counted, never refused."""
        self.ledger.adopt(tenant, self._quota_of(tenant), session_id)

    def session_closed(self, tenant: str, session_id: str) -> None:
        """The session ended: it and its context (its share of the KV count) no longer count."""
        self.ledger.close_session(tenant, self._quota_of(tenant), session_id)

    # ------------------------------------------------------------------ calls

    async def admit_call(self, tenant: str, kv_delta: int, session_id: str | None = None) -> None:
        """Check one call that adds ``kv_delta`` tokens to the tenant's KV count (a call of
        session ``session_id``: by how much its prompt exceeds the session's counted context; a
        session-less call: its prompt). On success the call is counted (rate and KV); the core
        moves the count later with :meth:`adjust_kv`. Raises :class:`Rejected`, counting
        nothing, when a quota would be exceeded; a call that adds no KV is never refused for KV."""
        q = self._quota_of(tenant)
        claim = Claim(session_id, kv_tokens=kv_delta, call=True)
        v = await self.ledger.claim(tenant, claim, q, self._now())
        self._checked(v)
        if v.admitted:
            return
        if v.refused_by == "kv_tokens":
            raise Rejected(
                f"tenant {tenant!r} would hold ~{v.held} KV tokens, its quota is {q.max_kv_tokens}"
                + _share(v, q.share(v.processes).max_kv_tokens),
                reason=REASON,
                retry_after_s=RETRY_AFTER_S,
            )
        raise Rejected(
            f"tenant {tenant!r} exceeds its quota of {q.max_calls_per_second:g} calls per second"
            + _share(v, q.share(v.processes).max_calls_per_second),
            reason=REASON,
            retry_after_s=max(0.001, math.ceil(v.retry_after_s * 1000) / 1000),
        )

    def adjust_kv(self, tenant: str, delta: int, session_id: str | None = None) -> None:
        """Move the KV count of session ``session_id`` (None: the tenant's session-less calls)
        by ``delta`` tokens (a call finished)."""
        self.ledger.add_kv(tenant, self._quota_of(tenant), session_id, delta)

    # ------------------------------------------------------------------ helpers

    def _now(self) -> float:
        return to_wall(self._clock, self._clock.now())

    def _checked(self, v: Verdict) -> None:
        if v.fallback and self._metrics is not None:
            self._metrics.quota_fallback(v.fallback)


def _share(v: Verdict, share: float) -> str:
    """The share of the quota a verdict decided on one process's counts was held to."""
    if v.processes <= 1:
        return ""
    return f" (this process's share while quotas are decided locally: {share:g}, 1/{v.processes})"
