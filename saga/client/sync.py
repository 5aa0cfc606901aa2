"""The synchronous SDK client.

::

    from saga.client import SagaClient

    with SagaClient("127.0.0.1:50051", api_key="...", eventlog="events.jsonl") as client:
        with client.session(agent="swe-agent") as s:
            out = s.generate("Fix the failing test", max_new_tokens=256)
            with s.tool("pytest"):
                run_tests()
            for chunk in s.stream("The tests pass now; summarise", max_new_tokens=64):
                print(chunk.text, end="")

A session ends when its ``with`` block ends (``status`` ``error`` if it raised). Tool blocks
report ToolStart/ToolEnd (``error`` when the block raised). Errors are the typed
:mod:`saga.client.errors`. With ``eventlog`` every session is also written to that file in the
``saga.graphs.ingest.eventlog`` format, so live traffic feeds the Agent Execution Graphs.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
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
from saga.client.errors import SagaError, from_rpc_error
from saga.client.eventlog import EventLogWriter
from saga.service.pb import pb2, pb2_grpc


def _call(fn: Any, req: Any, md: Any, timeout: float | None) -> Any:
    try:
        return fn(req, metadata=md, timeout=timeout)
    except grpc.RpcError as exc:
        raise _convert(exc) from None


def _convert(exc: grpc.RpcError) -> SagaError:
    code = exc.code() if hasattr(exc, "code") else None
    details = exc.details() if hasattr(exc, "details") else str(exc)
    trailing = exc.trailing_metadata() if hasattr(exc, "trailing_metadata") else None
    return from_rpc_error(code, details, trailing)


class SagaClient:
    """A blocking client of ``saga.v1.SessionService`` (thread-safe: one channel)."""

    def __init__(
        self,
        target: str = "127.0.0.1:50051",
        *,
        api_key: str | None = None,
        eventlog: str | Path | None = None,
        timeout_s: float | None = 600.0,
        channel: grpc.Channel | None = None,
    ) -> None:
        self._channel = channel or grpc.insecure_channel(target)
        self._stub = pb2_grpc.SessionServiceStub(self._channel)
        self._md = metadata(api_key)
        self.timeout_s = timeout_s
        self.eventlog = EventLogWriter(eventlog) if eventlog is not None else None

    def __enter__(self) -> SagaClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.eventlog is not None:
            self.eventlog.close()
        self._channel.close()

    def start_session(
        self,
        *,
        tenant: str = "",
        agent: str,
        session_id: str | None = None,
        expected_calls: int | None = None,
        deadline_s: float | None = None,
        parent: str | None = None,
        priority: int | None = None,
    ) -> Session:
        req = start_request(tenant, agent, session_id, expected_calls, deadline_s, parent, priority)
        resp = _call(self._stub.StartSession, req, self._md, self.timeout_s)
        s = Session(self, resp.session_id, tenant, agent)
        if self.eventlog is not None:
            self.eventlog.session_start(
                s.session_id, agent_type=agent, tenant=tenant or "default", parent=parent
            )
        return s

    def session(self, *, tenant: str = "", agent: str, **kw: Any) -> Session:
        """A session for a ``with`` block (started now, ended when the block exits)."""
        return self.start_session(tenant=tenant, agent=agent, **kw)

    def get_session(self, session_id: str) -> Any:
        return _call(
            self._stub.GetSession, pb2.GetSessionRequest(session_id=session_id), self._md, self.timeout_s
        )

    def generate(self, prompt: str | Sequence[int], *, max_new_tokens: int = 256, **kw: Any) -> Generation:
        """A call without a session (scheduled on its own)."""
        return Session(self, "", "", "").generate(prompt, max_new_tokens=max_new_tokens, **kw)


class Session:
    """One agent task. Use as a context manager, or call :meth:`end` yourself."""

    def __init__(self, client: SagaClient, session_id: str, tenant: str, agent: str) -> None:
        self.client = client
        self.session_id = session_id
        self.tenant = tenant
        self.agent = agent
        self.ended = False

    def __enter__(self) -> Session:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if not self.ended:
            self.end(status="ok" if et is None else "error")

    def end(self, status: str = "ok") -> float:
        c = self.client
        self.ended = True
        if c.eventlog is not None:
            c.eventlog.session_end(self.session_id, status)
        resp = _call(
            c._stub.EndSession, pb2.EndSessionRequest(session_id=self.session_id), c._md, c.timeout_s
        )
        return float(resp.duration_s)

    def generate(
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
        out = generation(_call(c._stub.Generate, req, c._md, c.timeout_s))
        log_llm_call(c.eventlog, self.session_id, t0, out.usage)
        return out

    def stream(
        self,
        prompt: str | Sequence[int],
        *,
        max_new_tokens: int = 256,
        temperature: float | None = None,
        top_p: float | None = None,
        stop: Sequence[str] | None = None,
        request_id: str = "",
    ) -> Iterator[Chunk]:
        c = self.client
        req = generate_request(self.session_id, prompt, max_new_tokens, temperature, top_p, stop, request_id)
        t0 = EventLogWriter.now()
        ttft: float | None = None
        last: Chunk | None = None
        try:
            for raw in c._stub.GenerateStream(req, metadata=c._md, timeout=c.timeout_s):
                if ttft is None:
                    ttft = EventLogWriter.now() - t0
                last = chunk(raw)
                yield last
        except grpc.RpcError as exc:
            raise _convert(exc) from None
        log_llm_call(c.eventlog, self.session_id, t0, last.usage if last else None, ttft)

    @contextmanager
    def tool(self, name: str) -> Iterator[None]:
        """Mark a tool call: ToolStart now, ToolEnd when the block exits."""
        c = self.client
        _call(
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
            _call(c._stub.ToolEnd, req, c._md, c.timeout_s)
            if c.eventlog is not None:
                c.eventlog.tool_call(self.session_id, name, t0, status)

    def info(self) -> Any:
        return self.client.get_session(self.session_id)
