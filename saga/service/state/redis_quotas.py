"""Redis quota ledger: tenants' quotas counted across every scheduler process on one Redis.

Used whenever the service runs with the Redis state store (it shares the store's client).
Each process keeps its own counts in a :class:`~saga.service.state.memory_quotas.LocalQuotaLedger`
(``local``: what it decides on during an outage) and writes what it counts to Redis; a check
sums what every live process wrote.

Layout (under the store's ``namespace``, default ``saga``)
----------------------------------------------------------

==============================  =====  ================================================
key                             type   content
==============================  =====  ================================================
``saga:quota:held:<tenant>``    hash   ``s:<session>`` → ``"<context tokens> <pid>"``:
                                       an open session, counted by the process that
                                       last counted a call of it
``saga:quota:procs:<tenant>``   hash   per process: ``S:<pid>`` sessions and ``K:<pid>``
                                       their contexts (the totals of its ``s:`` fields),
                                       ``p:<pid>`` KV of its session-less calls in flight
``saga:quota:rate:<tenant>``    hash   token bucket: ``tokens``, ``at`` (Unix s of the
                                       last refill), ``rate``; expires once it would be
                                       full again (absent = full)
``saga:hb``                     zset   the store's heartbeats (process id → expiry, Unix s)
==============================  =====  ================================================

The two count hashes expire ``held_ttl_s`` after their last write.

Algorithm
---------

A tenant's open sessions are its ``s:`` fields, its KV tokens the sum of their contexts and of
its ``p:`` fields, each counted only while the process named in it is alive: its heartbeat in
``saga:hb`` has not expired (the caller always counts). Keying sessions by id, not per
process, counts a session once however many processes serve it: with several processes behind
one Service a session's calls land on any of them, and each one that serves it adopts it
(:meth:`RedisQuotaLedger.adopt` writes its field only where none is, e.g. after the process
that counted it died; the first call it serves then takes the field over with the context it
counts). Whichever process ends the session deletes its field. The ``procs`` hash keeps each
process's totals of the sessions named on it, moved in the same step as every session field,
so a check reads one field per process, not one per session.

One Lua script (``_ADMIT``, EVALSHA through ``register_script``; atomic in Redis) does a check
and its writes together. It deletes the totals of processes whose heartbeat expired, and then
(only then: a scan of the sessions) the sessions named on them, so **a crashed process's counts
stop counting once its heartbeat expires** (15 s in the service; a session it served counts
again when another process serves its next call). It applies the caller's changes not written
yet, sums the totals, checks the session quota (a new session), the KV quota (the claim's
session or session-less count with the claim replaces the stored one in the sum: agents resend
the conversation), then takes a token from the tenant's bucket (refilled by the caller's time,
passed as an argument), and when admitted writes the claim's count. A refusal writes nothing of
the claim. Writes are absolute values (a session's context, a process's session-less KV), so a
repeated or timed-out write that did land is harmless and any later write repairs what an
earlier one missed.

Within a process one check or publish per tenant runs at a time (an ``asyncio.Lock`` per
tenant), so concurrent claims never overshoot nor refuse below the quota and writes reach
Redis in order; a tenant's checks in one process thus run at most one per round trip
(thousands per second on a LAN: far above an agent tenant's call rate). A claim is counted in
``local`` once admitted. Changes that need no check (a call finished, a session ended) are
published by one background task, coalesced per tenant into one run of the script that writes
each changed session's context as it is then (or deletes the session's field); a check of the
tenant that comes first writes them itself, in its own step, so a process's checks always see
its own changes. A check costs ~0.15 ms on loopback whatever the number of open sessions.
**Only claims a quota can refuse wait for a round trip**: a tenant without a quota is counted
locally, and published only while fields of it written by this process may be in Redis (so they
go); a claim no quota of its tenant can refuse (a call of a tenant with only a session quota) is
counted locally and published in the background.
Times: ``now`` from the caller (the quotas' clock, in wall seconds) is anchored to Unix time once
(``wall() - now`` at the first claim), because heartbeats and the shared bucket need a time all
processes agree on.

Redis outage
------------

A claim that finds Redis unreachable (connection refused, timed out: at most the store's
``op_timeout_s``, once) is **decided on this process's counts against its share of each
quota** (``local``, with a local token bucket) and reported with
``Verdict.fallback="unreachable"`` and ``Verdict.processes``. The share is
:meth:`Quota.share(n) <saga.service.state.quota_api.Quota.share>`, ``n`` the live processes
(this one included) last seen: every run of the script counts the live heartbeats in
``saga:hb``, and so does each heartbeat of the store that made the ledger (every 5 s in the
service, :meth:`RedisQuotaLedger.observe_live`): sessions and KV tokens ``quota // n`` but at least 1, calls
``rate / n`` per second (a bucket of ``max(1, rate / n)`` tokens). So the deployment admits
about each quota, not ``n`` times it (a quota below ``n`` still lets each process admit one);
where a tenant's traffic is uneven, a busy process refuses before the tenant reaches its quota.
What the process already counts counts against its share (nothing is cut off). A process whose
first round trip has not succeeded yet takes ``n = 1``: the whole quota, as with one process.
One warning is logged, naming the share, and until a background probe (every
``retry_interval_s``) reaches Redis again every claim is decided locally without trying it. On
recovery what the process counted or uncounted meanwhile is written, and its session-less KV
(Redis may have restarted empty, or pruned this process meanwhile; its other sessions count
again with their next call). Any other Redis error is decided locally too, on the same share
(``fallback="error"``, logged once until a claim succeeds). Quota checks never fail a request
for Redis, whatever the store's ``on_outage``, and only the checks of the first round trip of
an outage wait for it (at most the store's ``op_timeout_s``, 0.5 s; checks queued behind it on
the tenant's lock then decide locally).

Tunables: ``retry_interval_s`` (1 s, the store's: seconds between probes while unreachable),
``held_ttl_s`` (86,400 s = 24 h, as the store's bindings: a tenant's counts left by processes
that all stopped writing are forgotten), ``wall`` (Unix time, ``time.time``; tests inject it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from saga.service.state.memory_quotas import LocalQuotaLedger
from saga.service.state.quota_api import ADMITTED, Claim, Quota, Verdict

log = logging.getLogger(__name__)
_OUTAGE_ERRORS = (RedisConnectionError, RedisTimeoutError, OSError, TimeoutError)
DEFAULT_HELD_TTL_S = 86_400.0

# KEYS: sessions hash, processes hash, heartbeat zset, rate hash. ARGV: [1] process id, [2] now
# (Unix s), [3] the claim's session ("": a session-less call), [4] its KV tokens with the claim
# (the session's context, or this process's session-less KV), [5] 1 to open a session, [6] the
# claim's KV tokens, [7] [8] session / KV quota (0: none), [9] calls per second (0: none),
# [10] 1 to take a call, [11] TTL of the two hashes (ms), then pairs of field and value: this
# process's changes not written yet, applied first (s:<session> → its context, "": ended,
# "?<context>": only if no process counts it; p:<pid> → session-less KV, "": none).
# Returns {admitted 0/1, refused by, held, wait s, live processes (the caller included)}.
_ADMIT = """
local S, P, pid, now = KEYS[1], KEYS[2], ARGV[1], tonumber(ARGV[2])
local function num(x) return string.format('%.17g', x) end
local function int(x) return string.format('%d', x) end
local function counted(sid)
  local v = redis.call('HGET', S, 's:' .. sid)
  if not v then return nil end
  local ctx, owner = string.match(v, '^(%S+) (.*)$')
  return tonumber(ctx), owner
