"""The gRPC API on a real grpc.aio server: status codes for bad input at every RPC."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from prometheus_client import CollectorRegistry

from saga.client import (
    AsyncSagaClient,
    AuthenticationError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    RejectedError,
)
from saga.service.app import Service
from saga.service.config import load_text
from saga.service.pb import pb2

from .conftest import Stack, config_text

pytestmark = pytest.mark.integration

ALPHA, BETA = "sk-alpha-123456", "sk-beta-1234567"


async def test_unknown_and_ended_sessions_are_not_found(stack: Stack) -> None:
    async with AsyncSagaClient(stack.grpc_target) as c:
        with pytest.raises(NotFoundError, match="unknown session"):
            await c.get_session("nope")
        s = await c.start_session(agent="swe")
        await s.end()
        with pytest.raises(NotFoundError, match="ended"):
            await s.generate("hi", max_new_tokens=4)
        with pytest.raises(NotFoundError):
            await s.end()


async def test_other_tenants_session_is_refused(stack: Stack) -> None:
    async with (
        AsyncSagaClient(stack.grpc_target, api_key=ALPHA) as a,
        AsyncSagaClient(stack.grpc_target, api_key=BETA) as b,
    ):
        s = await a.start_session(agent="swe")
        assert (await a.get_session(s.session_id)).tenant == "alpha"
        with pytest.raises(PermissionDeniedError):
            await b.get_session(s.session_id)
        with pytest.raises(PermissionDeniedError):
            await _gen_as(b, s.session_id)
        with pytest.raises(PermissionDeniedError):
            await b.start_session(tenant="alpha", agent="swe")  # key grants beta only
        await s.end()


async def _gen_as(client: AsyncSagaClient, sid: str) -> None:
    from saga.client.aio import AsyncSession

    await AsyncSession(client, sid, "", "").generate("x", max_new_tokens=2)


async def test_unknown_api_key_is_unauthenticated(stack: Stack) -> None:
    async with AsyncSagaClient(stack.grpc_target, api_key="sk-wrong-000000") as c:
        with pytest.raises(AuthenticationError):
            await c.start_session(agent="swe")


async def test_bad_arguments_are_invalid(stack: Stack) -> None:
    async with AsyncSagaClient(stack.grpc_target) as c:
        with pytest.raises(InvalidArgumentError):
            await c.start_session(agent="")
        with pytest.raises(InvalidArgumentError):
            await c.start_session(agent="swe", session_id="bad id with spaces")
        s = await c.start_session(agent="swe")
        with pytest.raises(InvalidArgumentError, match="max_new_tokens"):
            await s.generate("hi", max_new_tokens=0)
        with pytest.raises(InvalidArgumentError, match="exceeds the limit"):
            await s.generate("x" * 200_000, max_new_tokens=4)  # ~50k tokens > 20k limit
        with pytest.raises(grpc.aio.AioRpcError, match="no tool is running") as ei:
            await c._stub.ToolEnd(pb2.ToolEndRequest(session_id=s.session_id, tool="t"))
        assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(InvalidArgumentError):
            async with s.tool("bad\ntool"):
                pass
        await s.end()


async def test_malformed_protobuf_bytes_are_invalid_argument(stack: Stack) -> None:
    async with grpc.aio.insecure_channel(stack.grpc_target) as ch:
        for method in ("Generate", "StartSession"):
            call = ch.unary_unary(
                f"/saga.v1.SessionService/{method}", request_serializer=None, response_deserializer=None
            )
            with pytest.raises(grpc.aio.AioRpcError) as ei:
                await call(b"\x0a\xff\xff\xff")  # field 1, length 2^21+: truncated
            assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        # A well-formed message with no prompt set
        gen = ch.unary_unary(
            "/saga.v1.SessionService/Generate",
            request_serializer=pb2.GenerateRequest.SerializeToString,
            response_deserializer=pb2.GenerateResponse.FromString,
        )
        with pytest.raises(grpc.aio.AioRpcError) as ei:
            await gen(pb2.GenerateRequest(sampling=pb2.SamplingParams(max_new_tokens=4)))
        assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "prompt is required" in (ei.value.details() or "")


async def test_session_without_id_and_get_session(stack: Stack) -> None:
    async with AsyncSagaClient(stack.grpc_target) as c:
        out = await c.generate("a call without a session", max_new_tokens=4)
        assert out.usage.completion_tokens > 0
        s = await c.start_session(agent="browser", session_id="my-session.1")
        assert s.session_id == "my-session.1"
        await s.generate("page one", max_new_tokens=4)
        async with s.tool("web_fetch"):
            info = await c.get_session(s.session_id)
            assert info.state == "tool"
            assert info.current_tool == "web_fetch"
        info = await c.get_session(s.session_id)
        assert info.calls == 1
        assert info.replica_id in ("r0", "r1")
        await s.end()


async def test_rejection_carries_retry_hint() -> None:
    from .conftest import start_stack, stop_stack

    st = await start_stack(1)
    st.service.config.spec.limits.max_sessions = 1
    try:
        async with AsyncSagaClient(st.grpc_target) as c:
            s = await c.start_session(agent="swe")
            with pytest.raises(RejectedError) as ei:
                await c.start_session(agent="swe")
            assert ei.value.retry_after_s is not None
            assert ei.value.retry_after_s > 0
            await s.end()
    finally:
        await stop_stack(st)


async def test_health_and_reflection(stack: Stack) -> None:
    async with grpc.aio.insecure_channel(stack.grpc_target) as ch:
        resp = await health_pb2_grpc.HealthStub(ch).Check(
            health_pb2.HealthCheckRequest(service="saga.v1.SessionService")
        )
        assert resp.status == health_pb2.HealthCheckResponse.SERVING
        stub = reflection_pb2_grpc.ServerReflectionStub(ch)
        services = []
        async for r in stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")])
        ):
            services += [s.name for s in r.list_services_response.service]
        assert "saga.v1.SessionService" in services


async def test_keys_required_without_anonymous_tenant() -> None:
    cfg = load_text(config_text(["http://127.0.0.1:9"], anonymous=False))
    svc = Service(cfg, registry=CollectorRegistry())
    await svc.start()
    try:
        async with AsyncSagaClient(f"127.0.0.1:{svc.grpc_port}") as c:
            with pytest.raises(AuthenticationError, match="API key is required"):
                await c.start_session(agent="swe")
    finally:
        await svc.stop()
