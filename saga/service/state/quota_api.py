"""The quota ledger contract: where tenants' admission counts live.

:class:`~saga.service.quotas.TenantQuotas` (the service's edge: messages, metrics, clock) asks
a :class:`QuotaLedger` to count and decide; the ledger never raises for a refusal, it returns
a :class:`Verdict`. Two implementations pass the conformance suite in
``tests/contract/service_state/test_quota_ledger_contract.py``:

* :class:`~saga.service.state.memory_quotas.LocalQuotaLedger`: this process's counts only
  (the embedded/in-memory state store; one scheduler process).
* :class:`~saga.service.state.redis_quotas.RedisQuotaLedger`: counts shared by every scheduler
  process on one Redis (the Redis state store), with this process's counts as its fallback.

What is counted per tenant: open sessions, KV tokens held (see :mod:`saga.service.quotas` for
what the service counts as a tenant's KV) and calls per second (a token bucket of one second's
burst, ``max(1, rate)`` tokens, refilled at ``rate`` per second of ``now``). ``now`` is wall
seconds on the caller's clock: only its differences matter to a local ledger; a shared one
anchors it to Unix time once, so that processes agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class Quota:
    """One tenant's limits (0: unlimited)."""

    max_active_sessions: int = 0
    max_calls_per_second: float = 0.0  # calls per wall second
    max_kv_tokens: int = 0

    @property
    def limited(self) -> bool:
        """True when any limit is set (only such tenants cost a shared ledger a round trip)."""
        return self.max_active_sessions > 0 or self.max_calls_per_second > 0 or self.max_kv_tokens > 0

    def share(self, processes: int) -> Quota:
        """One process's share of each limit when ``processes`` (at least 1) split it: what a
        shared ledger enforces on its own counts while its store is unreachable. Sessions and KV
        tokens are floored (the shares never sum above the limit) but at least 1 (a share of 0
        would read as unlimited, and each process must still be able to serve the tenant); the
        rate is divided exactly (the local bucket then holds ``max(1, rate / processes)``
        tokens). 0 (unlimited) stays 0."""
        n = max(1, processes)
        if n == 1:
            return self
        return Quota(
            max_active_sessions=_part(self.max_active_sessions, n),
            max_calls_per_second=self.max_calls_per_second / n,
            max_kv_tokens=_part(self.max_kv_tokens, n),
        )


def _part(limit: int, n: int) -> int:
    return max(1, limit // n) if limit > 0 else 0


NO_QUOTA = Quota()


@dataclass(frozen=True, slots=True)
class Claim:
    """What one admission adds to a tenant's counts, all checked in one step.

    ``session_id``: the session the claim is for (None: a session-less call). ``open``: a new
    session ``session_id``, checked against ``max_active_sessions``. ``kv_tokens``: KV tokens
    the claim adds, checked against ``max_kv_tokens`` when > 0 (a claim that adds none is never
    refused for KV): a session's context grows by them, a session-less call holds them while
    in flight. ``call``: take one token from the tenant's bucket (when ``max_calls_per_second``
    > 0).
    """

    session_id: str | None = None
    open: bool = False
    kv_tokens: int = 0
    call: bool = False


@dataclass(frozen=True, slots=True)
class Verdict:
    """A ledger's answer to a :class:`Claim`.

    ``admitted``: the claim is counted (else nothing of it is). ``refused_by``: the quota that
    refused, ``"sessions"``, ``"kv_tokens"`` or ``"calls"`` ("" when admitted); the checks run
    in that order and a refusal spends nothing (no token for a KV refusal, no KV for a rate
    refusal). ``held``: for ``"sessions"`` the tenant's open sessions before the claim, for
    ``"kv_tokens"`` the KV tokens it would hold with it. ``retry_after_s``: for ``"calls"``, the
    seconds until the bucket has a token. ``fallback``: "" when the ledger decided on its own
    counts; otherwise why a shared ledger decided on this process's counts instead
    (``"unreachable"``: its store cannot be reached; ``"error"``: the store answered with an
    error). ``processes``: for such a fallback, the live processes it last saw, among which each
    quota was split (it decided against ``quota.share(processes)``); 1 otherwise.
    """

    admitted: bool
    refused_by: str = ""
    held: int = 0
    retry_after_s: float = 0.0
    fallback: str = ""
    processes: int = 1


ADMITTED = Verdict(True)


@runtime_checkable
class QuotaLedger(Protocol):
    """Counts each tenant's open sessions and KV tokens and keeps its call-rate bucket.

    A session is counted once per tenant, with its current context as its KV, from its
    :meth:`claim` with ``open`` (or :meth:`adopt`) to the matching :meth:`close_session` (opened
    twice, e.g. by two racing first requests, it stays open until closed twice). :meth:`claim` is
    the only check (a coroutine: a shared ledger asks its store); the other methods change
    counts without a check and never wait (a shared ledger publishes the change in the
    background), so callers can use them in ``finally`` blocks and callbacks. ``quota`` is the
    tenant's current quota on every call (a shared ledger publishes the counts of tenants that
    have one, or had one while it held counts). Every method must be called on the event loop
    that runs the service.
    """

    async def claim(self, tenant: str, claim: Claim, quota: Quota, now: float) -> Verdict:
        """Count ``claim`` for ``tenant`` unless it takes the tenant over ``quota``."""
        ...

    def adopt(self, tenant: str, quota: Quota, session_id: str) -> None:
        """An open session started elsewhere (another process): counted, never refused."""
        ...

    def add_kv(self, tenant: str, quota: Quota, session_id: str | None, delta: int) -> None:
        """Move a session's context (None: the tenant's session-less KV) by ``delta`` tokens,
        unchecked: a call finished. Counts never go below 0; a session that is not open (it
        ended meanwhile) counts nothing."""
        ...

    def close_session(self, tenant: str, quota: Quota, session_id: str) -> None:
        """The session ended: it and its context no longer count (unknown sessions: nothing)."""
        ...

    def held(self, tenant: str) -> tuple[int, int]:
        """This process's (open sessions, KV tokens) of ``tenant``."""
        ...

    async def close(self) -> None:
        """Stop background work (a shared ledger's publishing and probing)."""
        ...