end
local function uncount(sid)
  local ctx, owner = counted(sid)
  if ctx == nil then return end
  redis.call('HDEL', S, 's:' .. sid)
  if redis.call('HEXISTS', P, 'S:' .. owner) == 0 then return end
  if redis.call('HINCRBY', P, 'S:' .. owner, -1) <= 0 then
    redis.call('HDEL', P, 'S:' .. owner, 'K:' .. owner)
  elseif redis.call('HINCRBY', P, 'K:' .. owner, int(-ctx)) < 0 then
    redis.call('HSET', P, 'K:' .. owner, 0)
  end
end
local function count(sid, ctx)
  uncount(sid)
  redis.call('HSET', S, 's:' .. sid, int(ctx) .. ' ' .. pid)
  redis.call('HINCRBY', P, 'S:' .. pid, 1)
  redis.call('HINCRBY', P, 'K:' .. pid, int(ctx))
end
-- Processes whose heartbeat expired: their totals and their sessions go.
local procs, live, dead = redis.call('HGETALL', P), {}, {}
for i = 1, #procs, 2 do
  local p = string.sub(procs[i], 3)
  if live[p] == nil then
    local e = redis.call('ZSCORE', KEYS[3], p)
    live[p] = p == pid or (e ~= false and tonumber(e) > now)
    if not live[p] then dead[p] = true; redis.call('HDEL', P, 'S:' .. p, 'K:' .. p, 'p:' .. p) end
  end
