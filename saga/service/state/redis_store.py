"""Redis state store: several scheduler processes share bindings, fair share and graphs.

Layout (every key under ``namespace``, default ``saga``)
--------------------------------------------------------

========================  =======  ===================================================
key                       type     content
========================  =======  ===================================================
``saga:b:<session_id>``   hash     ``v`` version, ``d`` binding JSON; expires after
                                   ``binding_ttl_s`` without a write
``saga:u:<tenant>``       hash     ``s`` attained service s, ``n`` completed tasks,
                                   ``t`` summed task time s (HINCRBY[FLOAT])
``saga:tenants``          set      tenants with usage
``saga:g:<agent_type>``   hash     ``v`` version, ``d`` AEG JSON
``saga:gv``               hash     agent type → version (change detection)
``saga:hb``               zset     process id scored by heartbeat expiry (Unix s)
``saga:quota:*``          hash     tenant quota counts and buckets (:mod:`.redis_quotas`)
========================  =======  ===================================================

Atomicity: a binding's compare-and-set and conditional delete, a graph's versioned put and
its delete (document and versions-hash entry together), are Lua scripts (one round trip,
atomic in Redis), so two processes can never both win a bind: the first writer gets
``won=True``, the second gets the stored binding to adopt. Usage increments are a MULTI/EXEC
of HINCRBY[FLOAT], order-free.

Outage policy (``on_outage``)
-----------------------------

``"degrade"`` (default): when Redis cannot be reached the store logs one warning per
outage and serves from a **local copy** (a :class:`MemoryStore` it keeps up to date with
every answer Redis gave): placements keep working and sessions already seen keep their
replica; writes are remembered. Every ``retry_interval_s`` (1 s) an operation probes Redis;
once it answers, the remembered writes are replayed against it with their original
expected versions: fair-share deltas are added, and each binding written during the outage
is compare-and-set from the version it had before the outage; graphs put or deleted meanwhile
are put or deleted. **Redis wins conflicts**:
where another process wrote the binding meanwhile, the local copy adopts Redis's binding.
``"fail"``: every operation raises :class:`StateUnavailable` instead (for operators who
prefer refusing work to risking a session on two replicas during a partition).

Tunables: ``op_timeout_s`` 0.5 (a loopback/cluster Redis answers in well under a
millisecond; half a second means it is gone, and the call path must not stall longer),
``connect_timeout_s`` 0.5, ``retry_interval_s`` 1.0, ``binding_ttl_s`` 86,400 (24 h, as in
:mod:`.memory`).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, replace
from typing import Any, Literal, TypeVar

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from saga.service.state.api import (
    BindOutcome,
    GraphDocument,
    InvalidState,
    SessionBinding,
    StateUnavailable,
    TenantUsage,
)
from saga.service.state.memory import DEFAULT_BINDING_TTL_S, MemoryStore, check_id, check_usage
from saga.service.state.redis_quotas import RedisQuotaLedger

log = logging.getLogger(__name__)
T = TypeVar("T")
_OUTAGE_ERRORS = (RedisConnectionError, RedisTimeoutError, OSError, TimeoutError)

# KEYS[1] binding key; ARGV: expected version, binding JSON, ttl ms.
# Returns {won (0/1), stored JSON or false, stored version}.
_CAS_BIND = """
local cur = tonumber(redis.call('HGET', KEYS[1], 'v')) or 0
if cur ~= tonumber(ARGV[1]) then
  return {0, redis.call('HGET', KEYS[1], 'd'), cur}
