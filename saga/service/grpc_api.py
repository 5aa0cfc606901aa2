"""The ``saga.v1.SessionService`` gRPC servicer: converts messages, delegates to the core.

No scheduling logic lives here. Every handler authenticates the caller from its metadata
(``authorization: Bearer <key>`` or ``x-api-key``), converts the request into core
arguments, and maps a :class:`~saga.service.errors.ServiceError` to its status code through
the one table in :mod:`saga.service.errors` (a rejection also carries the trailing metadata
``retry-after-ms``).

Requests are registered with deserializers that turn undecodable bytes into a sentinel, so a
malformed message is answered ``INVALID_ARGUMENT`` rather than gRPC's generic ``INTERNAL``.
The server also runs the standard health service (``grpc.health.v1``) and reflection.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc
from google.protobuf.message import DecodeError
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from saga.scheduler.api import WorkflowHints
from saga.service.calls import NativeChunk, Timer, native_payload, native_stream, native_unary
from saga.service.core import CallResult, CallSpec, LiveSession, Principal, ServiceCore
from saga.service.errors import RETRY_AFTER_MS_KEY, InvalidArgument, Rejected, ServiceError, mapping
from saga.service.pb import pb2
from saga.service.tokens import ids_prompt, text_prompt

SERVICE_NAME = "saga.v1.SessionService"
Req = TypeVar("Req")


class _Malformed:
    """Stands in for a request whose bytes did not decode."""

    def __init__(self, why: str) -> None:
        self.why = why


def _safe(cls: Any) -> Callable[[bytes], Any]:
    def decode(data: bytes) -> Any:
        try:
            return cls.FromString(data)
        except (DecodeError, ValueError) as exc:
            return _Malformed(str(exc) or "cannot decode")

    return decode


def api_key(context: grpc.aio.ServicerContext[Any, Any]) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == "authorization" and isinstance(value, str):
            scheme, _, token = value.partition(" ")
            return token.strip() if scheme.lower() == "bearer" else value.strip()
        if key == "x-api-key" and isinstance(value, str):
            return value.strip()
    return None


async def _abort(context: grpc.aio.ServicerContext[Any, Any], err: ServiceError) -> None:
    m = mapping(err)
    if isinstance(err, Rejected):
        context.set_trailing_metadata(((RETRY_AFTER_MS_KEY, str(int(err.retry_after_s * 1000))),))
    await context.abort(m.grpc_code, err.message)


class SessionServicer:
    """Implements ``saga.v1.SessionService`` on a :class:`ServiceCore`."""

    def __init__(self, core: ServiceCore) -> None:
        self.core = core

    # ------------------------------------------------------------------ helpers

    def _principal(self, context: grpc.aio.ServicerContext[Any, Any]) -> Principal:
        return self.core.authenticate(api_key(context))

    async def _unary(
        self,
        request: Any,
        context: grpc.aio.ServicerContext[Any, Any],
        body: Callable[[Any, Principal], Awaitable[Any]],
    ) -> Any:
        try:
            if isinstance(request, _Malformed):
                raise InvalidArgument(f"malformed request: {request.why}")
            return await body(request, self._principal(context))
        except ServiceError as err:
            await _abort(context, err)
            raise AssertionError("unreachable") from err  # abort raises

    def _spec(self, request: Any) -> tuple[CallSpec, dict[str, Any]]:
        lim = self.core.config.spec.limits
        tok = self.core.config.spec.tokens
        s = request.sampling
        max_new = s.max_new_tokens or 0
        if not 1 <= max_new <= lim.max_new_tokens:
            raise InvalidArgument(f"sampling.max_new_tokens must be in [1, {lim.max_new_tokens}]")
        sampling: dict[str, Any] = {"max_new_tokens": max_new}
        if s.HasField("temperature"):
            if not 0.0 <= s.temperature <= 2.0:
                raise InvalidArgument("sampling.temperature must be in [0, 2]")
            sampling["temperature"] = s.temperature
        if s.HasField("top_p"):
            if not 0.0 < s.top_p <= 1.0:
                raise InvalidArgument("sampling.top_p must be in (0, 1]")
            sampling["top_p"] = s.top_p
        if s.stop:
            if len(s.stop) > 16:
                raise InvalidArgument("sampling.stop: at most 16 stop strings")
            sampling["stop"] = list(s.stop)
        which = request.WhichOneof("prompt")
        if which == "text":
            if not request.text:
                raise InvalidArgument("text must not be empty")
            prompt = text_prompt(
                request.text,
                chars_per_token=tok.chars_per_token,
                block_size=tok.block_size,
                max_blocks=tok.max_blocks,
            )
            payload = native_payload(text=request.text, input_ids=None, sampling=sampling)
        elif which == "input_ids":
            ids = list(request.input_ids.ids)
            if not ids:
                raise InvalidArgument("input_ids must not be empty")
            prompt = ids_prompt(ids, block_size=tok.block_size, max_blocks=tok.max_blocks)
            payload = native_payload(text=None, input_ids=ids, sampling=sampling)
        else:
            raise InvalidArgument("a prompt is required: set text or input_ids")
        if len(request.request_id) > 128:
            raise InvalidArgument("request_id must be at most 128 characters")
        return CallSpec(prompt, max_new, request.request_id), payload

    async def _session_of(self, request: Any, principal: Principal) -> LiveSession | None:
        if not request.session_id:
            return None
        return await self.core.session(principal, request.session_id)

    # ------------------------------------------------------------------ sessions

    async def StartSession(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        async def body(r: Any, p: Principal) -> Any:
            h = r.hints
            hints = WorkflowHints(
                expected_calls=h.expected_calls or None,
                deadline_s=h.deadline_s or None,
                parent_session_id=h.parent_session_id or None,
                priority=h.priority if h.HasField("priority") else None,
            )
            if h.deadline_s < 0:
                raise InvalidArgument("hints.deadline_s must be >= 0")
            sid = await self.core.start_session(
                p, tenant=r.tenant, agent_type=r.agent_type, hints=hints, session_id=r.session_id
            )
            return pb2.StartSessionResponse(session_id=sid)

        return await self._unary(request, context, body)

    async def EndSession(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        async def body(r: Any, p: Principal) -> Any:
            duration, calls = await self.core.end_session(p, r.session_id)
            return pb2.EndSessionResponse(duration_s=duration, calls=calls)

        return await self._unary(request, context, body)

    async def ToolStart(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        async def body(r: Any, p: Principal) -> Any:
            await self.core.tool_start(p, r.session_id, r.tool)
            return pb2.ToolStartResponse()

        return await self._unary(request, context, body)

    async def ToolEnd(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        async def body(r: Any, p: Principal) -> Any:
            await self.core.tool_end(p, r.session_id, r.tool, r.status)
            return pb2.ToolEndResponse()

        return await self._unary(request, context, body)

    async def GetSession(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        async def body(r: Any, p: Principal) -> Any:
            v = self.core.view(await self.core.session(p, r.session_id))
            return pb2.Session(
                session_id=v.session_id,
                tenant=v.tenant,
                agent_type=v.agent_type,
                state=v.state,
                current_tool=v.current_tool,
                calls=v.calls,
                replica_id=v.replica_id,
                pinned=v.pinned,
                age_s=v.age_s,
                usage=_usage(v.usage),
            )

        return await self._unary(request, context, body)

    # ------------------------------------------------------------------ generation

    async def Generate(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        async def body(r: Any, p: Principal) -> Any:
            t0 = time.perf_counter()
            spec, payload = self._spec(r)
            session = await self._session_of(r, p)
            timer = Timer()
            result = CallResult()
            chunks: list[NativeChunk] = [
                c async for c in self.core.run_call(p, session, spec, native_unary(payload, timer), result)
            ]
            c = chunks[-1]
            self.core.metrics.proxy_overhead.labels("grpc").observe(
                max(0.0, time.perf_counter() - t0 - timer.replica_s)
            )
            return pb2.GenerateResponse(
                request_id=spec.request_id,
                text=c.text,
                output_ids=c.output_ids,
                finish_reason=c.finish_reason,
                usage=_usage(result.usage),
                replica_id=result.replica_id,
                queued_s=result.queued_s,
            )

        return await self._unary(request, context, body)

    async def GenerateStream(
        self, request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Any]:
        t0 = time.perf_counter()
        try:
            if isinstance(request, _Malformed):
                raise InvalidArgument(f"malformed request: {request.why}")
            p = self._principal(context)
            spec, payload = self._spec(request)
            session = await self._session_of(request, p)
            timer = Timer()
            result = CallResult()
            first = True
            async for c in self.core.run_call(p, session, spec, native_stream(payload, timer), result):
                if first:
                    first = False
                    self.core.observe_ttft(p.tenant, time.perf_counter() - t0)
                yield pb2.GenerateChunk(
                    request_id=spec.request_id,
                    text=c.text,
                    output_ids=c.output_ids,
                    finish_reason=c.finish_reason,
                    usage=_usage(c.usage) if c.usage is not None else None,
                    replica_id=result.replica_id,
                )
            self.core.metrics.proxy_overhead.labels("grpc").observe(
                max(0.0, time.perf_counter() - t0 - timer.replica_s)
            )
        except ServiceError as err:
            await _abort(context, err)


def _usage(u: Any) -> Any:
    if u is None:
        return pb2.Usage()
    return pb2.Usage(
        prompt_tokens=u.prompt_tokens, cached_tokens=u.cached_tokens, completion_tokens=u.output_tokens
    )


def _handlers(servicer: SessionServicer) -> grpc.GenericRpcHandler[Any, Any]:
    u = grpc.unary_unary_rpc_method_handler
    methods = {
        "StartSession": u(
            servicer.StartSession,
            request_deserializer=_safe(pb2.StartSessionRequest),
            response_serializer=pb2.StartSessionResponse.SerializeToString,
        ),
        "EndSession": u(
            servicer.EndSession,
            request_deserializer=_safe(pb2.EndSessionRequest),
            response_serializer=pb2.EndSessionResponse.SerializeToString,
        ),
        "Generate": u(
            servicer.Generate,
            request_deserializer=_safe(pb2.GenerateRequest),
            response_serializer=pb2.GenerateResponse.SerializeToString,
        ),
        "GenerateStream": grpc.unary_stream_rpc_method_handler(
            servicer.GenerateStream,
            request_deserializer=_safe(pb2.GenerateRequest),
            response_serializer=pb2.GenerateChunk.SerializeToString,
        ),
        "ToolStart": u(
            servicer.ToolStart,
            request_deserializer=_safe(pb2.ToolStartRequest),
            response_serializer=pb2.ToolStartResponse.SerializeToString,
        ),
        "ToolEnd": u(
            servicer.ToolEnd,
            request_deserializer=_safe(pb2.ToolEndRequest),
            response_serializer=pb2.ToolEndResponse.SerializeToString,
        ),
        "GetSession": u(
            servicer.GetSession,
            request_deserializer=_safe(pb2.GetSessionRequest),
            response_serializer=pb2.Session.SerializeToString,
        ),
    }
    return grpc.method_handlers_generic_handler(SERVICE_NAME, methods)


async def start_grpc_server(core: ServiceCore, host: str, port: int) -> tuple[grpc.aio.Server, int]:
    """Start the gRPC server (API + health + reflection); returns it and the bound port."""
    limit = core.config.spec.limits.max_request_bytes
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", limit),
            ("grpc.so_reuseport", 0),
        ]
    )
    server.add_generic_rpc_handlers((_handlers(SessionServicer(core)),))
    health_servicer = health.aio.HealthServicer()  # type: ignore[attr-defined]
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME)
    reflection.enable_server_reflection(names, server)
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError(f"cannot bind gRPC to {host}:{port}")
    await server.start()
    await health_servicer.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    return server, bound
