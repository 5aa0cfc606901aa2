"""HTTP client of one SGLang replica (aiohttp).

One :class:`SGLangClient` per replica base URL; all clients of a pool share one
``aiohttp.ClientSession`` (one connection pool, keep-alive). Every failure is mapped once,
here, to the typed errors of :mod:`saga.service.backend.api`:

* before the response headers: connection refused/reset, DNS, connect or first-byte
  timeout → :class:`ReplicaUnavailable` (retryable);
* an HTTP status >= 400 → :class:`ReplicaError` with the (bounded) body;
* a body that is not what SGLang sends → :class:`ReplicaProtocolError`;
* streams: a failure before the first chunk was yielded is still ``ReplicaUnavailable``
  (or ``ReplicaError``/``ReplicaProtocolError``); after it, :class:`StreamBroken`.

Timeouts (``ClientTimeouts``) are enforced by this module, never left to defaults: the
connect timeout via aiohttp, the first chunk of a stream within ``first_byte_s``, each later
chunk within ``idle_s``, a unary call within ``total_s``, probes within ``probe_s``.

Engine fields: :meth:`SGLangClient.engine_fields` adds ``rid``, ``priority`` (left out once
``/server_info`` said the replica runs without ``--enable-priority-scheduling``) and the engine
session (a top-level ``session_id`` by default, or ``session_params.id``: ``ClientSettings``)
to a request body without mutating the caller's dict.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from contextlib import aclosing
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from saga.service.backend.api import (
    BackendError,
    ClientSettings,
    LoadReport,
    RankLoad,
    ReplicaError,
    ReplicaProtocolError,
    ReplicaUnavailable,
    ServerInfo,
    SSEEvent,
    StreamBroken,
)
from saga.service.backend.sse import DONE, SSEDecoder, SSEFormatError, parse_json_object

_CONNECTION_ERRORS = (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, OSError)
OPENAI_PATHS = frozenset({"/v1/chat/completions", "/v1/completions"})
# SGLang server-arg defaults used when /server_info omits a field.
DEFAULT_PAGE_SIZE = 1
DEFAULT_MAX_RUNNING = 1024
# Bound on /server_info's dp_size: a KV event subscriber per attention DP rank is opened, so a
# garbage value must not open thousands; 1024 is far above any GPU node's rank count.
MAX_DP_SIZE = 1024
# SGLang's scheduler: max_req_len = min(context_len - 1, max_total_num_tokens - 1) and
# max_req_input_len = max_req_len - 5; it refuses a prompt of max_req_input_len tokens or more.
REQ_INPUT_MARGIN = 5


class SGLangClient:
    """A :class:`~saga.service.backend.api.ReplicaClient` over aiohttp."""

    def __init__(
        self,
        replica_id: str,
        base_url: str,
        *,
        session: aiohttp.ClientSession | None = None,
        settings: ClientSettings | None = None,
    ) -> None:
        self.replica_id = replica_id
        self.base_url = base_url.rstrip("/")
        self.settings = settings or ClientSettings()
        self._session = session
        self._owns_session = session is None
        t = self.settings.timeouts
        # aiohttp enforces the connect timeout; reads are bounded by asyncio.timeout below.
        self._stream_timeout = aiohttp.ClientTimeout(
            total=None, connect=t.connect_s, sock_connect=t.connect_s
        )
        self._unary_timeout = aiohttp.ClientTimeout(
            total=t.total_s, connect=t.connect_s, sock_connect=t.connect_s
        )
        self._probe_timeout = aiohttp.ClientTimeout(
            total=t.probe_s, connect=t.connect_s, sock_connect=t.connect_s
        )
        self._headers = {"Authorization": f"Bearer {self.settings.api_key}"} if self.settings.api_key else {}
        admin = self.settings.admin_api_key
        self._admin_headers = {"Authorization": f"Bearer {admin}"} if admin else self._headers
        # False once /server_info says the replica runs without priority scheduling.
        self.accepts_priority = True

    # ---- lifecycle

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            if not self._owns_session:
                raise ReplicaUnavailable("the shared HTTP session is closed", replica_id=self.replica_id)
            self._session = aiohttp.ClientSession()
        return self._session

    async def close(self) -> None:
        if self._owns_session and self._session is not None:
            await self._session.close()

    # ---- request bodies

    def engine_fields(
        self,
        payload: Mapping[str, Any],
        *,
        rid: str | None = None,
        priority: int | None = None,
        engine_session: str | None = None,
    ) -> dict[str, Any]:
        """A copy of ``payload`` with SGLang's scheduling fields set."""
        body = dict(payload)
        if rid is not None:
            body["rid"] = rid
        if priority is not None and self.accepts_priority:
            body["priority"] = priority
        if engine_session is not None:
            if self.settings.session_field == "top_level":
                # SGLang refuses a request with both; a caller's own session_params win (the
                # call then runs without SAGA's engine session).
                if "session_params" not in body:
                    body["session_id"] = engine_session
            else:
                params = dict(body.get("session_params") or {})
                params["id"] = engine_session
                body["session_params"] = params
        return body

    # ---- generation

    async def generate(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        body = dict(payload)
        body["stream"] = False
        result = await self._json("POST", "/generate", body, self._unary_timeout)
        if not isinstance(result, dict):
            raise ReplicaProtocolError(
                f"/generate returned {type(result).__name__}, expected an object", replica_id=self.replica_id
            )
        return result

    async def generate_stream(self, payload: Mapping[str, Any]) -> AsyncIterator[dict[str, Any]]:
        body = dict(payload)
        body["stream"] = True
        async with aclosing(self._stream("/generate", body)) as chunks:
            async for chunk in chunks:
                yield chunk.json_obj

    async def openai(self, path: str, payload: Mapping[str, Any]) -> dict[str, Any]:
        _check_openai_path(path)
        body = dict(payload)
        body["stream"] = False
        result = await self._json("POST", path, body, self._unary_timeout)
        if not isinstance(result, dict):
            raise ReplicaProtocolError(
                f"{path} returned {type(result).__name__}, expected an object", replica_id=self.replica_id
            )
        return result

    async def openai_stream(self, path: str, payload: Mapping[str, Any]) -> AsyncIterator[SSEEvent]:
        _check_openai_path(path)
        body = dict(payload)
        body["stream"] = True
        async with aclosing(self._stream(path, body)) as chunks:
            async for chunk in chunks:
                yield SSEEvent(chunk.data)

    # ---- sessions

    async def open_session(
        self, session_id: str, *, capacity_of_str_len: int, timeout_s: float | None = None
    ) -> str:
        body: dict[str, Any] = {"session_id": session_id, "capacity_of_str_len": capacity_of_str_len}
        if timeout_s is not None:
            body["timeout"] = timeout_s
        result = await self._json("POST", "/open_session", body, self._probe_timeout)
        # SGLang returns the id as a JSON string; accept {"session_id": ...} too.
        if isinstance(result, str) and result:
            return result
        if isinstance(result, dict) and isinstance(result.get("session_id"), str):
            if result.get("success") is False:
                raise ReplicaError("open_session refused", status=200, body=json.dumps(result))
            return str(result["session_id"])
        raise ReplicaProtocolError(f"/open_session returned {result!r:.120}", replica_id=self.replica_id)

    async def close_session(self, session_id: str) -> None:
        await self._request("POST", "/close_session", {"session_id": session_id}, self._probe_timeout)

    async def abort(self, rid: str) -> None:
        await self._request("POST", "/abort_request", {"rid": rid}, self._probe_timeout, admin=True)

    # ---- observation

    async def loads(self) -> LoadReport:
        result = await self._json("GET", "/v1/loads", None, self._probe_timeout)
        return parse_loads(result, self.replica_id)

    async def server_info(self) -> ServerInfo:
        try:
            result = await self._json("GET", "/server_info", None, self._probe_timeout)
        except ReplicaError as exc:
            if exc.status != 404:
                raise
            result = await self._json("GET", "/get_server_info", None, self._probe_timeout)
        info = parse_server_info(result, self.replica_id)
        self.accepts_priority = info.priority_scheduling is not False
        return info

    async def metrics(self) -> dict[str, float]:
        _, raw = await self._request("GET", "/metrics", None, self._probe_timeout)
        try:
            return parse_sglang_metrics(raw.decode())
        except (ValueError, UnicodeDecodeError) as exc:
            raise ReplicaProtocolError(
                f"/metrics is not Prometheus text: {exc}", replica_id=self.replica_id
            ) from None

    async def health(self, *, generate: bool = False) -> bool:
        path = "/health_generate" if generate else "/health"
        try:
            await self._request("GET", path, None, self._probe_timeout)
        except ReplicaError:
            return False
        return True

    # ---- transport

    async def _request(
        self, method: str, path: str, body: Any, timeout: aiohttp.ClientTimeout, *, admin: bool = False
    ) -> tuple[int, bytes]:
        url = self.base_url + path
        headers = self._admin_headers if admin else self._headers
        try:
            async with self._http().request(method, url, json=body, timeout=timeout, headers=headers) as resp:
                raw = await resp.read()
                if resp.status >= 400:
                    raise ReplicaError(
                        f"{method} {path}",
                        status=resp.status,
                        body=raw[: self.settings.max_error_body].decode(errors="replace"),
                        replica_id=self.replica_id,
                    )
                return resp.status, raw
        except BackendError:
            raise
        except TimeoutError:
            raise ReplicaUnavailable(f"{method} {path} timed out", replica_id=self.replica_id) from None
        except _CONNECTION_ERRORS as exc:
            raise ReplicaUnavailable(
                f"{method} {path}: {_describe(exc)}", replica_id=self.replica_id
            ) from None

    async def _json(self, method: str, path: str, body: Any, timeout: aiohttp.ClientTimeout) -> Any:
        _, raw = await self._request(method, path, body, timeout)
        try:
            return json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise ReplicaProtocolError(
                f"{method} {path} returned non-JSON: {raw[:120]!r}", replica_id=self.replica_id
            ) from None

    async def _stream(self, path: str, body: dict[str, Any]) -> AsyncGenerator[_Chunk, None]:
        """SSE events of ``POST path`` up to ``data: [DONE]`` with the error mapping above."""
        t = self.settings.timeouts
        url = self.base_url + path
        sent = 0
        done = False
        try:
            async with asyncio.timeout(t.first_byte_s):
                resp = await self._http().post(
                    url, json=body, timeout=self._stream_timeout, headers=self._headers
                )
        except TimeoutError:
            raise ReplicaUnavailable(
                f"POST {path}: no response within {t.first_byte_s} s", replica_id=self.replica_id
            ) from None
        except _CONNECTION_ERRORS as exc:
            raise ReplicaUnavailable(f"POST {path}: {_describe(exc)}", replica_id=self.replica_id) from None
        try:
            if resp.status >= 400:
                raw = await _bounded_read(resp, self.settings.max_error_body, t.probe_s)
                raise ReplicaError(
                    f"POST {path}",
                    status=resp.status,
                    body=raw.decode(errors="replace"),
                    replica_id=self.replica_id,
                )
            decoder = SSEDecoder()
            while not done:
                limit = t.first_byte_s if sent == 0 else t.idle_s
                try:
                    async with asyncio.timeout(limit):
                        data = await resp.content.readany()
                except TimeoutError:
                    raise self._broken(path, f"no chunk within {limit} s", sent) from None
                except _CONNECTION_ERRORS as exc:
                    raise self._broken(path, _describe(exc), sent) from None
                payloads = decoder.feed(data) if data else decoder.finish()
                while not done:
                    try:
                        text = next(payloads, None)
                        if text is None:
                            break
                        if text.strip() == DONE:
                            done = True
                            break
                        obj = parse_json_object(text)
                    except SSEFormatError as exc:
                        raise self._garbage(path, str(exc), sent) from None
                    error = obj.get("error")
                    if error is not None:
                        raise self._stream_error(path, error, sent)
                    yield _Chunk(text, obj)
                    sent += 1
                if not data and not done:
                    raise self._broken(path, "stream ended without data: [DONE]", sent)
        finally:
            if done:
                resp.release()  # the connection goes back to the pool
            else:
                resp.close()  # a broken or abandoned stream: drop the connection

    def _broken(self, path: str, why: str, sent: int) -> BackendError:
        if sent == 0:
            return ReplicaUnavailable(
                f"POST {path}: {why} before the first chunk", replica_id=self.replica_id
            )
        return StreamBroken(f"POST {path}: {why}", chunks=sent, replica_id=self.replica_id)

    def _garbage(self, path: str, why: str, sent: int) -> BackendError:
        if sent == 0:
            return ReplicaProtocolError(f"POST {path}: {why}", replica_id=self.replica_id)
        return StreamBroken(f"POST {path}: malformed chunk: {why}", chunks=sent, replica_id=self.replica_id)

    def _stream_error(self, path: str, error: Any, sent: int) -> BackendError:
        text = json.dumps(error)[: self.settings.max_error_body]
        if sent:
            return StreamBroken(
                f"POST {path}: replica error in stream: {text}", chunks=sent, replica_id=self.replica_id
            )
        status = error.get("code") if isinstance(error, dict) else None
        status = status if isinstance(status, int) and 400 <= status <= 599 else 500
        return ReplicaError(f"POST {path} (in stream)", status=status, body=text, replica_id=self.replica_id)


class _Chunk:
    __slots__ = ("data", "json_obj")

    def __init__(self, data: str, json_obj: dict[str, Any]) -> None:
        self.data = data
        self.json_obj = json_obj


async def _bounded_read(resp: aiohttp.ClientResponse, limit: int, timeout_s: float) -> bytes:
    try:
        async with asyncio.timeout(timeout_s):
            return await resp.content.read(limit)
    except (TimeoutError, *_CONNECTION_ERRORS):
        return b""


def _check_openai_path(path: str) -> None:
    if path not in OPENAI_PATHS:
        raise ValueError(f"not an OpenAI passthrough path: {path!r} (expected one of {sorted(OPENAI_PATHS)})")


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


# --------------------------------------------------------------------------- parsers


def _number(obj: Mapping[str, Any], key: str, where: str, *, default: float | None = None) -> float:
    value = obj.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        if key not in obj and default is not None:
            return default
        raise ReplicaProtocolError(f"{where}: field {key!r} must be a finite number, got {value!r}")
    return float(value)


def parse_loads(result: Any, replica_id: str = "") -> LoadReport:
    """Parse SGLang ``/v1/loads`` (``{"loads": [per-rank...]}``, or a bare list)."""
    ranks_raw = result.get("loads") if isinstance(result, dict) else result
    if not isinstance(ranks_raw, list) or not ranks_raw:
        raise ReplicaProtocolError(
            f"/v1/loads: expected a non-empty 'loads' list, got {result!r:.120}", replica_id=replica_id
        )
    ranks: list[RankLoad] = []
    for i, r in enumerate(ranks_raw):
        where = f"/v1/loads loads[{i}]"
        if not isinstance(r, dict):
            raise ReplicaProtocolError(f"{where}: expected an object, got {r!r:.80}", replica_id=replica_id)
        try:
            total = int(_number(r, "max_total_num_tokens", where))
            used = int(_number(r, "num_used_tokens", where, default=-1.0))
            usage = _number(r, "token_usage", where, default=-1.0)
            if used < 0:
                used = round(usage * total) if usage >= 0 else 0
            if usage < 0:
                usage = used / total if total else 0.0
            hit = r.get("cache_hit_rate")
            ranks.append(
                RankLoad(
                    dp_rank=int(_number(r, "dp_rank", where, default=float(i))),
                    running=int(_number(r, "num_running_reqs", where)),
                    waiting=int(_number(r, "num_waiting_reqs", where)),
                    used_tokens=used,
                    total_tokens=total,
                    token_usage=usage,
                    cache_hit_rate=float(hit)
                    if isinstance(hit, int | float) and not isinstance(hit, bool)
                    else None,
                )
            )
        except ReplicaProtocolError as exc:
            raise ReplicaProtocolError(str(exc), replica_id=replica_id) from None
    return LoadReport(tuple(ranks))


def parse_server_info(result: Any, replica_id: str = "") -> ServerInfo:
    """Parse ``/server_info``: server args at the top level, scheduler state in
    ``internal_states[0]`` (where ``max_total_num_tokens`` lives in SGLang 0.4/0.5)."""
    if not isinstance(result, dict):
        raise ReplicaProtocolError(
            f"/server_info: expected an object, got {result!r:.120}", replica_id=replica_id
        )
    # A null field is an unset server argument (SGLang 0.5.17 reports
    # ``max_running_requests: null`` unless the flag is given): it counts as absent, so the
    # scheduler's own value in ``internal_states[0]`` or the documented default applies.
    merged: dict[str, Any] = {k: v for k, v in result.items() if v is not None}
    states = result.get("internal_states")
    if isinstance(states, list) and states and isinstance(states[0], dict):
        merged = {**{k: v for k, v in states[0].items() if v is not None}, **merged}
    try:
        total = int(_number(merged, "max_total_num_tokens", "/server_info"))
        running = _number(merged, "max_running_requests", "/server_info", default=float(DEFAULT_MAX_RUNNING))
        # What the scheduler really admits (SGLang >= 0.5.17 puts it in internal_states, per
        # attention-DP rank); preferred over the server argument, which may be unset.
        effective = _number(merged, "effective_max_running_requests_per_dp", "/server_info", default=-1.0)
        page = _number(merged, "page_size", "/server_info", default=float(DEFAULT_PAGE_SIZE))
        dp = _number(merged, "dp_size", "/server_info", default=1.0)
    except ReplicaProtocolError as exc:
        raise ReplicaProtocolError(str(exc), replica_id=replica_id) from None
    if dp != int(dp) or not 1 <= dp <= MAX_DP_SIZE:
        raise ReplicaProtocolError(
            f"/server_info: dp_size must be an integer in [1, {MAX_DP_SIZE}], got {dp!r}",
            replica_id=replica_id,
        )
    try:
        max_input = _max_input_tokens(merged, total)
    except ReplicaProtocolError as exc:
        raise ReplicaProtocolError(str(exc), replica_id=replica_id) from None
    model = merged.get("model_path")
    attn_dp = int(dp) if merged.get("enable_dp_attention") is True else 1
    if effective > 0:
        running = effective * attn_dp
    return ServerInfo(
        kv_total_tokens=total,
        max_running_requests=max(1, int(running)),
        page_size=max(1, int(page)),
        model_path=model if isinstance(model, str) else "",
        attn_dp_size=attn_dp,
        priority_scheduling=prio
        if isinstance(prio := merged.get("enable_priority_scheduling"), bool)
        else None,
        version=version if isinstance(version := merged.get("version"), str) else "",
        session_radix_cache=radix
        if isinstance(radix := merged.get("enable_session_radix_cache"), bool)
        else None,
        max_input_tokens=max_input,
    )


def _max_input_tokens(merged: Mapping[str, Any], total: int) -> int:
    """The longest prompt the replica accepts (``ServerInfo.max_input_tokens``): one below the
    ``max_req_input_len`` SGLang merges into ``/server_info`` from its scheduler, else derived
    the way its scheduler derives it, from ``context_length`` (a server argument, null unless
    given: then the KV pool alone bounds it) and ``max_total_num_tokens``."""
    if "max_req_input_len" in merged:
        reported = _number(merged, "max_req_input_len", "/server_info")
        if reported < 1:
            raise ReplicaProtocolError(
                f"/server_info: field 'max_req_input_len' must be >= 1, got {reported!r}"
            )
        return int(reported) - 1
    max_req_len = total - 1
    ctx = merged.get("context_length")
    if isinstance(ctx, int | float) and not isinstance(ctx, bool) and math.isfinite(ctx) and ctx > 0:
        max_req_len = min(int(ctx) - 1, max_req_len)
    return max(0, max_req_len - REQ_INPUT_MARGIN - 1)


def parse_sglang_metrics(text: str) -> dict[str, float]:
    """Every ``sglang:*`` sample of a Prometheus exposition, summed over labels.

    Histogram buckets are skipped (their sum is meaningless); ``_sum`` and ``_count`` are kept.
    """
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if not sample.name.startswith("sglang:") or sample.name.endswith("_bucket"):
                continue
            out[sample.name] = out.get(sample.name, 0.0) + float(sample.value)
    return out
