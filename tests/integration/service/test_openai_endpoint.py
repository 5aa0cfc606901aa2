"""The OpenAI-compatible endpoint driven by the official ``openai`` package."""

from __future__ import annotations

import aiohttp
import openai
import pytest
from prometheus_client import CollectorRegistry

from saga.service.app import Service
from saga.service.config import load_text
from saga.service.core_types import LiveSession

from .conftest import Stack, config_text
from .fake_replica import Knobs, start_fake

pytestmark = pytest.mark.integration


def _client(stack: Stack, key: str = "sk-beta-1234567", **headers: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=stack.http_base, api_key=key, default_headers=headers or None, max_retries=0
    )


async def test_chat_and_completions_streaming_and_not(stack: Stack) -> None:
    c = _client(stack, "sk-alpha-123456", **{"x-session-id": "chat-1"})
    r = await c.chat.completions.create(
        model="default", messages=[{"role": "user", "content": "hello " * 30}], max_tokens=8
    )
    assert r.choices[0].message.content
    assert r.usage is not None
    assert r.usage.completion_tokens > 0
    stream = await c.chat.completions.create(
        model="default",
        messages=[{"role": "user", "content": "hello " * 30}, {"role": "assistant", "content": "x"}],
        max_tokens=8,
        stream=True,
    )
    parts = [ch async for ch in stream]
    assert any(p.choices and p.choices[0].delta.content for p in parts)
    assert all(p.usage is None for p in parts)  # not asked for: the usage chunk is dropped
    comp = await c.completions.create(model="default", prompt="once upon a time", max_tokens=6)
    assert comp.choices[0].text
    s2 = await c.completions.create(
        model="default", prompt="once upon", max_tokens=6, stream=True, stream_options={"include_usage": True}
    )
    parts2 = [p async for p in s2]
    assert parts2[-1].usage is not None
    assert stack.service.core is not None
    session = stack.service.core.sessions["chat-1"]
    assert session.tenant == "alpha"
    assert session.calls == 4
    models = await c.models.list()
    assert [m.id for m in models.data] == ["default"]
    # Routing-key aliases name the same kind of session
    c2 = _client(stack, **{"x-smg-routing-key": "smg-7"})
    await c2.completions.create(model="default", prompt="p", max_tokens=2)
    c3 = _client(stack, **{"X-Dynamo-Session-ID": "dyn-7"})
    await c3.completions.create(model="default", prompt="p", max_tokens=2)
    assert {"smg-7", "dyn-7"} <= set(stack.service.core.sessions)


async def test_errors_use_openai_shape(stack: Stack) -> None:
    c = _client(stack)
    with pytest.raises(openai.BadRequestError) as ei:
        await c.chat.completions.create(model="default", messages=[], max_tokens=4)
    assert isinstance(ei.value.body, dict)
    assert ei.value.body["type"] == "invalid_request_error"
    with pytest.raises(openai.BadRequestError):
        await c.chat.completions.create(
            model="default", messages=[{"role": "user", "content": "x" * 200_000}], max_tokens=4
        )
    with pytest.raises(openai.BadRequestError):
        await c.completions.create(model="default", prompt="x", max_tokens=10**9)
    with pytest.raises(openai.AuthenticationError):
        await _client(stack, "sk-wrong-000000").completions.create(model="default", prompt="x", max_tokens=2)
    a = _client(stack, "sk-alpha-123456", **{"x-session-id": "owned-by-alpha"})
    await a.completions.create(model="default", prompt="x", max_tokens=2)
    with pytest.raises(openai.PermissionDeniedError):
        await _client(stack, "sk-beta-1234567", **{"x-session-id": "owned-by-alpha"}).completions.create(
            model="default", prompt="x", max_tokens=2
        )
    async with aiohttp.ClientSession() as http:
        r = await http.post(f"{stack.http_base}/chat/completions", data=b"{not json")
        assert r.status == 400
        body = await r.json()
        assert body["error"]["type"] == "invalid_request_error"
        r = await http.post(f"{stack.http_base}/completions", json=[1, 2])
        assert r.status == 400


def current_tool(s: LiveSession) -> str | None:
    """``s.current_tool`` read in a call, so that mypy keeps no narrowing of it across awaits."""
    return s.current_tool


async def test_tool_gap_inferred_from_tool_calls() -> None:
    knobs = Knobs(mode="tool_calls")
    runner, url = await start_fake(knobs)
    svc = Service(load_text(config_text([f"fake={url}"])), registry=CollectorRegistry())
    await svc.start()
    try:
        await svc.wait_replicas(1)
        c = openai.AsyncOpenAI(
            base_url=f"http://127.0.0.1:{svc.http_port}/v1",
            api_key="sk-alpha-123456",
            default_headers={"x-session-id": "agent-1"},
            max_retries=0,
        )
        r = await c.chat.completions.create(model="m", messages=[{"role": "user", "content": "fix it"}])
        assert r.choices[0].finish_reason == "tool_calls"
        assert svc.core is not None
        s = svc.core.sessions["agent-1"]
        assert s.current_tool == "run_tests"  # the gap is open
        knobs.mode = "ok"
        await c.chat.completions.create(model="m", messages=[{"role": "user", "content": "fix it"}])
        assert current_tool(s) is None  # the next request closed it
        assert knobs.requests[-1]["rid"].startswith("c-")  # engine call id forwarded as rid
    finally:
        await svc.stop()
        await runner.cleanup()
