"""A fake SGLang replica with failure knobs, served over real HTTP on a free loopback port.

It speaks the subset of SGLang's HTTP API the backend uses and misbehaves on demand
(``FakeKnobs``): error statuses, garbage bodies, streams cut after k chunks, connections
dropped before any byte, stalls. The emulator (``saga.emulator``) models a replica's
performance; this fake exists to exercise the error paths it never produces.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web


@dataclass
class FakeKnobs:
    chunks: int = 3  # stream chunks before [DONE]
    status: int = 200  # status of /generate and the OpenAI paths
    garbage: bool = False  # answer non-JSON
    garbage_stream_after: int | None = None  # a non-SSE line after this many chunks
    cut_after: int | None = None  # drop the connection after this many chunks (no [DONE])
    drop_before_headers: bool = False  # close the connection before answering
    stall: bool = False  # never answer (until the test ends)
    healthy: bool = True
    loads_body: Any = None  # override the /v1/loads answer
    server_info_extra: dict[str, Any] = field(default_factory=dict)  # added to /server_info
    metrics_body: str | None = None
    open_sessions: set[str] = field(default_factory=set)
    requests: list[dict[str, Any]] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)


DEFAULT_METRICS = """# HELP sglang:num_running_reqs running
# TYPE sglang:num_running_reqs gauge
sglang:num_running_reqs{model_name="m"} 2.0
# HELP sglang:token_usage usage
# TYPE sglang:token_usage gauge
sglang:token_usage{model_name="m"} 0.25
# HELP sglang:e2e_request_latency_seconds e2e
# TYPE sglang:e2e_request_latency_seconds histogram
sglang:e2e_request_latency_seconds_bucket{le="1.0",model_name="m"} 3.0
sglang:e2e_request_latency_seconds_bucket{le="+Inf",model_name="m"} 4.0
sglang:e2e_request_latency_seconds_sum{model_name="m"} 2.5
sglang:e2e_request_latency_seconds_count{model_name="m"} 4.0
# HELP other_metric not sglang
# TYPE other_metric gauge
other_metric 7.0
"""


def _chunk(i: int, last: bool) -> dict[str, Any]:
    return {
        "text": "tok" * (i + 1),
        "output_ids": list(range(i + 1)),
        "meta_info": {
            "id": "r1",
            "prompt_tokens": 10,
            "completion_tokens": i + 1,
            "cached_tokens": 4,
            "finish_reason": {"type": "stop"} if last else None,
        },
    }


def make_app(knobs: FakeKnobs) -> web.Application:
    async def gen(request: web.Request) -> web.StreamResponse:
        if knobs.drop_before_headers:
            assert request.transport is not None
            request.transport.abort()
            return web.Response()
        if knobs.stall:
            await knobs.release.wait()
        body = await request.json()
        knobs.requests.append(body)
        if knobs.status >= 400:
            return web.json_response(
                {"error": {"message": "boom", "code": knobs.status}}, status=knobs.status
            )
        if knobs.garbage:
            return web.Response(text="<html>not json", content_type="text/html")
        if not body.get("stream"):
            if request.path == "/generate":
                return web.json_response(_chunk(knobs.chunks - 1, True))
            return web.json_response({"id": "c1", "object": "chat.completion", "choices": []})
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for i in range(knobs.chunks):
            if knobs.cut_after is not None and i == knobs.cut_after:
                assert request.transport is not None
                request.transport.abort()
                return resp
            if knobs.garbage_stream_after is not None and i == knobs.garbage_stream_after:
                await resp.write(b"this is not sse\n\n")
                await resp.write_eof()
                return resp
            data = _chunk(i, i == knobs.chunks - 1)
            await resp.write(b"data: " + json.dumps(data).encode() + b"\n\n")
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    async def loads(request: web.Request) -> web.Response:
        if knobs.garbage:
            return web.Response(text="garbage")
        if knobs.loads_body is not None:
            return web.json_response(knobs.loads_body)
        return web.json_response(
            {
                "dp_rank_count": 2,
                "loads": [
                    {
                        "dp_rank": 0,
                        "num_running_reqs": 2,
                        "num_waiting_reqs": 1,
                        "num_used_tokens": 100,
                        "max_total_num_tokens": 1000,
                        "token_usage": 0.1,
                        "cache_hit_rate": 0.5,
                    },
                    {
                        "dp_rank": 1,
                        "num_running_reqs": 3,
                        "num_waiting_reqs": 0,
                        "num_used_tokens": 300,
                        "max_total_num_tokens": 1000,
                        "token_usage": 0.3,
                        "cache_hit_rate": 0.7,
                    },
                ],
            }
        )

    async def server_info(request: web.Request) -> web.Response:
        if knobs.garbage:
            return web.json_response([1, 2])
        return web.json_response(
            {
                "model_path": "fake",
                "page_size": 16,
                "max_running_requests": 64,
                "internal_states": [{"max_total_num_tokens": 2000}],
                **knobs.server_info_extra,
            }
        )

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(text=knobs.metrics_body if knobs.metrics_body is not None else DEFAULT_METRICS)

    async def health(request: web.Request) -> web.Response:
        return web.Response(status=200 if knobs.healthy else 503)

    async def open_session(request: web.Request) -> web.Response:
        body = await request.json()
        sid = body.get("session_id") or "auto-1"
        if sid in knobs.open_sessions:
            return web.json_response({"error": {"message": "Failed to open the session."}}, status=400)
        knobs.open_sessions.add(sid)
        return web.json_response(sid)

    async def close_session(request: web.Request) -> web.Response:
        body = await request.json()
        knobs.open_sessions.discard(body["session_id"])
        return web.Response()

    async def abort(request: web.Request) -> web.Response:
        knobs.requests.append({"abort": (await request.json())["rid"]})
        return web.Response()

    app = web.Application()
    app.router.add_post("/generate", gen)
    app.router.add_post("/v1/chat/completions", gen)
    app.router.add_post("/v1/completions", gen)
    app.router.add_get("/v1/loads", loads)
    app.router.add_get("/server_info", server_info)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/health", health)
    app.router.add_get("/health_generate", health)
    app.router.add_post("/open_session", open_session)
    app.router.add_post("/close_session", close_session)
    app.router.add_post("/abort_request", abort)
    return app


@dataclass
class FakeReplica:
    knobs: FakeKnobs
    url: str
    runner: web.AppRunner
    stopped: bool = False

    async def stop(self) -> None:
        if not self.stopped:
            self.stopped = True
            self.knobs.release.set()
            await self.runner.cleanup()


async def start_fake(knobs: FakeKnobs | None = None) -> FakeReplica:
    knobs = knobs or FakeKnobs()
    runner = web.AppRunner(make_app(knobs), shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server = site._server
    assert isinstance(server, asyncio.base_events.Server)
    port = server.sockets[0].getsockname()[1]
    return FakeReplica(knobs, f"http://127.0.0.1:{port}", runner)


@pytest.fixture
async def fake() -> AsyncIterator[FakeReplica]:
    replica = await start_fake()
    yield replica
    await replica.stop()


@pytest.fixture
async def fake_factory() -> AsyncIterator[Any]:
    """Start extra fakes inside a test; those still running are stopped at teardown."""
    started: list[FakeReplica] = []

    async def factory(knobs: FakeKnobs | None = None) -> FakeReplica:
        r = await start_fake(knobs)
        started.append(r)
        return r

    yield factory
    for r in started:
        await r.stop()


@pytest.fixture
def dead_url() -> str:
    """A loopback URL where nothing listens (connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"
