"""The OpenAI-compatible HTTP endpoint (aiohttp): ``/v1/chat/completions``, ``/v1/completions``,
``/v1/models``.

Any agent built on the OpenAI SDK uses SAGA by changing ``base_url``. Each request is
converted once and delegated to the core; the body is forwarded to the chosen replica's own
OpenAI endpoint unchanged apart from SGLang's scheduling fields (``rid``, ``priority``, the
engine session) and, for streams, ``stream_options.include_usage`` (the usage-only chunk is
dropped again when the client did not ask for it).

* **Session id** from ``x-session-id``, else ``x-smg-routing-key``, else
  ``X-Dynamo-Session-ID`` (the conventions of other gateways). The first request naming an
  unknown id starts the session (agent type from ``x-saga-agent-type`` or
  ``spec.openai.default_agent_type``); it ends after ``limits.idle_session_timeout_s`` without
  calls. Requests without an id are scheduled one by one (``session_id=None``).
* **Tenant** from the API key (``Authorization: Bearer``); see :meth:`ServiceCore.authenticate`.
* **Tool boundaries inferred**: a response that ends in tool calls (``finish_reason:
  tool_calls``) opens a tool gap named after the first tool's function; the session's next
  request closes it.
* **Errors** in OpenAI's shape ``{"error": {"message", "type", "param", "code"}}`` with the
  status of the one table (:mod:`saga.service.errors`); a rejection carries ``Retry-After``.
  A stream that already started ends with an ``error`` event and no ``[DONE]``.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from saga.scheduler.api import Dispatch
from saga.service.backend.api import SSEEvent
from saga.service.calls import Timer
from saga.service.core import CallResult, CallSpec, EngineClient, LiveSession, Principal, ServiceCore
from saga.service.errors import (
    InvalidArgument,
    Rejected,
    ServiceError,
    mapping,
)
from saga.service.tokens import messages_text, text_prompt

SESSION_HEADERS = ("x-session-id", "x-smg-routing-key", "x-dynamo-session-id")
AGENT_HEADER = "x-saga-agent-type"
CORE_KEY: web.AppKey[ServiceCore] = web.AppKey("saga_core", ServiceCore)


def error_body(err: ServiceError) -> dict[str, Any]:
    m = mapping(err)
    code = err.reason if isinstance(err, Rejected) else None
    return {"error": {"message": err.message, "type": m.openai_type, "param": None, "code": code}}


def error_response(err: ServiceError) -> web.Response:
    headers = {}
    if isinstance(err, Rejected):
        headers["Retry-After"] = str(max(1, round(err.retry_after_s)))
    return web.json_response(error_body(err), status=mapping(err).http_status, headers=headers)


@web.middleware
async def _errors(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        resp: web.StreamResponse = await handler(request)
        return resp
    except ServiceError as err:
        return error_response(err)
    except web.HTTPRequestEntityTooLarge:
        return error_response(InvalidArgument("request body too large (spec.limits.max_request_bytes)"))
    except web.HTTPNotFound:
        return web.json_response(
            {"error": {"message": f"no route {request.path}", "type": "not_found_error", "param": None}},
            status=404,
        )
    except web.HTTPMethodNotAllowed:
        return web.json_response(
            {"error": {"message": f"{request.method} not allowed", "type": "invalid_request_error"}},
            status=405,
        )


def _api_key(request: web.Request) -> str | None:
    auth = request.headers.get("Authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return request.headers.get("x-api-key") or None


def _session_id(request: web.Request) -> str | None:
    for h in SESSION_HEADERS:
        v = request.headers.get(h)
        if v:
            return v
    return None


async def _json_body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidArgument(f"body is not JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise InvalidArgument("body must be a JSON object")
    return body


def _max_tokens(body: dict[str, Any], core: ServiceCore) -> int:
    lim = core.config.spec.limits
    for key in ("max_completion_tokens", "max_tokens"):
        v = body.get(key)
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= lim.max_new_tokens:
            raise InvalidArgument(f"{key} must be an integer in [1, {lim.max_new_tokens}]")
        return v
    return core.config.spec.openai.default_max_tokens


def _prompt_text(path: str, body: dict[str, Any]) -> str:
    if path == "/v1/chat/completions":
        msgs = body.get("messages")
        if not isinstance(msgs, list) or not msgs:
            raise InvalidArgument("messages must be a non-empty list")
        for i, m in enumerate(msgs):
            if not isinstance(m, dict) or not isinstance(m.get("role"), str):
                raise InvalidArgument(f"messages[{i}] must be an object with a role")
        return messages_text(msgs)
    prompt = body.get("prompt")
    if isinstance(prompt, str) and prompt:
        return prompt
    if isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
        return "\n".join(prompt)
    raise InvalidArgument("prompt must be a non-empty string or list of strings")


def _stop(finish_reason: object) -> str:
    if finish_reason == "tool_calls":
        return "tool_use"
    if finish_reason == "stop":
        return "end_turn"
    return ""


def _usage(obj: dict[str, Any]) -> Any:
    from saga.scheduler.api import Usage

    u = obj.get("usage")
    if not isinstance(u, dict):
        return None
    details = u.get("prompt_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, dict) else None

    def n(v: object) -> int:
        return v if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else 0

    return Usage(n(u.get("prompt_tokens")), n(cached), n(u.get("completion_tokens")))


def _first_tool(choice: dict[str, Any], key: str) -> str | None:
    msg = choice.get(key)
    calls = msg.get("tool_calls") if isinstance(msg, dict) else None
    if isinstance(calls, list):
        for c in calls:
            fn = c.get("function") if isinstance(c, dict) else None
            if isinstance(fn, dict) and isinstance(fn.get("name"), str) and fn["name"]:
                return str(fn["name"])
    return None


class OpenAIEndpoint:
    def __init__(self, core: ServiceCore) -> None:
        self.core = core

    async def models(self, request: web.Request) -> web.Response:
        self.core.authenticate(_api_key(request))
        data = [
            {"id": m, "object": "model", "created": 0, "owned_by": "saga"}
            for m in self.core.config.spec.openai.models
        ]
        return web.json_response({"object": "list", "data": data})

    async def chat(self, request: web.Request) -> web.StreamResponse:
        return await self._completion(request, "/v1/chat/completions")

    async def completions(self, request: web.Request) -> web.StreamResponse:
        return await self._completion(request, "/v1/completions")

    async def _completion(self, request: web.Request, path: str) -> web.StreamResponse:
        t0 = time.perf_counter()
        core = self.core
        principal = core.authenticate(_api_key(request))
        body = await _json_body(request)
        stream = body.get("stream", False)
        if not isinstance(stream, bool):
            raise InvalidArgument("stream must be a boolean")
        tok = core.config.spec.tokens
        prompt = text_prompt(
            _prompt_text(path, body),
            chars_per_token=tok.chars_per_token,
            block_size=tok.block_size,
            max_blocks=tok.max_blocks,
        )
        spec = CallSpec(prompt, _max_tokens(body, core))
        core.check_call(spec)
        session: LiveSession | None = None
        sid = _session_id(request)
        if sid is not None:
            agent = request.headers.get(AGENT_HEADER) or core.config.spec.openai.default_agent_type
            session = await core.implicit_session(principal, sid, agent)
        timer = Timer()
        result = CallResult()
        if not stream:
            out = [
                x async for x in core.run_call(principal, session, spec, _unary(path, body, timer), result)
            ]
            resp = out[-1]
            core.metrics.proxy_overhead.labels("openai").observe(
                max(0.0, time.perf_counter() - t0 - timer.replica_s)
            )
            self._after(session, result)
            return web.json_response(resp, headers={"x-saga-replica": result.replica_id})
        return await self._stream(request, principal, session, spec, path, body, timer, result, t0)

    def _after(self, session: LiveSession | None, result: CallResult) -> None:
        tool = result.extra.get("tool")
        if session is not None and result.stop == "tool_use":
            self.core.infer_tool_start(session, tool if isinstance(tool, str) else "tool")

    async def _stream(
        self,
        request: web.Request,
        principal: Principal,
        session: LiveSession | None,
        spec: CallSpec,
        path: str,
        body: dict[str, Any],
        timer: Timer,
        result: CallResult,
        t0: float,
    ) -> web.StreamResponse:
        core = self.core
        opts = body.get("stream_options")
        if opts is not None and not isinstance(opts, dict):
            raise InvalidArgument("stream_options must be an object")
        want_usage = bool(opts and opts.get("include_usage"))
        fwd = {**body, "stream_options": {**(opts or {}), "include_usage": True}}
        agen = core.run_call(principal, session, spec, _streaming(path, fwd, timer), result)
        resp: web.StreamResponse | None = None
        try:
            async for ev in agen:
                if resp is None:
                    resp = web.StreamResponse(
                        headers={
                            "Content-Type": "text/event-stream",
                            "Cache-Control": "no-cache",
                            "x-saga-replica": result.replica_id,
                        }
                    )
                    await resp.prepare(request)
                    core.observe_ttft(principal.tenant, time.perf_counter() - t0)
                if ev is _USAGE_ONLY and not want_usage:
                    continue
                await resp.write(ev.raw if isinstance(ev, SSEEvent) else result.extra["usage_raw"])
        except ServiceError as err:
            if resp is None:
                return error_response(err)
            await resp.write(b"data: " + json.dumps(error_body(err)).encode() + b"\n\n")
            await resp.write_eof()
            return resp
        if resp is None:  # the replica sent nothing at all: still a valid empty stream
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await resp.prepare(request)
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        core.metrics.proxy_overhead.labels("openai").observe(
            max(0.0, time.perf_counter() - t0 - timer.replica_s)
        )
        self._after(session, result)
        return resp


class _UsageOnly:
    """Marker yielded for the usage-only chunk (forwarded only when the client asked)."""


_USAGE_ONLY = _UsageOnly()


def _unary(path: str, body: dict[str, Any], timer: Timer) -> Any:
    async def forward(client: EngineClient, d: Dispatch, result: CallResult) -> AsyncIterator[dict[str, Any]]:
        payload = client.engine_fields(
            body, rid=d.call_id, priority=d.priority, engine_session=d.engine_session
        )
        t = time.perf_counter()
        try:
            out = await client.openai(path, payload)
        finally:
            timer.replica_s += time.perf_counter() - t
        result.usage = _usage(out)
        choices = out.get("choices")
        if isinstance(choices, list) and choices and isinstance(choices[0], dict):
            result.stop = _stop(choices[0].get("finish_reason"))
            tool = _first_tool(choices[0], "message")
            if tool:
                result.extra["tool"] = tool
        yield out

    return forward


def _streaming(path: str, body: dict[str, Any], timer: Timer) -> Any:
    async def forward(client: EngineClient, d: Dispatch, result: CallResult) -> AsyncIterator[Any]:
        payload = client.engine_fields(
            body, rid=d.call_id, priority=d.priority, engine_session=d.engine_session
        )
        t = time.perf_counter()
        agen = client.openai_stream(path, payload)
        try:
            async for ev in agen:
                timer.replica_s += time.perf_counter() - t
                obj = ev.json()
                usage = _usage(obj)
                if usage is not None:
                    result.usage = usage
                choices = obj.get("choices")
                if isinstance(choices, list) and choices and isinstance(choices[0], dict):
                    fr = choices[0].get("finish_reason")
                    if fr:
                        result.stop = _stop(fr)
                    tool = _first_tool(choices[0], "delta")
                    if tool and "tool" not in result.extra:
                        result.extra["tool"] = tool
                    yield ev
                elif usage is not None:
                    result.extra["usage_raw"] = ev.raw
                    yield _USAGE_ONLY
                else:
                    yield ev
                t = time.perf_counter()
        finally:
            aclose = getattr(agen, "aclose", None)
            if aclose is not None:
                await aclose()

    return forward


def build_app(core: ServiceCore) -> web.Application:
    ep = OpenAIEndpoint(core)
    app = web.Application(middlewares=[_errors], client_max_size=core.config.spec.limits.max_request_bytes)
    app[CORE_KEY] = core
    app.router.add_get("/v1/models", ep.models)
    app.router.add_post("/v1/chat/completions", ep.chat)
    app.router.add_post("/v1/completions", ep.completions)

    async def health(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app.router.add_get("/health", health)
    return app


async def start_http_server(core: ServiceCore, host: str, port: int) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(build_app(core), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    for addr in runner.addresses:
        if isinstance(addr, tuple) and len(addr) >= 2:
            return runner, int(addr[1])
    return runner, port