end
if next(dead) ~= nil then
  local flat = redis.call('HGETALL', S)
  for i = 1, #flat, 2 do
    if dead[string.match(flat[i + 1], '^%S+ (.*)$')] then redis.call('HDEL', S, flat[i]) end
  end
end
for i = 12, #ARGV, 2 do
  local f, v = ARGV[i], ARGV[i + 1]
  if string.sub(f, 1, 2) == 'p:' then
    if v == '' then redis.call('HDEL', P, f) else redis.call('HSET', P, f, v) end
  elseif v == '' then uncount(string.sub(f, 3))
  elseif string.sub(v, 1, 1) ~= '?' then count(string.sub(f, 3), tonumber(v))
  elseif redis.call('HEXISTS', S, f) == 0 then count(string.sub(f, 3), tonumber(string.sub(v, 2))) end
end
-- The tenant's totals without the claim's own count, which the claim replaces.
local sessions, kv = 0, 0
procs = redis.call('HGETALL', P)
for i = 1, #procs, 2 do
  if string.sub(procs[i], 1, 2) == 'S:' then sessions = sessions + tonumber(procs[i + 1])
  else kv = kv + tonumber(procs[i + 1]) end
end
local sid, after, add_k = ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[6])
if sid ~= '' then
  local ctx = counted(sid)
  if ctx ~= nil then sessions, kv = sessions - 1, kv - ctx end
else
  kv = kv - (tonumber(redis.call('HGET', P, 'p:' .. pid)) or 0)
end
local cap_s, cap_k, rate = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])
local admitted, by, held, wait = 1, '', 0, 0
if ARGV[5] == '1' and cap_s > 0 and sessions + 1 > cap_s then
  admitted, by, held = 0, 'sessions', sessions
elseif add_k > 0 and cap_k > 0 and kv + after > cap_k then
  admitted, by, held = 0, 'kv_tokens', kv + after
elseif ARGV[10] == '1' and rate > 0 then
  local burst = math.max(1, rate)
  local b = redis.call('HMGET', KEYS[4], 'tokens', 'at', 'rate')
  local tokens, at = burst, now
  if b[1] and b[3] == ARGV[9] then tokens, at = tonumber(b[1]), tonumber(b[2]) end
  tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
  at = math.max(at, now)
  if tokens < 1 then admitted, by, wait = 0, 'calls', (1 - tokens) / rate else tokens = tokens - 1 end
  redis.call('HSET', KEYS[4], 'tokens', num(tokens), 'at', num(at), 'rate', ARGV[9])
  redis.call('PEXPIRE', KEYS[4], math.ceil(burst / rate * 1000) + 1000)
end
if admitted == 1 then
  if sid ~= '' then count(sid, after)
  elseif after > 0 then redis.call('HSET', P, 'p:' .. pid, int(after))
  else redis.call('HDEL', P, 'p:' .. pid) end
