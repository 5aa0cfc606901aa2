"""The SGLang backend contract: talking to replicas and knowing which replicas exist.

The service core depends on this module only; the implementations are
:class:`~saga.service.backend.client.SGLangClient` (one per replica base URL, aiohttp),
:class:`~saga.service.backend.pool.ReplicaPool` (health checks, load polling, discovery)
and the discovery sources in :mod:`saga.service.backend.discovery`. See ``docs/backend.md``.

Error model (what the service does with each)
---------------------------------------------

==========================  ==========  ===============================================
error                       retryable   meaning
==========================  ==========  ===============================================
:class:`ReplicaUnavailable` yes         connection refused / reset / timed out before
                                        any response byte: nothing reached the client,
                                        send the call to another replica
:class:`ReplicaError`       503 only    the replica answered 4xx/5xx; ``status`` and
                                        ``body`` carry its answer (a 400 is the caller's
                                        fault and is not retried)
:class:`ReplicaProtocolError` no        the replica answered garbage (not JSON, wrong
                                        shape, an SSE line that is not ``data:``)
:class:`StreamBroken`       no          the stream broke after at least one chunk was
                                        handed to the caller: end the client's stream
                                        with a clear error
==========================  ==========  ===============================================

"Before any byte" means before the first parsed chunk was yielded to the caller: a stream
that fails before its first chunk raises :class:`ReplicaUnavailable` (retryable), never
:class:`StreamBroken`.

Replica events
--------------

The pool reports :data:`ReplicaEvent` values (the engine's own event types from
``saga.scheduler.api``) through an injected :data:`EventSink` callback:
``ReplicaAdded`` once a discovered replica answered its first probe, ``ReplicaHealth`` on
every health transition, ``ReplicaLoad`` after every successful ``/v1/loads`` poll, and
``ReplicaRemoved`` when discovery no longer lists it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from saga.scheduler.api import ReplicaAdded, ReplicaHealth, ReplicaLoad, ReplicaRemoved

# --------------------------------------------------------------------------- errors


class BackendError(Exception):
    """Base of the backend's typed errors. ``replica_id`` names the replica (may be "")."""

    retryable: bool = False

    def __init__(self, message: str, *, replica_id: str = "") -> None:
        super().__init__(f"{replica_id}: {message}" if replica_id else message)
        self.replica_id = replica_id


class ReplicaUnavailable(BackendError):
    """No response byte arrived: refused, reset, DNS failure or timeout. Safe to retry."""

    retryable = True


class ReplicaError(BackendError):
    """The replica answered with an HTTP error status. ``body`` is its answer (truncated)."""

    def __init__(self, message: str, *, status: int, body: str, replica_id: str = "") -> None:
        super().__init__(f"{message}: HTTP {status}: {body[:200]}", replica_id=replica_id)
        self.status = status
        self.body = body
        self.retryable = status == 503


class ReplicaProtocolError(BackendError):
    """The replica answered something that is not what SGLang sends."""


class StreamBroken(BackendError):
    """The stream broke after ``chunks`` chunks were already handed to the caller."""

    def __init__(self, message: str, *, chunks: int, replica_id: str = "") -> None:
        super().__init__(f"{message} (after {chunks} chunks)", replica_id=replica_id)
        self.chunks = chunks


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True, slots=True)
class ClientTimeouts:
    """Timeouts of one replica client, in seconds. None of them may be infinite: the
    backend never hangs.

    ``connect_s`` 2: loopback/cluster connects take milliseconds; a longer wait means the
    pod is gone. ``first_byte_s`` 60: a long prompt's prefill on a busy replica can take tens
    of seconds before the response headers. ``idle_s`` 30: the longest gap tolerated between
    two stream chunks (a decode step is milliseconds; 30 s means the replica is stuck).
    ``total_s`` 600: upper bound of one unary call (a 32k-token generation). ``probe_s`` 2:
    health, loads, metrics and session calls, which are cheap.
    """

    connect_s: float = 2.0
    first_byte_s: float = 60.0
    idle_s: float = 30.0
    total_s: float = 600.0
    probe_s: float = 2.0

    def __post_init__(self) -> None:
        for name in ("connect_s", "first_byte_s", "idle_s", "total_s", "probe_s"):
            value = getattr(self, name)
            if not value > 0:
                raise ValueError(f"ClientTimeouts.{name} must be > 0 seconds, got {value!r}")


