"""The asyncio SDK client (``grpc.aio``); the same shape as :mod:`saga.client.sync`::

async with AsyncSagaClient("127.0.0.1:50051") as client:
    async with client.session(agent="browser") as s:
        out = await s.generate("Open the page", max_new_tokens=128)
        async with s.tool("web_fetch"):
            await fetch()
        async for chunk in s.stream("Summarise it", max_new_tokens=64):
            ...
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

import grpc

from saga.client._common import (
    Chunk,
    Generation,
    chunk,
    generate_request,
    generation,
    log_llm_call,
    metadata,
    start_request,
)
from saga.client.errors import from_rpc_error
from saga.client.eventlog import EventLogWriter
from saga.service.pb import pb2, pb2_grpc


async def _call(fn: Any, req: Any, md: Any, timeout: float | None) -> Any:
    try:
        return await fn(req, metadata=md, timeout=timeout)
    except grpc.aio.AioRpcError as exc:
        raise from_rpc_error(exc.code(), exc.details(), exc.trailing_metadata()) from None


class AsyncSagaClient:
    def __init__(
        self,
        target: str = "127.0.0.1:50051",
        *,
        api_key: str | None = None,
        eventlog: str | Path | None = None,
        timeout_s: float | None = 600.0,
    ) -> None:
        self._channel = grpc.aio.insecure_channel(target)
        self._stub = pb2_grpc.SessionServiceStub(self._channel)
        self._md = metadata(api_key)
        self.timeout_s = timeout_s
        self.eventlog = EventLogWriter(eventlog) if eventlog is not None else None

    async def __aenter__(self) -> AsyncSagaClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self.eventlog is not None:
            self.eventlog.close()
        await self._channel.close(None)

    async def start_session(
        self,
        *,
        tenant: str = "",
        agent: str,
        session_id: str | None = None,
        expected_calls: int | None = None,
        deadline_s: float | None = None,
        parent: str | None = None,
        priority: int | None = None,
    ) -> AsyncSession:
        req = start_request(tenant, agent, session_id, expected_calls, deadline_s, parent, priority)
        resp = await _call(self._stub.StartSession, req, self._md, self.timeout_s)
        s = AsyncSession(self, resp.session_id, tenant, agent)
        if self.eventlog is not None:
            self.eventlog.session_start(
                s.session_id, agent_type=agent, tenant=tenant or "default", parent=parent
            )
        return s

    def session(self, *, tenant: str = "", agent: str, **kw: Any) -> _SessionCM:
        """``async with client.session(agent=...) as s``: started on enter, ended on exit."""
        return _SessionCM(self, dict(tenant=tenant, agent=agent, **kw))

    async def get_session(self, session_id: str) -> Any:
        req = pb2.GetSessionRequest(session_id=session_id)
        return await _call(self._stub.GetSession, req, self._md, self.timeout_s)

    async def generate(
        self, prompt: str | Sequence[int], *, max_new_tokens: int = 256, **kw: Any
    ) -> Generation:
        return await AsyncSession(self, "", "", "").generate(prompt, max_new_tokens=max_new_tokens, **kw)


class _SessionCM:
    def __init__(self, client: AsyncSagaClient, kw: dict[str, Any]) -> None:
        self._client = client
        self._kw = kw
        self._session: AsyncSession | None = None

    async def __aenter__(self) -> AsyncSession:
        self._session = await self._client.start_session(**self._kw)
        return self._session

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._session is not None and not self._session.ended:
            await self._session.end(status="ok" if et is None else "error")


class AsyncSession:
    def __init__(self, client: AsyncSagaClient, session_id: str, tenant: str, agent: str) -> None:
        self.client = client
        self.session_id = session_id
        self.tenant = tenant
        self.agent = agent
        self.ended = False

    async def end(self, status: str = "ok") -> float:
        c = self.client
        self.ended = True
        if c.eventlog is not None:
            c.eventlog.session_end(self.session_id, status)
        req = pb2.EndSessionRequest(session_id=self.session_id)
        resp = await _call(c._stub.EndSession, req, c._md, c.timeout_s)
        return float(resp.duration_s)

    async def generate(
        self,
        prompt: str | Sequence[int],
        *,
        max_new_tokens: int = 256,
        temperature: float | None = None,
        top_p: float | None = None,
        stop: Sequence[str] | None = None,
        request_id: str = "",
    ) -> Generation:
        c = self.client
        req = generate_request(self.session_id, prompt, max_new_tokens, temperature, top_p, stop, request_id)
        t0 = EventLogWriter.now()
        out = generation(await _call(c._stub.Generate, req, c._md, c.timeout_s))
        log_llm_call(c.eventlog, self.session_id, t0, out.usage)
        return out

    async def stream(
        self,
        prompt: str | Sequence[int],
        *,
        max_new_tokens: int = 256,
        temperature: float | None = None,
        top_p: float | None = None,
        stop: Sequence[str] | None = None,
        request_id: str = "",
    ) -> AsyncIterator[Chunk]:
        c = self.client
        req = generate_request(self.session_id, prompt, max_new_tokens, temperature, top_p, stop, request_id)
        t0 = EventLogWriter.now()
        ttft: float | None = None
        last: Chunk | None = None
        try:
            async for raw in c._stub.GenerateStream(req, metadata=c._md, timeout=c.timeout_s):
                if ttft is None:
                    ttft = EventLogWriter.now() - t0
                last = chunk(raw)
                yield last
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(exc.code(), exc.details(), exc.trailing_metadata()) from None
        log_llm_call(c.eventlog, self.session_id, t0, last.usage if last else None, ttft)

    @asynccontextmanager
    async def tool(self, name: str) -> AsyncIterator[None]:
        c = self.client
        await _call(
            c._stub.ToolStart, pb2.ToolStartRequest(session_id=self.session_id, tool=name), c._md, c.timeout_s
        )
        t0 = EventLogWriter.now()
        status = "ok"
        try:
            yield
        except BaseException:
            status = "error"
            raise
        finally:
            req = pb2.ToolEndRequest(session_id=self.session_id, tool=name, status=status)
            await _call(c._stub.ToolEnd, req, c._md, c.timeout_s)
            if c.eventlog is not None:
                c.eventlog.tool_call(self.session_id, name, t0, status)