end
redis.call('PEXPIRE', S, ARGV[11])
redis.call('PEXPIRE', P, ARGV[11])
local n, mine = redis.call('ZCOUNT', KEYS[3], '(' .. ARGV[2], '+inf'), redis.call('ZSCORE', KEYS[3], pid)
if mine == false or tonumber(mine) <= now then n = n + 1 end
return {admitted, by, num(held), num(wait), n}
"""

LOOSE = None  # the key of a tenant's session-less KV among the keys to publish
_PUBLISH = Claim()
_NO_LIMITS = Quota()


def _checked(claim: Claim, quota: Quota) -> bool:
    """Whether ``quota`` can refuse ``claim`` (else it needs no round trip)."""
    return (
        (claim.open and quota.max_active_sessions > 0)
        or (claim.kv_tokens > 0 and quota.max_kv_tokens > 0)
        or (claim.call and quota.max_calls_per_second > 0)
    )


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisQuotaLedger:
    """A :class:`~saga.service.state.quota_api.QuotaLedger` shared through Redis (see module)."""

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        process_id: str,
        namespace: str = "saga",
        retry_interval_s: float = 1.0,
        held_ttl_s: float = DEFAULT_HELD_TTL_S,
        wall: Callable[[], float] = time.time,
    ) -> None:
        if held_ttl_s <= 0:
            raise ValueError(f"held_ttl_s must be > 0 seconds, got {held_ttl_s}")
        self.process_id = process_id
        self.retry_interval_s = retry_interval_s
        self.held_ttl_s = held_ttl_s
        self.local = LocalQuotaLedger()
        self.degraded = False  # Redis unreachable: claims are decided on ``local``
        self._client = client
        self._ns = namespace
        self._wall = wall
        self._admit = client.register_script(_ADMIT)
        self._offset: float | None = None  # Unix seconds minus the caller's ``now``
        self._last_unix = 0.0
        self._tracked: set[str] = set()  # tenants with fields this process wrote
        self._pending: dict[str, set[str | None]] = {}  # tenant → sessions (LOOSE) to publish
        self._locks: dict[str, asyncio.Lock] = {}  # one check or publish per tenant at a time
        self._flusher: asyncio.Task[None] | None = None
        self._prober: asyncio.Task[None] | None = None
        self._error_logged = False
        self._live: int | None = None  # live processes the last script run saw (None: none yet)

    # ---- the contract

    async def claim(self, tenant: str, claim: Claim, quota: Quota, now: float) -> Verdict:
        unix = self._unix(now)
        if not _checked(claim, quota):  # nothing to refuse: counted, published in the background
            verdict = self.local.claim_now(tenant, claim, quota, now)
            if quota.limited or tenant in self._tracked:
                self._publish(tenant, claim.session_id)
            return verdict
        async with self._lock(tenant):
            if self.degraded:
                return self._fallback(tenant, claim, quota, now, "unreachable")
            self._tracked.add(tenant)
            keys = self._pending.pop(tenant, set())  # written first, in the same step
            try:
                admitted, by, held, wait = await self._run(tenant, unix, claim, quota, keys)
            except _OUTAGE_ERRORS as exc:
                self._pending.setdefault(tenant, set()).update(keys)
                self._enter_outage(exc)
                return self._fallback(tenant, claim, quota, now, "unreachable")
            except RedisError as exc:
                self._report_error(exc)
                return self._fallback(tenant, claim, quota, now, "error")
            except BaseException:  # cancelled: the script may have counted the claim
                self._publish(tenant, claim.session_id)
                self._pending[tenant].update(keys)
                raise
            self._error_logged = False
            if admitted:
                self.local.count(tenant, claim, quota)
        if admitted:
            return ADMITTED
        return Verdict(False, _s(by), held=round(float(held)), retry_after_s=float(wait))

    def adopt(self, tenant: str, quota: Quota, session_id: str) -> None:
        # In Redis only where no live process counts it (its field stays whose it is, with its
        # context, until this process counts a call of it).
        self.local.adopt(tenant, quota, session_id)
        if quota.limited or tenant in self._tracked:
            self._publish(tenant, session_id)

    def add_kv(self, tenant: str, quota: Quota, session_id: str | None, delta: int) -> None:
        if not delta:
            return
        self.local.add_kv(tenant, quota, session_id, delta)
        if quota.limited or tenant in self._tracked:
            self._publish(tenant, session_id)  # a session that ended meanwhile: its field goes

    def close_session(self, tenant: str, quota: Quota, session_id: str) -> None:
        self.local.close_session(tenant, quota, session_id)
        if quota.limited or tenant in self._tracked:
            self._publish(tenant, session_id)

    def held(self, tenant: str) -> tuple[int, int]:
        return self.local.held(tenant)

    @property
    def live_processes(self) -> int | None:
        """Live processes (this one included) the last round trip saw; None: none yet."""
        return self._live

    def observe_live(self, n: int) -> None:
        """Live processes counted elsewhere (the store's heartbeat, every 5 s in the service),
        so the outage share follows scale-ups and crashes without a checked claim."""
        self._live = max(1, n)

    async def flush(self) -> None:
        """Wait until every count change is published (or Redis turned out unreachable)."""
        while self._flusher is not None and not self._flusher.done():
            await asyncio.shield(self._flusher)

    async def close(self) -> None:
        """Stop publishing and probing. What this process counted stays in Redis until its
        heartbeat expires (then the next check of each tenant deletes it)."""
        for task in (self._flusher, self._prober):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    # ---- Redis

    def _unix(self, now: float) -> float:
        if self._offset is None:
            self._offset = self._wall() - now
        unix = now + self._offset
        self._last_unix = max(self._last_unix, unix)
        return unix

    def _lock(self, tenant: str) -> asyncio.Lock:
        lock = self._locks.get(tenant)
        if lock is None:
            lock = self._locks[tenant] = asyncio.Lock()
        return lock

    async def _run(
        self, tenant: str, unix: float, claim: Claim, quota: Quota, keys: set[str | None]
    ) -> list[Any]:
        sid, pid = claim.session_id, self.process_id
        if sid is not None:
            held = self.local.context(tenant, sid) or 0
        else:
            held = self.local.loose(tenant)
        args: list[str | int] = [
            pid,
            repr(float(unix)),
            sid or "",
            max(0, held + claim.kv_tokens),
            1 if claim.open else 0,
            claim.kv_tokens,
            quota.max_active_sessions,
            quota.max_kv_tokens,
            repr(float(quota.max_calls_per_second)),
            1 if claim.call else 0,
            max(1, int(self.held_ttl_s * 1000)),
        ]
        # This process's changes not published yet, as its counts are now.
        for key in keys:
            if key is None:
                loose = self.local.loose(tenant)
                args += [f"p:{pid}", str(loose) if loose else ""]
            else:
                ctx = self.local.context(tenant, key)
                # A context of 0 (adopted, not served here yet) never replaces another's.
                value = "" if ctx is None else f"{'?' if ctx == 0 else ''}{ctx}"
                args += [f"s:{key}", value]
        q = f"{self._ns}:quota"
        redis_keys = [f"{q}:held:{tenant}", f"{q}:procs:{tenant}", f"{self._ns}:hb", f"{q}:rate:{tenant}"]
        out = await self._admit(keys=redis_keys, args=args)
        self._live = max(1, int(out[4]))
        return [int(out[0]), out[1], out[2], out[3]]

    def _fallback(self, tenant: str, claim: Claim, quota: Quota, now: float, why: str) -> Verdict:
        """Decide on this process's counts against its share of ``quota``."""
        n = self._live or 1
        verdict = self.local.claim_now(tenant, claim, quota.share(n), now)
        self._tracked.add(tenant)
        self._pending.setdefault(tenant, set()).add(claim.session_id)  # published on recovery
        return replace(verdict, fallback=why, processes=n)

    def _share_text(self) -> str:
        n = self._live
        if n is None:
            return "the whole of each quota (no live processes seen yet)"
        if n == 1:
            return "the whole of each quota (1 live process last seen)"
        return f"1/{n} of each quota ({n} live processes last seen)"

    def _publish(self, tenant: str, key: str | None) -> None:
        self._tracked.add(tenant)
        self._pending.setdefault(tenant, set()).add(key)
        self._kick()

    def _kick(self) -> None:
        if self._pending and not self.degraded and (self._flusher is None or self._flusher.done()):
            self._flusher = asyncio.get_running_loop().create_task(self._flush(), name="saga-quota-publish")

    async def _flush(self) -> None:
        """Write each pending session's context as it is now (its field deleted when it ended)
        and the session-less KV: per tenant one run of the script without a claim."""
        while self._pending and not self.degraded:
            tenant, keys = self._pending.popitem()
            async with self._lock(tenant):
                keys |= self._pending.pop(tenant, set())
                unix = self._last_unix if self._offset is not None else self._wall()
                try:
                    await self._run(tenant, unix, _PUBLISH, _NO_LIMITS, keys)
                except _OUTAGE_ERRORS as exc:
                    self._pending.setdefault(tenant, set()).update(keys)
                    self._enter_outage(exc)
                    return
                except RedisError as exc:
                    self._report_error(exc)  # dropped: the next change of each publishes again
                    continue
            if self.local.held(tenant) == (0, 0):
                self._tracked.discard(tenant)

    # ---- outage

    def _enter_outage(self, exc: BaseException) -> None:
        if self.degraded:
            return
        log.warning(
            "redis unreachable (%s): tenant quotas are checked on this process's counts "
            "against %s until it answers again",
            exc,
            self._share_text(),
        )
        self.degraded = True
        self._prober = asyncio.get_running_loop().create_task(self._probe(), name="saga-quota-probe")

    async def _probe(self) -> None:
        while True:
            await asyncio.sleep(self.retry_interval_s)
            try:
                await self._client.ping()
            except (*_OUTAGE_ERRORS, RedisError):
                continue
            break
        self.degraded = False
        log.warning("redis reachable again: tenant quotas are shared again")
        # What changed meanwhile is pending; the session-less counts too (Redis may have
        # restarted empty, or pruned this process). Sessions that did not change are written
        # again with their next call, not now: this process may still hold sessions that
        # another process ended (they linger here until swept idle) and must not revive them.
        for tenant in self._tracked:
            self._pending.setdefault(tenant, set()).add(LOOSE)
        self._kick()

    def _report_error(self, exc: RedisError) -> None:
        if not self._error_logged:
            log.warning(
                "redis error in a quota check (%s): decided on this process's counts against %s",
                exc,
                self._share_text(),
            )
            self._error_logged = True