SessionFieldStyle = Literal["session_params", "top_level"]


@dataclass(frozen=True, slots=True)
class ClientSettings:
    """How requests are sent to a replica.

    ``session_field``: how a request names its SGLang engine session. ``"top_level"``
    (default) sends ``{"session_id": S}``: the identity SGLang's session radix cache
    (``--enable-session-radix-cache``, 0.5.15 on; entries referenced and evicted last from 0.5.17)
    tags a request's KV with; it needs no ``/open_session`` and ``/close_session`` releases it.
    ``"session_params"`` sends ``{"session_params": {"id": S}}``, SGLang's older continual-prompt
    sessions (``SessionController``): the request needs the session opened and its KV is *not*
    referenced (read from SGLang 0.5.17-0.5.23's scheduler: only a top-level ``session_id`` is a
    radix-native session; a request carrying both is refused). Kept for builds before 0.5.15.
    ``max_error_body`` 4096 bytes: how much of an error answer is kept for the message.
    ``api_key``: sent as ``Authorization: Bearer`` when SGLang runs with ``--api-key``.
    ``admin_api_key``: sent instead on ``/abort_request`` when SGLang runs with
    ``--admin-api-key`` (it then accepts only that key there; read from SGLang 0.5.20's
    ``utils/auth.py``: ``/abort_request`` and ``/flush_cache`` are admin-optional).
    """

    timeouts: ClientTimeouts = field(default_factory=ClientTimeouts)
    session_field: SessionFieldStyle = "top_level"
    max_error_body: int = 4096
    api_key: str | None = None
    admin_api_key: str | None = None


@dataclass(frozen=True, slots=True)
class PoolSettings:
    """How the pool watches replicas, in seconds unless said otherwise.

    ``health_interval_s`` 1: a dead replica is noticed within about a second (the engine
    stops placing calls there). ``load_interval_s`` 0.2: load must be fresh at the engine's
    100 ms stealing epoch without flooding ``/v1/loads`` (5 polls/s per replica).
    ``metrics_interval_s`` 5: ``/metrics`` is large and only feeds dashboards (0 disables).
    ``discovery_interval_s`` 5: pods come and go on the scale of seconds.
    ``unhealthy_after`` 2 consecutive failed probes (one lost packet is not a dead replica);
    ``healthy_after`` 1 successful probe brings it back. ``health_path`` "/health":
    ``/health_generate`` runs a real one-token generation, heavier but end to end.
    """

    health_interval_s: float = 1.0
    load_interval_s: float = 0.2
    metrics_interval_s: float = 5.0
    discovery_interval_s: float = 5.0
    unhealthy_after: int = 2
    healthy_after: int = 1
    health_path: Literal["/health", "/health_generate"] = "/health"

    def __post_init__(self) -> None:
        for name in ("health_interval_s", "load_interval_s", "discovery_interval_s"):
            value = getattr(self, name)
            if not value > 0:
                raise ValueError(f"PoolSettings.{name} must be > 0 seconds, got {value!r}")
        if self.metrics_interval_s < 0:
            raise ValueError(f"PoolSettings.metrics_interval_s must be >= 0, got {self.metrics_interval_s}")
        if self.unhealthy_after < 1 or self.healthy_after < 1:
            raise ValueError("PoolSettings.unhealthy_after and healthy_after must be >= 1")


# --------------------------------------------------------------------------- records


