"""Per-tenant admission quotas, enforced at the service's edge before the engine sees a request.

A tenant's quotas come from ``spec.tenants[]`` or its tenant policy's ``quotas`` (hot
reloaded, :mod:`saga.service.tenants_reload`); each is 0 for unlimited. A refusal is a
:class:`~saga.service.errors.Rejected` with reason ``tenant_quota`` (gRPC
RESOURCE_EXHAUSTED with ``retry-after-ms``, HTTP 429 with ``Retry-After``), counted in
``saga_admission_rejections_total{reason="tenant_quota"}``; nothing of the request reached
the engine, so a retry is safe.

- ``max_active_sessions``: the tenant's open sessions in this process. A new session beyond
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

Scope: each scheduler process counts what it serves. With several processes behind one
Service (Redis mode) a tenant can hold up to that many times its quota; per-process counts
keep the check off the state store's round trip on every call.

Times come from the injected clock, converted to wall seconds (``core_types.to_wall``: the
bench's time-scaled clock), so a rate is per real second.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from saga.clock import Clock
from saga.service.core_types import to_wall
from saga.service.errors import Rejected

REASON = "tenant_quota"
RETRY_AFTER_S = 5.0  # hint on a session or KV refusal: sessions and contexts change in seconds


@dataclass(frozen=True, slots=True)
class Quota:
    """One tenant's limits (0: unlimited)."""

    max_active_sessions: int = 0
    max_calls_per_second: float = 0.0
    max_kv_tokens: int = 0


NO_QUOTA = Quota()


@dataclass(slots=True)
class _Bucket:
    rate: float
    tokens: float
    at: float  # wall seconds of the last refill


class TenantQuotas:
    """Counts each tenant's open sessions, KV tokens and call rate; refuses what exceeds its quota.

    ``quota_of(tenant)`` is read on every check, so a reloaded policy applies from the next
    request. The core calls :meth:`admit_session` / :meth:`session_opened` /
    :meth:`session_closed` around a session's life, :meth:`admit_call` before each call and
    :meth:`adjust_kv` when a call's context changes the count.
    """

    def __init__(self, clock: Clock, quota_of: Callable[[str], Quota]) -> None:
        self._clock = clock
        self._quota_of = quota_of
        self.open_sessions: Counter[str] = Counter()
        self.kv_tokens: Counter[str] = Counter()  # tenant → tokens counted (see module docstring)
        self._buckets: dict[str, _Bucket] = {}

    # ------------------------------------------------------------------ sessions

    def admit_session(self, tenant: str) -> None:
        """Raise :class:`Rejected` when ``tenant`` already has its quota of open sessions."""
        cap = self._quota_of(tenant).max_active_sessions
        if cap > 0 and self.open_sessions[tenant] >= cap:
            raise Rejected(
                f"tenant {tenant!r} has {self.open_sessions[tenant]} open sessions, its quota is {cap}",
                reason=REASON,
                retry_after_s=RETRY_AFTER_S,
            )

    def session_opened(self, tenant: str) -> None:
        self.open_sessions[tenant] += 1

    def session_closed(self, tenant: str, context_tokens: int) -> None:
        """The session ended; ``context_tokens`` is what it was counted for in the KV sum."""
        self.open_sessions[tenant] -= 1
        if self.open_sessions[tenant] <= 0:
            del self.open_sessions[tenant]
        self._add_kv(tenant, -context_tokens)

    # ------------------------------------------------------------------ calls

    def admit_call(self, tenant: str, kv_delta: int) -> None:
        """Check one call that adds ``kv_delta`` tokens to the tenant's KV count (a session
        call: by how much its prompt exceeds the session's counted context; a session-less
        call: its prompt). On success the call is counted (rate and KV); the core moves the
        count later with :meth:`adjust_kv`. Raises :class:`Rejected`, counting nothing, when a
        quota would be exceeded; a call that adds no KV is never refused for KV."""
        q = self._quota_of(tenant)
        if q.max_kv_tokens > 0 and kv_delta > 0:
            after = self.kv_tokens[tenant] + kv_delta
            if after > q.max_kv_tokens:
                raise Rejected(
                    f"tenant {tenant!r} would hold ~{after} KV tokens, its quota is {q.max_kv_tokens}",
                    reason=REASON,
                    retry_after_s=RETRY_AFTER_S,
                )
        if q.max_calls_per_second > 0:
            self._take_token(tenant, q.max_calls_per_second)
        else:
            self._buckets.pop(tenant, None)
        self.adjust_kv(tenant, kv_delta)

    def adjust_kv(self, tenant: str, delta: int) -> None:
        """Move the tenant's KV count by ``delta`` tokens (a call finished, a session ended)."""
        self._add_kv(tenant, delta)

    def _add_kv(self, tenant: str, delta: int) -> None:
        v = self.kv_tokens[tenant] + delta
        if v > 0:
            self.kv_tokens[tenant] = v
        else:
            self.kv_tokens.pop(tenant, None)

    def _take_token(self, tenant: str, rate: float) -> None:
        now = to_wall(self._clock, self._clock.now())
        burst = max(1.0, rate)
        b = self._buckets.get(tenant)
        if b is None or b.rate != rate:
            b = self._buckets[tenant] = _Bucket(rate, burst, now)
        b.tokens = min(burst, b.tokens + max(0.0, now - b.at) * rate)
        b.at = now
        if b.tokens < 1.0:
            wait = (1.0 - b.tokens) / rate
            raise Rejected(
                f"tenant {tenant!r} exceeds its quota of {rate:g} calls per second",
                reason=REASON,
                retry_after_s=max(0.001, math.ceil(wait * 1000) / 1000),
            )
        b.tokens -= 1.0
