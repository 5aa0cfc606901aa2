"""Replicas that die or answer garbage: retries, clear stream errors, no session state lost."""

from __future__ import annotations

import openai
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from saga.client import AsyncSagaClient, SagaError, UnavailableError
from saga.service.app import Service
from saga.service.config import load_text

from .conftest import Stack, config_text
from .fake_replica import Knobs, start_fake

pytestmark = pytest.mark.integration


async def test_replica_killed_mid_run_calls_retried_elsewhere(stack: Stack) -> None:
    async with AsyncSagaClient(stack.grpc_target) as c:
        sessions = [await c.start_session(agent="swe") for _ in range(6)]
        first = {
            s.session_id: (await s.generate(f"task {i} " * 40, max_new_tokens=4)).replica_id
            for i, s in enumerate(sessions)
        }
        victim = "r0" if "r0" in first.values() else "r1"
        idx = int(victim[1:])
        await stack.replicas[idx].runner.cleanup()  # the replica process is gone
        for s in sessions:  # affinity sends some of these to the dead replica first
            out = await s.generate("next step " * 40, max_new_tokens=4)
            assert out.replica_id != victim
            assert out.usage.completion_tokens > 0
        for s in sessions:
            info = await c.get_session(s.session_id)
            assert info.calls == 2  # nothing lost: the session and its history are intact
            await s.end()


async def _fake_stack(mode: str) -> tuple[Service, web.AppRunner, Knobs]:
    knobs = Knobs(mode=mode)
    runner, url = await start_fake(knobs)
    svc = Service(load_text(config_text([f"fake={url}"])), registry=CollectorRegistry())
    await svc.start()
    await svc.wait_replicas(1)
    return svc, runner, knobs


async def test_started_stream_ends_with_clear_error() -> None:
    svc, runner, _ = await _fake_stack("cut")
    try:
        async with AsyncSagaClient(f"127.0.0.1:{svc.grpc_port}") as c, c.session(agent="swe") as s:
            got: list[object] = []

            async def drain() -> None:
                async for ch in s.stream("hello", max_new_tokens=8):
                    got.append(ch)

            with pytest.raises(UnavailableError, match="mid-stream"):
                await drain()
            assert got  # some tokens arrived before the replica failed
            info = await c.get_session(s.session_id)
            assert info.state == "llm"  # the session survives the failed call
        oa = openai.AsyncOpenAI(
            base_url=f"http://127.0.0.1:{svc.http_port}/v1", api_key="sk-alpha-123456", max_retries=0
        )
        stream = await oa.completions.create(model="m", prompt="p", max_tokens=4, stream=True)

        async def consume() -> None:
            async for _ in stream:
                pass

        with pytest.raises(openai.APIError, match="mid-stream"):
            await consume()
    finally:
        await svc.stop()
        await runner.cleanup()


async def test_garbage_from_replica_is_internal_error() -> None:
    svc, runner, knobs = await _fake_stack("garbage")
    try:
        async with AsyncSagaClient(f"127.0.0.1:{svc.grpc_port}") as c:
            with pytest.raises(SagaError, match="invalid answer") as ei:
                await c.generate("hello", max_new_tokens=4)
            assert ei.value.code == "INTERNAL"
        oa = openai.AsyncOpenAI(
            base_url=f"http://127.0.0.1:{svc.http_port}/v1", api_key="sk-alpha-123456", max_retries=0
        )
        with pytest.raises(openai.InternalServerError):
            await oa.completions.create(model="m", prompt="p", max_tokens=4)
        assert len(knobs.requests) == 2  # not retried: garbage is not a dead replica
    finally:
        await svc.stop()
        await runner.cleanup()


async def test_engine_sessions_opened_before_use_and_closed_at_end() -> None:
    import asyncio

    svc, runner, knobs = await _fake_stack("ok")
    try:
        async with AsyncSagaClient(f"127.0.0.1:{svc.grpc_port}") as c:
            async with c.session(agent="swe", session_id="kv-1") as s:
                await s.generate("step one", max_new_tokens=4)
                async with s.tool("pytest"):
                    pass
                await s.generate("step two", max_new_tokens=4)
            sent = [r.get("session_id") for r in knobs.requests]  # top-level: SGLang's radix sessions
            assert sent == ["kv-1", "kv-1"]  # every call names the engine session
            assert knobs.opened[0] == "kv-1"  # opened before the first call that names it
            async with asyncio.timeout(5):
                while len(knobs.closed) < len(knobs.opened):  # every open is closed by the end
                    await asyncio.sleep(0.01)
            assert set(knobs.closed) == {"kv-1"}
    finally:
        await svc.stop()
        await runner.cleanup()