@dataclass(frozen=True, slots=True)
class ReplicaSpec:
    """A replica as discovery reports it. ``replica_id`` is stable across restarts of the
    pool (the pod name for EndpointSlices, the URL for a static list)."""

    replica_id: str
    base_url: str  # "http://10.0.0.7:30000", no trailing slash
    # Every named port of the replica's EndpointSlice, sorted ((name, port), ...): e.g. the
    # operator's ("kv-events", 5557), where its KV events come. Empty for a static list.
    named_ports: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True, slots=True)
class RankLoad:
    """One data-parallel rank's entry of SGLang ``GET /v1/loads``."""

    dp_rank: int
    running: int
    waiting: int
    used_tokens: int
    total_tokens: int
    token_usage: float
    cache_hit_rate: float | None


@dataclass(frozen=True, slots=True)
class LoadReport:
    """A replica's ``/v1/loads`` answer, summed over its DP ranks."""

    ranks: tuple[RankLoad, ...]

    @property
    def running(self) -> int:
        return sum(r.running for r in self.ranks)

    @property
    def waiting(self) -> int:
        return sum(r.waiting for r in self.ranks)

    @property
    def used_tokens(self) -> int:
        return sum(r.used_tokens for r in self.ranks)

    @property
    def total_tokens(self) -> int:
        return sum(r.total_tokens for r in self.ranks)

    @property
    def cache_hit_rate(self) -> float | None:
        rates = [r.cache_hit_rate for r in self.ranks if r.cache_hit_rate is not None]
        return sum(rates) / len(rates) if rates else None

    def to_event(self, replica_id: str) -> ReplicaLoad:
        return ReplicaLoad(
            replica_id=replica_id,
            running=self.running,
            waiting=self.waiting,
            kv_used_tokens=self.used_tokens,
            kv_total_tokens=self.total_tokens,
            cache_hit_rate=self.cache_hit_rate,
        )


@dataclass(frozen=True, slots=True)
class ServerInfo:
    """What the pool needs from ``GET /server_info`` to announce a replica.

    ``kv_total_tokens`` from ``max_total_num_tokens``; ``max_running_requests`` and
    ``page_size`` from the server args (SGLang defaults when absent). ``attn_dp_size``: the
    attention data-parallel ranks, each with its own radix cache and KV event publisher
    (SGLang's ``compute_dp_attention_world_info``: ``dp_size`` with ``enable_dp_attention``,
    else 1 whatever ``dp_size`` says).
    """

    kv_total_tokens: int
    max_running_requests: int
    page_size: int
    model_path: str = ""
    attn_dp_size: int = 1
    # ``enable_priority_scheduling``; None when the server does not say. A replica without it
    # ignores ``priority`` (or aborts the call with --abort-on-priority-when-disabled), so the
    # client leaves the field out for it (``SGLangClient.engine_fields``).
    priority_scheduling: bool | None = None
    # SGLang's ``version`` and ``enable_session_radix_cache`` ("" / None when not reported):
    # what :func:`retention_problems` checks.
    version: str = ""
    session_radix_cache: bool | None = None
    # The longest prompt in tokens the replica accepts: one below SGLang's ``max_req_input_len``
    # (its scheduler refuses ``len(input_ids) >= max_req_input_len``); None when not known.
    # What ``spec.limits.max_prompt_tokens: 0`` (auto) holds prompts to.
    max_input_tokens: int | None = None


MIN_SGLANG = (0, 5, 17)
"""Oldest SGLang whose session radix cache keeps a session's entries referenced (docs/backend.md)."""


def release_of(version: str) -> tuple[int, ...] | None:
    """``"0.5.20.post1"`` → ``(0, 5, 20)``; None when the string does not start with a release."""
    parts: list[int] = []
    for piece in version.strip().lstrip("v").split(".")[:3]:
        digits = ""
        for ch in piece:
            if not ch.isdigit():
                break
            digits += ch
        if not digits:
            break
        parts.append(int(digits))
        if len(digits) < len(piece):
            break
    return tuple(parts) if len(parts) == 3 else None


