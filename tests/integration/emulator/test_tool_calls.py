"""Tool calls on the emulator's chat endpoint over real HTTP: forced calls (named and
``required``) streamed and not, text for ``auto``/``none``, 400 for bad tool fields, and
``/generate`` and ``/v1/completions`` unaffected."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest

from saga.emulator.core import tokenizer
from saga.emulator.server import RunningReplica
from saga.emulator.tool_calls import ARGS_PREFIX, ARGS_SUFFIX, tool_call_id

pytestmark = pytest.mark.integration

TOOLS = [
    {"type": "function", "function": {"name": "file_op", "parameters": {"type": "object"}}},
    {"type": "function", "function": {"name": "code_execution", "description": "run code"}},
]


def _body(**extra: Any) -> dict[str, Any]:
    return {
        "messages": [{"role": "user", "content": "fix the failing test in the parser module please"}],
        "max_tokens": 12,
        "seed": 5,
        "tools": TOOLS,
        **extra,
    }


async def _post(http: aiohttp.ClientSession, url: str, body: Any) -> tuple[int, Any]:
    async with http.post(url + "/v1/chat/completions", json=body) as r:
        return r.status, json.loads(await r.text())


async def _sse(http: aiohttp.ClientSession, url: str, body: Any) -> list[Any]:
    out: list[Any] = []
    async with http.post(url + "/v1/chat/completions", json={**body, "stream": True}) as r:
        assert r.status == 200
        async for line in r.content:
            s = line.decode().strip()
            if s.startswith("data: "):
                out.append(s[6:] if s[6:] == "[DONE]" else json.loads(s[6:]))
    return out


@pytest.mark.parametrize(
    ("choice", "name"),
    [
        ({"type": "function", "function": {"name": "code_execution"}}, "code_execution"),
        ("required", "file_op"),
    ],
)
async def test_forced_tool_call_non_stream(
    replica: RunningReplica, http: aiohttp.ClientSession, choice: Any, name: str
) -> None:
    status, text_out = await _post(http, replica.url, _body())  # no tool_choice: "auto" -> text
    assert status == 200
    assert text_out["choices"][0]["finish_reason"] == "length"
    assert text_out["choices"][0]["message"]["tool_calls"] is None
    status, out = await _post(http, replica.url, _body(tool_choice=choice))
    assert status == 200, out
    ch = out["choices"][0]
    assert ch["finish_reason"] == "tool_calls"
    msg = ch["message"]
    assert msg["content"] is None
    [call] = msg["tool_calls"]
    assert call["type"] == "function"
    assert call["function"]["name"] == name
    assert call["id"].startswith("call_")
    assert len(call["id"]) == 29
    args = call["function"]["arguments"]
    assert args.startswith(ARGS_PREFIX)
    assert args.endswith(ARGS_SUFFIX)
    # The arguments hold exactly the generated tokens, the same ids the text answer had.
    assert json.loads(args)["input"] == text_out["choices"][0]["message"]["content"]
    words = json.loads(args)["input"]
    assert len(tokenizer.encode(words)) == 12
    # Token accounting as for text.
    assert out["usage"]["completion_tokens"] == text_out["usage"]["completion_tokens"] == 12
    assert out["usage"]["prompt_tokens"] == text_out["usage"]["prompt_tokens"]
    # Deterministic: the same request gets the same call id and arguments.
    _s, again = await _post(http, replica.url, _body(tool_choice=choice))
    assert again["choices"][0]["message"]["tool_calls"] == msg["tool_calls"]


async def test_forced_tool_call_stream(replica: RunningReplica, http: aiohttp.ClientSession) -> None:
    choice = {"type": "function", "function": {"name": "file_op"}}
    body = _body(tool_choice=choice, max_tokens=40, stream_options={"include_usage": True})
    events = await _sse(http, replica.url, body)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    deltas = [
        c["choices"][0]["delta"]["tool_calls"]
        for c in chunks
        if c["choices"] and "tool_calls" in c["choices"][0]["delta"]
    ]
    assert len(deltas) >= 2
    head = deltas[0][0]
    assert head["index"] == 0
    assert head["type"] == "function"
    assert head["function"] == {"name": "file_op", "arguments": ""}
    assert head["id"] == tool_call_id(5, "file_op")
    assert all("id" not in d[0] and "name" not in d[0]["function"] and d[0]["index"] == 0 for d in deltas[1:])
    args = "".join(d[0]["function"]["arguments"] for d in deltas)
    assert len(tokenizer.encode(json.loads(args)["input"])) == 40
    # No content chunks beyond the role chunk.
    assert not any(c["choices"][0]["delta"].get("content") for c in chunks if c["choices"])
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert finishes[-1] == "tool_calls"
    assert finishes.count("tool_calls") == 1
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["completion_tokens"] == 40
    # Streamed and unary answers agree.
    _s, unary = await _post(http, replica.url, {k: v for k, v in body.items() if k != "stream_options"})
    [call] = unary["choices"][0]["message"]["tool_calls"]
    assert call["function"]["arguments"] == args
    assert call["id"] == head["id"]


async def test_none_and_auto_answer_text(replica: RunningReplica, http: aiohttp.ClientSession) -> None:
    for choice in ("none", "auto"):
        events = await _sse(http, replica.url, _body(tool_choice=choice))
        chunks = [c for c in events[:-1] if c["choices"]]
        assert not any("tool_calls" in c["choices"][0]["delta"] for c in chunks)
        assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
        assert chunks[-1]["choices"][0]["finish_reason"] == "length"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"tool_choice": {"type": "function", "function": {"name": "web_api"}}}, "Tool 'web_api' not found"),
        (
            {"tools": None, "tool_choice": "required"},
            "Tools cannot be empty if tool choice is set to required",
        ),
        (
            {"tools": [], "tool_choice": {"type": "function", "function": {"name": "x"}}},
            "Tools cannot be empty if tool choice is set to a specific tool",
        ),
        ({"tool_choice": "sometimes"}, "tool_choice must be one of"),
        ({"tool_choice": {"type": "function", "function": {}}}, "tool_choice.function.name"),
        ({"tools": {"name": "x"}}, "field 'tools' must be a list"),
        ({"tools": [{"type": "function"}]}, "tools[0].function must be an object"),
        ({"tools": [{"type": "function", "function": {"name": ""}}]}, "tools[0].function.name"),
        ({"tools": [{"type": "retrieval", "function": {"name": "x"}}]}, "tools[0].type"),
        ({"tools": [{"function": {"name": "x", "parameters": "{}"}}]}, "tools[0].function.parameters"),
    ],
)
async def test_bad_tool_fields_are_400(
    replica: RunningReplica, http: aiohttp.ClientSession, extra: dict[str, Any], message: str
) -> None:
    for stream in (False, True):
        status, out = await _post(http, replica.url, {**_body(**extra), "stream": stream})
        assert status == 400
        assert out["object"] == "error"
        assert out["code"] == 400
        assert out["type"] == "BadRequestError"
        assert message in out["message"]


async def test_tool_history_messages_and_generate_unaffected(
    replica: RunningReplica, http: aiohttp.ClientSession
) -> None:
    """A follow-up turn with the assistant's tool call and a tool result is accepted; /generate
    ignores tool fields (it has none in SGLang) and answers as before."""
    choice = {"type": "function", "function": {"name": "file_op"}}
    _s, first = await _post(http, replica.url, _body(tool_choice=choice))
    call = first["choices"][0]["message"]["tool_calls"][0]
    follow = _body(tool_choice="none")
    follow["messages"] = [
        *follow["messages"],
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": call["id"], "content": " w10 w11 w12"},
    ]
    status, out = await _post(http, replica.url, follow)
    assert status == 200
    assert out["choices"][0]["finish_reason"] == "length"
    gen = {
        "text": "hello world",
        "sampling_params": {"max_new_tokens": 3},
        "tools": TOOLS,
        "tool_choice": "required",
    }
    async with http.post(replica.url + "/generate", json=gen) as r:
        assert r.status == 200
        native = await r.json()
    assert native["meta_info"]["finish_reason"] == {"type": "length", "length": 3}
    assert "tool_calls" not in native
    comp = {"prompt": "hello world", "max_tokens": 3, "tools": TOOLS, "tool_choice": "required"}
    async with http.post(replica.url + "/v1/completions", json=comp) as r:
        assert r.status == 200
        text = await r.json()
    assert text["choices"][0]["finish_reason"] == "length"
    assert text["choices"][0]["text"]
