"""OpenAI-compatible endpoints of the emulator: ``/v1/completions`` and ``/v1/chat/completions``.

Responses follow SGLang 0.5's OpenAI layer: ``usage`` carries
``prompt_tokens_details.cached_tokens``; streaming uses SSE chunks (``chat.completion.chunk``
with a first ``role`` delta, or ``text_completion``), a final chunk with ``finish_reason``, an
optional usage chunk (``stream_options.include_usage``), then ``data: [DONE]``.

Chat requests that force a tool (``tool_choice`` ``"required"`` or a named function) are
answered with one tool call instead of text (:mod:`saga.emulator.tool_calls`): the same
generation, its ids rendered as the call's JSON ``arguments``, ``content: null``,
``finish_reason: "tool_calls"``; streamed as a tool-call header delta (index, id, type, name)
at the first token, then ``arguments`` fragments.
"""

from __future__ import annotations

import json
import time
from typing import Any

from aiohttp import web

from saga.emulator.core import EmulatorError, tokenizer
from saga.emulator.protocol import BadRequest, OpenAIInput, openai_error_body, parse_openai, usage_body
from saga.emulator.server import read_json, run_generation, runtime_of
from saga.emulator.tool_calls import (
    ARGS_PREFIX,
    ARGS_SUFFIX,
    arguments_delta,
    forced_tool,
    header_delta,
    tool_call,
)


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(text=json.dumps(body), status=status, content_type="application/json")


def _finish(reason: str, tool: str | None = None) -> str:
    if reason == "abort":
        return "abort"
    return "length" if tool is None else "tool_calls"


async def completions(request: web.Request) -> web.StreamResponse:
    return await _handle(request, chat=False)


async def chat_completions(request: web.Request) -> web.StreamResponse:
    return await _handle(request, chat=True)


async def _handle(request: web.Request, *, chat: bool) -> web.StreamResponse:
    rt = runtime_of(request)
    try:
        body = await read_json(request)
        inp = parse_openai(body, rt.config.page_size, chat=chat, default_model=rt.config.model_name)
        tool = forced_tool(body) if chat else None
    except BadRequest as e:
        return _json(openai_error_body(str(e)), 400)
    try:
        if inp.stream:
            return await _stream(request, inp, tool)
        return await _unary(inp, request, tool)
    except EmulatorError as e:
        return _json(openai_error_body(str(e)), 400)


async def _unary(inp: OpenAIInput, request: web.Request, tool: str | None) -> web.Response:
    rt = runtime_of(request)
    req = inp.request
    ids: list[int] = []
    completion = cached = 0
    reason = "length"
    async for prog in run_generation(rt, req):
        ids.extend(prog.new_token_ids)
        completion, cached = prog.completion_tokens, prog.cached_tokens
        if prog.finished is not None:
            reason = prog.finished.finish_reason
    text = tokenizer.decode(ids)
    finish = _finish(reason, tool)
    choice: dict[str, Any] = {"index": 0, "logprobs": None, "finish_reason": finish, "matched_stop": None}
    if inp.chat:
        calls = None
        if tool is not None and finish == "tool_calls":
            calls = [tool_call(req.seed, tool, ARGS_PREFIX + text + ARGS_SUFFIX)]
        choice["message"] = {
            "role": "assistant",
            "content": None if calls else text,
            "reasoning_content": None,
            "tool_calls": calls,
        }
    else:
        choice["text"] = text
    return _json(
        {
            "id": req.rid,
            "object": "chat.completion" if inp.chat else "text_completion",
            "created": int(time.time()),
            "model": inp.model,
            "choices": [choice],
            "usage": usage_body(req.num_tokens, completion, cached),
        }
    )


async def _stream(request: web.Request, inp: OpenAIInput, tool: str | None) -> web.StreamResponse:
    rt = runtime_of(request)
    req = inp.request
    gen = run_generation(rt, req)
    first = await gen.__anext__()  # bad input raises here, before the 200
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await resp.prepare(request)
    created = int(time.time())
    obj = "chat.completion.chunk" if inp.chat else "text_completion"

    def chunk(
        delta_text: str | None,
        finish: str | None,
        *,
        role: bool = False,
        tool_delta: dict[str, Any] | None = None,
    ) -> bytes:
        choice: dict[str, Any] = {"index": 0, "logprobs": None, "finish_reason": finish}
        if inp.chat:
            delta: dict[str, Any] = {}
            if role:
                delta["role"] = "assistant"
            if delta_text is not None:
                delta["content"] = delta_text
            if tool_delta is not None:
                delta["tool_calls"] = [tool_delta]
            choice["delta"] = delta
        else:
            choice["text"] = delta_text or ""
        body = {"id": req.rid, "object": obj, "created": created, "model": inp.model, "choices": [choice]}
        return b"data: " + json.dumps(body).encode() + b"\n\n"

    try:
        if inp.chat:
            await resp.write(chunk("", None, role=True))
        prog = first
        started = False  # tool call: header delta sent
        while True:
            if tool is None:
                if prog.new_token_ids:
                    await resp.write(chunk(tokenizer.decode(prog.new_token_ids), None))
            elif prog.new_token_ids or (prog.finished is not None and prog.finished.finish_reason != "abort"):
                fragment = tokenizer.decode(prog.new_token_ids)
                if not started:
                    started = True
                    await resp.write(chunk(None, None, tool_delta=header_delta(req.seed, tool)))
                    fragment = ARGS_PREFIX + fragment
                if prog.finished is not None:
                    fragment += ARGS_SUFFIX
                await resp.write(chunk(None, None, tool_delta=arguments_delta(fragment)))
            if prog.finished is not None:
                fin = prog.finished
                finish = _finish(fin.finish_reason, tool if started else None)
                await resp.write(chunk(None if inp.chat else "", finish))
                if inp.include_usage:
                    usage = {
                        "id": req.rid,
                        "object": obj,
                        "created": created,
                        "model": inp.model,
                        "choices": [],
                        "usage": usage_body(req.num_tokens, prog.completion_tokens, prog.cached_tokens),
                    }
                    await resp.write(b"data: " + json.dumps(usage).encode() + b"\n\n")
                break
            prog = await gen.__anext__()
        await resp.write(b"data: [DONE]\n\n")
    finally:
        await gen.aclose()  # aborts the request if the client went away mid-stream
    await resp.write_eof()
    return resp
