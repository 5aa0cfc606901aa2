"""A misbehaving SGLang replica for the error paths the emulator never produces.

Knobs: ``mode`` = "ok" | "garbage" (non-JSON answers) | "cut" (streams drop the connection
after ``cut_after`` chunks) | "tool_calls" (chat answers end in a tool call).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class Knobs:
    mode: str = "ok"
    cut_after: int = 2
    chunks: int = 4
    requests: list[dict[str, Any]] = field(default_factory=list)
    opened: list[str] = field(default_factory=list)
    closed: list[str] = field(default_factory=list)


def _native(i: int, last: bool) -> dict[str, Any]:
    return {
        "text": "tok" * (i + 1),
        "output_ids": list(range(i + 1)),
        "meta_info": {
            "prompt_tokens": 10,
            "completion_tokens": i + 1,
            "cached_tokens": 0,
            "finish_reason": {"type": "stop"} if last else None,
        },
    }


def _chat(tool: bool) -> dict[str, Any]:
    msg: dict[str, Any] = {"role": "assistant", "content": None if tool else "done"}
    if tool:
        msg["tool_calls"] = [
            {"id": "call_1", "type": "function", "function": {"name": "run_tests", "arguments": "{}"}}
        ]
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 0,
        "model": "default",
        "choices": [{"index": 0, "message": msg, "finish_reason": "tool_calls" if tool else "stop"}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13},
    }


def make_app(k: Knobs) -> web.Application:
    async def gen(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        k.requests.append(body)
        if k.mode == "garbage":
            return web.Response(text="<html>oops", content_type="text/html")
        if request.path == "/v1/chat/completions" and not body.get("stream"):
            return web.json_response(_chat(k.mode == "tool_calls"))
        if not body.get("stream"):
            return web.json_response(_native(k.chunks - 1, True))
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for i in range(k.chunks):
            if k.mode == "cut" and i == k.cut_after:
                assert request.transport is not None
                request.transport.abort()
                return resp
            await resp.write(b"data: " + json.dumps(_native(i, i == k.chunks - 1)).encode() + b"\n\n")
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    async def loads(_: web.Request) -> web.Response:
        return web.json_response(
            {
                "loads": [
                    {
                        "dp_rank": 0,
                        "num_running_reqs": 0,
                        "num_waiting_reqs": 0,
                        "num_used_tokens": 0,
                        "max_total_num_tokens": 100000,
                        "token_usage": 0.0,
                        "cache_hit_rate": 0.0,
                    }
                ]
            }
        )

    async def server_info(_: web.Request) -> web.Response:
        return web.json_response(
            {"model_path": "fake", "page_size": 1, "max_running_requests": 64, "max_total_num_tokens": 100000}
        )

    async def ok(_: web.Request) -> web.Response:
        return web.json_response({})

    async def open_session(request: web.Request) -> web.Response:
        sid = (await request.json())["session_id"]
        k.opened.append(sid)
        return web.json_response(sid)

    async def close_session(request: web.Request) -> web.Response:
        k.closed.append((await request.json())["session_id"])
        return web.json_response({})

    app = web.Application()
    for path in ("/generate", "/v1/chat/completions", "/v1/completions"):
        app.router.add_post(path, gen)
    app.router.add_get("/v1/loads", loads)
    app.router.add_get("/server_info", server_info)
    app.router.add_get("/health", ok)

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(text="")

    app.router.add_get("/metrics", metrics)
    app.router.add_post("/open_session", open_session)
    app.router.add_post("/close_session", close_session)
    app.router.add_post("/abort_request", ok)
    return app


async def start_fake(k: Knobs) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(make_app(k), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = next(a[1] for a in runner.addresses if isinstance(a, tuple))
    return runner, f"http://127.0.0.1:{port}"