end
redis.call('HSET', KEYS[1], 'v', cur + 1, 'd', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return {1, ARGV[2], cur + 1}
"""

# KEYS[1] binding key; ARGV[1] expected version or -1 (any). Returns 1 if deleted.
_CAS_DELETE = """
local cur = tonumber(redis.call('HGET', KEYS[1], 'v'))
if cur == nil then return 0 end
if tonumber(ARGV[1]) >= 0 and cur ~= tonumber(ARGV[1]) then return 0 end
redis.call('DEL', KEYS[1])
return 1
"""

# KEYS[1] graph key, KEYS[2] versions hash; ARGV: agent type, JSON, expected or -1.
_PUT_GRAPH = """
local cur = tonumber(redis.call('HGET', KEYS[1], 'v')) or 0
if tonumber(ARGV[3]) >= 0 and cur ~= tonumber(ARGV[3]) then return cur end
redis.call('HSET', KEYS[1], 'v', cur + 1, 'd', ARGV[2])
redis.call('HSET', KEYS[2], ARGV[1], cur + 1)
return cur + 1
"""

# KEYS[1] graph key, KEYS[2] versions hash; ARGV: agent type, expected version or -1 (any).
# Returns 1 if deleted (the document and its entry in the versions hash go together).
_DELETE_GRAPH = """
local cur = tonumber(redis.call('HGET', KEYS[1], 'v'))
if cur == nil then return 0 end
if tonumber(ARGV[2]) >= 0 and cur ~= tonumber(ARGV[2]) then return 0 end
redis.call('DEL', KEYS[1])
redis.call('HDEL', KEYS[2], ARGV[1])
return 1
"""


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _encode_binding(b: SessionBinding) -> str:
    d = asdict(b)
    d.pop("version")
    return json.dumps(d, separators=(",", ":"))


def _decode_binding(raw: bytes | str | None, version: int, key: str) -> SessionBinding | None:
    if raw is None:
        return None
    try:
        d = json.loads(raw)
        return SessionBinding(
            session_id=str(d["session_id"]),
            tenant=str(d["tenant"]),
            agent_type=str(d["agent_type"]),
            replica_id=d.get("replica_id"),
            pinned_until=d.get("pinned_until"),
            engine_session=d.get("engine_session"),
            version=version,
            owner=str(d.get("owner", "")),
            updated_at=float(d.get("updated_at", 0.0)),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidState(f"{key}: stored binding cannot be decoded: {exc}") from None


class RedisStore:
    """A :class:`~saga.service.state.api.StateStore` on Redis (see the module docstring)."""

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        process_id: str,
        namespace: str = "saga",
        on_outage: Literal["degrade", "fail"] = "degrade",
        op_timeout_s: float = 0.5,
        connect_timeout_s: float = 0.5,
        retry_interval_s: float = 1.0,
        binding_ttl_s: float = DEFAULT_BINDING_TTL_S,
        wall: Callable[[], float] = time.time,
        client: aioredis.Redis | None = None,
    ) -> None:
        check_id("process_id", process_id)
        if on_outage not in ("degrade", "fail"):
            raise ValueError(f"on_outage must be 'degrade' or 'fail', got {on_outage!r}")
        for name, value in (
            ("op_timeout_s", op_timeout_s),
            ("connect_timeout_s", connect_timeout_s),
            ("retry_interval_s", retry_interval_s),
            ("binding_ttl_s", binding_ttl_s),
        ):
            if not value > 0:
                raise ValueError(f"RedisStore {name} must be > 0 seconds, got {value!r}")
        self.process_id = process_id
        self.on_outage = on_outage
        self.retry_interval_s = retry_interval_s
        self.binding_ttl_s = binding_ttl_s
        self._ns = namespace
        self._wall = wall
        self._redis = client or aioredis.Redis.from_url(
            url,
            socket_timeout=op_timeout_s,
            socket_connect_timeout=connect_timeout_s,
            retry=None,
            retry_on_error=[],
            retry_on_timeout=False,
        )
        self._cas_bind = self._redis.register_script(_CAS_BIND)
        self._cas_delete = self._redis.register_script(_CAS_DELETE)
        self._put_graph = self._redis.register_script(_PUT_GRAPH)
        self._delete_graph = self._redis.register_script(_DELETE_GRAPH)
        self.local = MemoryStore(process_id=process_id, binding_ttl_s=binding_ttl_s, wall=wall)
        # Outage bookkeeping (degrade mode).
        self.degraded = False
        self._next_probe = 0.0
        self._dirty_bindings: dict[str, int] = {}  # session id -> version before the outage
        self._pending_usage: dict[str, tuple[float, int, float]] = {}
        self._dirty_graphs: set[str] = set()
        self._ledgers: list[RedisQuotaLedger] = []  # quota ledgers told the live count

    def quota_ledger(self, process_id: str) -> RedisQuotaLedger:
        """Tenant quotas shared through this store's Redis (its client, namespace, probe
        interval and wall clock); see :mod:`.redis_quotas`. ``process_id`` must be the id the
        process heartbeats with."""
        ledger = RedisQuotaLedger(
            self._redis,
            process_id=process_id,
            namespace=self._ns,
            retry_interval_s=self.retry_interval_s,
            wall=self._wall,
        )
        self._ledgers.append(ledger)
        return ledger

    # ---- keys

    def _bkey(self, session_id: str) -> str:
        return f"{self._ns}:b:{session_id}"

    def _ukey(self, tenant: str) -> str:
        return f"{self._ns}:u:{tenant}"

    def _gkey(self, agent_type: str) -> str:
        return f"{self._ns}:g:{agent_type}"

    # ---- outage handling

    async def _call(self, remote: Callable[[], Awaitable[T]], fallback: Callable[[], Awaitable[T]]) -> T:
        """Run ``remote`` against Redis; on an outage, fail or serve ``fallback`` locally."""
        if self.degraded and not await self._try_recover():
            return await self._fallback(fallback)
        try:
            return await remote()
        except _OUTAGE_ERRORS as exc:
            self._enter_outage(exc)
            return await self._fallback(fallback)
        except RedisError as exc:
            raise StateUnavailable(f"redis error: {exc}") from exc

    async def _fallback(self, fallback: Callable[[], Awaitable[T]]) -> T:
        if self.on_outage == "fail":
            raise StateUnavailable("redis is unreachable (on_outage=fail)")
        return await fallback()

    def _enter_outage(self, exc: BaseException) -> None:
        if self.on_outage == "fail":
            raise StateUnavailable(f"redis is unreachable: {exc}") from exc
        if not self.degraded:
            log.warning(
                "redis unreachable (%s): serving from the local copy; bindings made now may "
                "conflict with other scheduler processes and are reconciled when it returns",
                exc,
            )
        self.degraded = True
        self._next_probe = time.monotonic() + self.retry_interval_s

    async def _try_recover(self) -> bool:
        if time.monotonic() < self._next_probe:
            return False
        try:
            await self._redis.ping()
            await self._replay()
        except _OUTAGE_ERRORS:
            self._next_probe = time.monotonic() + self.retry_interval_s
            return False
        self.degraded = False
        log.warning("redis reachable again: local writes reconciled, redis is authoritative")
        return True

    async def _replay(self) -> None:
        for tenant, (s, n, t) in list(self._pending_usage.items()):
            await self._incr_usage(tenant, s, n, t)
            del self._pending_usage[tenant]
        for sid, base_version in list(self._dirty_bindings.items()):
            local = self.local._get(sid)
            if local is None:
                if base_version > 0:
                    await self._cas_delete(keys=[self._bkey(sid)], args=[base_version])
            else:
                await self._remote_bind(local, base_version)
            del self._dirty_bindings[sid]
        for agent_type in list(self._dirty_graphs):
            doc = await self.local.get_graph(agent_type)
            if doc is not None:
                version = await self._put_graph(
                    keys=[self._gkey(agent_type), f"{self._ns}:gv"],
                    args=[agent_type, json.dumps(doc.document), -1],
                )
                self.local.put_graph_now(replace(doc, version=int(version)))
            else:  # deleted during the outage
                await self._delete_graph(
                    keys=[self._gkey(agent_type), f"{self._ns}:gv"], args=[agent_type, -1]
                )
            self._dirty_graphs.discard(agent_type)

    def _mark_dirty(self, session_id: str) -> None:
        if session_id not in self._dirty_bindings:
            current = self.local._get(session_id)
            self._dirty_bindings[session_id] = current.version if current is not None else 0

    # ---- session bindings

    async def get_binding(self, session_id: str) -> SessionBinding | None:
        async def remote() -> SessionBinding | None:
            key = self._bkey(session_id)
            version, raw = await self._redis.hmget(key, ["v", "d"])
            binding = _decode_binding(raw, int(version or 0), key)
            if binding is None:
                self.local.delete_now(session_id)
            else:
                self.local.put_now(binding)
            return binding

        async def fallback() -> SessionBinding | None:
            return self.local._get(session_id)

        return await self._call(remote, fallback)

    async def _remote_bind(self, binding: SessionBinding, expected_version: int) -> BindOutcome:
        stored = replace(binding, owner=binding.owner or self.process_id, updated_at=self._wall())
        key = self._bkey(binding.session_id)
        won, raw, version = await self._cas_bind(
            keys=[key],
            args=[expected_version, _encode_binding(stored), int(self.binding_ttl_s * 1000)],
        )
        current = _decode_binding(raw, int(version), key)
        if current is None:
            self.local.delete_now(binding.session_id)
        else:
            self.local.put_now(current)
        return BindOutcome(binding=current, won=bool(won))

    async def bind(self, binding: SessionBinding, *, expected_version: int) -> BindOutcome:
        check_id("session_id", binding.session_id)
        if expected_version < 0:
            raise InvalidState(f"expected_version must be >= 0, got {expected_version}")

        async def fallback() -> BindOutcome:
            self._mark_dirty(binding.session_id)
            return self.local.bind_now(binding, expected_version=expected_version)

        return await self._call(lambda: self._remote_bind(binding, expected_version), fallback)

    async def delete_binding(self, session_id: str, *, expected_version: int | None = None) -> bool:
        async def remote() -> bool:
            ok = await self._cas_delete(
                keys=[self._bkey(session_id)], args=[-1 if expected_version is None else expected_version]
            )
            if ok:
                self.local.delete_now(session_id)
            return bool(ok)

        async def fallback() -> bool:
            self._mark_dirty(session_id)
            return self.local.delete_now(session_id, expected_version=expected_version)

        return await self._call(remote, fallback)

    async def list_bindings(self, replica_id: str | None = None) -> list[SessionBinding]:
        async def remote() -> list[SessionBinding]:
            out: list[SessionBinding] = []
            async for key in self._redis.scan_iter(match=f"{self._ns}:b:*", count=500):
                version, raw = await self._redis.hmget(key, ["v", "d"])
                b = _decode_binding(raw, int(version or 0), _s(key))
                if b is not None and (replica_id is None or b.replica_id == replica_id):
                    out.append(b)
            return out

        return await self._call(remote, lambda: self.local.list_bindings(replica_id))

    # ---- fair share

    async def _incr_usage(self, tenant: str, s: float, n: int, t: float) -> TenantUsage:
        async with self._redis.pipeline(transaction=True) as pipe:
            key = self._ukey(tenant)
            pipe.hincrbyfloat(key, "s", s)
            pipe.hincrby(key, "n", n)
            pipe.hincrbyfloat(key, "t", t)
            pipe.sadd(f"{self._ns}:tenants", tenant)
            rs, rn, rt, _ = await pipe.execute()
        usage = TenantUsage(tenant, float(rs), int(rn), float(rt))
        self.local.set_usage_now(usage)
        return usage

    async def add_usage(
        self,
        tenant: str,
        *,
        service_s: float = 0.0,
        completed_tasks: int = 0,
        task_time_s: float = 0.0,
    ) -> TenantUsage:
        check_id("tenant", tenant)
        check_usage(service_s, completed_tasks, task_time_s)

        async def fallback() -> TenantUsage:
            s, n, t = self._pending_usage.get(tenant, (0.0, 0, 0.0))
            self._pending_usage[tenant] = (s + service_s, n + completed_tasks, t + task_time_s)
            return self.local.add_usage_now(
                tenant, service_s=service_s, completed_tasks=completed_tasks, task_time_s=task_time_s
            )

        return await self._call(
            lambda: self._incr_usage(tenant, service_s, completed_tasks, task_time_s), fallback
        )

    def _decode_usage(self, tenant: str, raw: dict[Any, Any]) -> TenantUsage:
        fields = {_s(k): v for k, v in raw.items()}
        try:
            return TenantUsage(
                tenant,
                float(fields.get("s", 0.0)),
                int(fields.get("n", 0)),
                float(fields.get("t", 0.0)),
            )
        except ValueError as exc:
            raise InvalidState(f"{self._ukey(tenant)}: stored usage cannot be decoded: {exc}") from None

    async def get_usage(self, tenant: str) -> TenantUsage:
        check_id("tenant", tenant)

        async def remote() -> TenantUsage:
            usage = self._decode_usage(tenant, await self._redis.hgetall(self._ukey(tenant)))
            self.local.set_usage_now(usage)
            return usage

        return await self._call(remote, lambda: self.local.get_usage(tenant))

    async def all_usage(self) -> dict[str, TenantUsage]:
        async def remote() -> dict[str, TenantUsage]:
            tenants = sorted(_s(t) for t in await self._redis.smembers(f"{self._ns}:tenants"))
            async with self._redis.pipeline(transaction=False) as pipe:
                for tenant in tenants:
                    pipe.hgetall(self._ukey(tenant))
                rows = await pipe.execute()
            return {t: self._decode_usage(t, row) for t, row in zip(tenants, rows, strict=True)}

        return await self._call(remote, self.local.all_usage)

    # ---- graph documents

    async def put_graph(
        self, agent_type: str, document: dict[str, Any], *, expected_version: int | None = None
    ) -> int:
        check_id("agent_type", agent_type)
        if not isinstance(document, dict):
            raise InvalidState(f"graph document of {agent_type!r} must be a JSON object")
        text = json.dumps(document)

        async def remote() -> int:
            version = int(
                await self._put_graph(
                    keys=[self._gkey(agent_type), f"{self._ns}:gv"],
                    args=[agent_type, text, -1 if expected_version is None else expected_version],
                )
            )
            if expected_version is None or version == expected_version + 1:
                self.local.put_graph_now(GraphDocument(agent_type, version, json.loads(text)))
            return version

        async def fallback() -> int:
            self._dirty_graphs.add(agent_type)
            return await self.local.put_graph(agent_type, document, expected_version=expected_version)

        return await self._call(remote, fallback)

    async def get_graph(self, agent_type: str) -> GraphDocument | None:
        async def remote() -> GraphDocument | None:
            key = self._gkey(agent_type)
            version, raw = await self._redis.hmget(key, ["v", "d"])
            if raw is None:
                return None
            try:
                document = json.loads(raw)
            except ValueError as exc:
                raise InvalidState(f"{key}: stored graph is not JSON: {exc}") from None
            if not isinstance(document, dict):
                raise InvalidState(f"{key}: stored graph is not a JSON object")
            doc = GraphDocument(agent_type, int(version or 0), document)
            self.local.put_graph_now(doc)
            return GraphDocument(agent_type, doc.version, json.loads(raw))

        return await self._call(remote, lambda: self.local.get_graph(agent_type))

    async def graph_versions(self) -> dict[str, int]:
        async def remote() -> dict[str, int]:
            raw = await self._redis.hgetall(f"{self._ns}:gv")
            return {_s(k): int(v) for k, v in raw.items()}

        return await self._call(remote, self.local.graph_versions)

    async def delete_graph(self, agent_type: str, *, expected_version: int | None = None) -> bool:
        check_id("agent_type", agent_type)

        async def remote() -> bool:
            ok = await self._delete_graph(
                keys=[self._gkey(agent_type), f"{self._ns}:gv"],
                args=[agent_type, -1 if expected_version is None else expected_version],
            )
            if ok:
                self.local.delete_graph_now(agent_type)
            return bool(ok)

        async def fallback() -> bool:
            self._dirty_graphs.add(agent_type)
            return self.local.delete_graph_now(agent_type, expected_version=expected_version)

        return await self._call(remote, fallback)

    # ---- heartbeats

    async def heartbeat(self, process_id: str, ttl_s: float) -> None:
        check_id("process_id", process_id)
        if ttl_s <= 0:
            raise InvalidState(f"heartbeat ttl_s must be > 0 seconds, got {ttl_s}")

        async def remote() -> None:
            key, now = f"{self._ns}:hb", self._wall()
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.zadd(key, {process_id: now + ttl_s})
                pipe.zcount(key, f"({now}", "+inf")
                _, live = await pipe.execute()
            for ledger in self._ledgers:  # keeps their outage share current between checks
                ledger.observe_live(int(live))
            await self.local.heartbeat(process_id, ttl_s)

        return await self._call(remote, lambda: self.local.heartbeat(process_id, ttl_s))

    async def live_processes(self) -> list[str]:
        async def remote() -> list[str]:
            key = f"{self._ns}:hb"
            now = self._wall()
            await self._redis.zremrangebyscore(key, "-inf", now)
            members = await self._redis.zrangebyscore(key, f"({now}", "+inf")
            return sorted(_s(m) for m in members)

        return await self._call(remote, self.local.live_processes)

    # ---- lifecycle

    async def ping(self) -> bool:
        try:
            return bool(await self._redis.ping())
        except (*_OUTAGE_ERRORS, RedisError):
            return False

    async def close(self) -> None:
        await self._redis.aclose()
        await self.local.close()