def retention_problems(info: ServerInfo) -> list[str]:
    """Why a replica cannot keep a session's KV across tool gaps, from its ``/server_info``
    (empty when nothing says so): SAGA's pins and retention then do nothing on it."""
    out: list[str] = []
    if info.session_radix_cache is False:
        out.append("runs without --enable-session-radix-cache: sessions' KV is not kept across tool gaps")
    release = release_of(info.version)
    if release is not None and release < MIN_SGLANG:
        need = ".".join(map(str, MIN_SGLANG))
        out.append(f"runs SGLang {info.version}: keeping sessions' KV across tool gaps needs {need} or later")
    return out


@dataclass(frozen=True, slots=True)
class SSEEvent:
    """One ``data:`` event of an OpenAI-compatible stream, verbatim (``data`` is the text
    after ``data: ``). ``raw`` re-frames it for forwarding; ``json()`` parses it."""

    data: str

    @property
    def raw(self) -> bytes:
        return b"data: " + self.data.encode() + b"\n\n"

    def json(self) -> dict[str, Any]:
        from saga.service.backend.sse import parse_json_object

        return parse_json_object(self.data)


ReplicaEvent = ReplicaAdded | ReplicaRemoved | ReplicaHealth | ReplicaLoad
EventSink = Callable[[ReplicaEvent], None]
"""Called synchronously on the pool's event loop; must not block (queue if needed)."""


# --------------------------------------------------------------------------- protocols


class ReplicaClient(Protocol):
    """One SGLang replica over HTTP. Every call raises only :class:`BackendError` subclasses."""

    replica_id: str
    base_url: str

    async def generate(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """Native ``POST /generate`` without streaming; the JSON object SGLang returns
        (``text``, ``output_ids``, ``meta_info{prompt_tokens, completion_tokens,
        cached_tokens, finish_reason, ...}``)."""
        ...

    def generate_stream(self, payload: Mapping[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """Native ``POST /generate`` with ``stream: true``: one dict per ``data:`` line,
        ending (without yielding it) at ``data: [DONE]``."""
        ...

    async def openai(self, path: str, payload: Mapping[str, Any]) -> dict[str, Any]:
        """Non-streaming OpenAI passthrough (``/v1/chat/completions``, ``/v1/completions``)."""
        ...

    def openai_stream(self, path: str, payload: Mapping[str, Any]) -> AsyncIterator[SSEEvent]:
        """Streaming OpenAI passthrough: each ``data:`` event up to (not including) [DONE]."""
        ...

    async def open_session(
        self, session_id: str, *, capacity_of_str_len: int, timeout_s: float | None = None
    ) -> str:
        """``POST /open_session``; returns the engine session id (SGLang echoes
        ``session_id``). A replica refusing (e.g. the id is still open) raises ReplicaError."""
        ...

    async def close_session(self, session_id: str) -> None:
        """``POST /close_session``: the replica drops its references to the session's KV."""
        ...

    async def loads(self) -> LoadReport:
        """``GET /v1/loads``."""
        ...

    async def server_info(self) -> ServerInfo:
        """``GET /server_info``."""
        ...

    async def metrics(self) -> dict[str, float]:
        """``GET /metrics``: every ``sglang:*`` sample, labels summed away (name → value)."""
        ...

    async def health(self, *, generate: bool = False) -> bool:
        """``GET /health`` (or ``/health_generate``): True on 200, False on an error status;
        raises ReplicaUnavailable when the replica cannot be reached."""
        ...

    async def abort(self, rid: str) -> None:
        """``POST /abort_request {rid}``: stop a call whose client went away."""
        ...


class Discovery(Protocol):
    """A source of replicas. The pool calls :meth:`discover` every
    ``discovery_interval_s``; an exception keeps the previous list (logged), so a flaky API
    server never removes every replica."""

    async def discover(self) -> list[ReplicaSpec]:
        """The replicas that exist now (ready endpoints only)."""
        ...

    async def close(self) -> None:
        """Release the source's connections."""
        ...
