"""In-process quota ledger: one scheduler process's counts (the in-memory state store's ledger).

Plain dictionaries, no locks: :meth:`LocalQuotaLedger.claim` never awaits, so a check and its
count are one step with respect to other coroutines. Per tenant it keeps the open sessions with
each one's context (its KV), the KV of session-less calls in flight, and a token bucket holding
at most ``max(1, rate)`` tokens (one second's burst), refilled at ``rate`` per second of
``now``; a tenant whose rate quota is removed loses its bucket, and a changed rate starts a
full one. The shared :class:`~saga.service.state.redis_quotas.RedisQuotaLedger` keeps one of
these as this process's counts and decides with it (against this process's share of each
quota) while Redis is unreachable.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from saga.service.state.quota_api import ADMITTED, Claim, Quota, Verdict


@dataclass(slots=True)
class _Bucket:
    rate: float
    tokens: float
    at: float  # ``now`` of the last refill


class LocalQuotaLedger:
    """A :class:`~saga.service.state.quota_api.QuotaLedger` in process memory."""

    def __init__(self) -> None:
        self._contexts: dict[str, dict[str, int]] = {}  # tenant → open session → context tokens
        self._opens: Counter[tuple[str, str]] = Counter()  # (tenant, session) → opens not closed
        self._loose: Counter[str] = Counter()  # tenant → session-less KV tokens in flight
        self._kv: Counter[str] = Counter()  # tenant → KV tokens (contexts + session-less)
        self._buckets: dict[str, _Bucket] = {}

    # ---- the contract

    async def claim(self, tenant: str, claim: Claim, quota: Quota, now: float) -> Verdict:
        return self.claim_now(tenant, claim, quota, now)

    def adopt(self, tenant: str, quota: Quota, session_id: str) -> None:
        self._contexts.setdefault(tenant, {}).setdefault(session_id, 0)
        self._opens[tenant, session_id] += 1

    def add_kv(self, tenant: str, quota: Quota, session_id: str | None, delta: int) -> None:
        if not delta:
            return
        if session_id is not None:
            sessions = self._contexts.get(tenant, {})
            if session_id in sessions:  # else it ended meanwhile: nothing to count
                old = sessions[session_id]
                sessions[session_id] = max(0, old + delta)
                self._move_kv(tenant, sessions[session_id] - old)
        else:
            old = self._loose[tenant]
            new = max(0, old + delta)
            if new:
                self._loose[tenant] = new
            else:
                self._loose.pop(tenant, None)
            self._move_kv(tenant, new - old)

    def close_session(self, tenant: str, quota: Quota, session_id: str) -> None:
        sessions = self._contexts.get(tenant)
        if sessions is None or session_id not in sessions:
            return
        self._opens[tenant, session_id] -= 1
        if self._opens[tenant, session_id] > 0:  # opened twice (a race on its id): still open
            return
        del self._opens[tenant, session_id]
        self._move_kv(tenant, -sessions.pop(session_id))
        if not sessions:
            del self._contexts[tenant]

    def held(self, tenant: str) -> tuple[int, int]:
        return len(self._contexts.get(tenant, ())), self._kv[tenant]

    async def close(self) -> None:
        return None

    # ---- for the shared ledger

    def claim_now(self, tenant: str, claim: Claim, quota: Quota, now: float) -> Verdict:
        """:meth:`claim` without the coroutine (it never waits)."""
        open_now = len(self._contexts.get(tenant, ()))
        cap = quota.max_active_sessions
        if claim.open and cap > 0 and open_now + 1 > cap:
            return Verdict(False, "sessions", held=open_now)
        kcap = quota.max_kv_tokens
        if claim.kv_tokens > 0 and kcap > 0:
            after = self._kv[tenant] + claim.kv_tokens
            if after > kcap:
                return Verdict(False, "kv_tokens", held=after)
        if claim.call:
            rate = quota.max_calls_per_second
            if rate > 0:
                wait = self._take_token(tenant, rate, now)
                if wait > 0:
                    return Verdict(False, "calls", retry_after_s=wait)
            else:
                self._buckets.pop(tenant, None)
        self.count(tenant, claim, quota)
        return ADMITTED

    def count(self, tenant: str, claim: Claim, quota: Quota) -> None:
        """Count ``claim`` without checking it (the shared ledger admitted it)."""
        if claim.open:
            if claim.session_id is None:
                raise ValueError("a claim that opens a session needs its session_id")
            self.adopt(tenant, quota, claim.session_id)
        self.add_kv(tenant, quota, claim.session_id, claim.kv_tokens)

    def context(self, tenant: str, session_id: str) -> int | None:
        """The counted context of an open session (None: not open here)."""
        return self._contexts.get(tenant, {}).get(session_id)

    def loose(self, tenant: str) -> int:
        """The tenant's session-less KV tokens in flight."""
        return self._loose[tenant]

    def _move_kv(self, tenant: str, delta: int) -> None:
        v = self._kv[tenant] + delta
        if v > 0:
            self._kv[tenant] = v
        else:
            self._kv.pop(tenant, None)

    def _take_token(self, tenant: str, rate: float, now: float) -> float:
        """Take a token; 0.0 when taken, else the seconds until one is there."""
        burst = max(1.0, rate)
        b = self._buckets.get(tenant)
        if b is None or b.rate != rate:
            b = self._buckets[tenant] = _Bucket(rate, burst, now)
        b.tokens = min(burst, b.tokens + max(0.0, now - b.at) * rate)
        b.at = max(b.at, now)
        if b.tokens < 1.0:
            return (1.0 - b.tokens) / rate
        b.tokens -= 1.0
        return 0.0
