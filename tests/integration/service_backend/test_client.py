"""SGLangClient against a fake replica over real HTTP: the happy paths and every error path."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from aiohttp import web

from saga.service.backend.api import (
    ClientSettings,
    ClientTimeouts,
    ReplicaError,
    ReplicaProtocolError,
    ReplicaUnavailable,
    StreamBroken,
)
from saga.service.backend.client import SGLangClient

pytestmark = pytest.mark.integration

FAST = ClientSettings(
    timeouts=ClientTimeouts(connect_s=1.0, first_byte_s=0.5, idle_s=0.5, total_s=2.0, probe_s=1.0)
)


async def _client(url: str, settings: ClientSettings = FAST) -> SGLangClient:
    return SGLangClient("r0", url, settings=settings)


async def collect(it: Any) -> list[Any]:
    return [x async for x in it]


async def test_generate_unary_and_stream(fake: Any) -> None:
    c = await _client(fake.url)
    try:
        out = await c.generate({"text": "hi", "sampling_params": {"max_new_tokens": 3}})
        assert out["meta_info"]["completion_tokens"] == 3
        assert fake.knobs.requests[-1]["stream"] is False
        chunks = await collect(c.generate_stream({"text": "hi"}))
        assert [ch["meta_info"]["completion_tokens"] for ch in chunks] == [1, 2, 3]
        assert chunks[-1]["meta_info"]["finish_reason"] == {"type": "stop"}
        assert fake.knobs.requests[-1]["stream"] is True
    finally:
        await c.close()


async def test_openai_passthrough(fake: Any) -> None:
    c = await _client(fake.url)
    try:
        out = await c.openai("/v1/chat/completions", {"messages": []})
        assert out["object"] == "chat.completion"
        events = await collect(c.openai_stream("/v1/completions", {"prompt": "x"}))
        assert len(events) == 3
        assert events[0].raw.startswith(b"data: {")
        assert events[0].raw.endswith(b"\n\n")
        assert events[1].json()["meta_info"]["completion_tokens"] == 2
        with pytest.raises(ValueError, match="not an OpenAI passthrough path"):
            await c.openai("/v1/embeddings", {})
    finally:
        await c.close()


async def test_engine_fields_do_not_mutate_and_follow_style(fake: Any) -> None:
    c = await _client(fake.url)
    legacy = SGLangClient("r0", fake.url, settings=ClientSettings(session_field="session_params"))
    payload = {"text": "hi", "session_params": {"offset": 3}}
    body = legacy.engine_fields(payload, rid="c1", priority=5, engine_session="s1")
    assert body["session_params"] == {"offset": 3, "id": "s1"}
    assert body["rid"] == "c1"
    assert body["priority"] == 5
    assert payload == {"text": "hi", "session_params": {"offset": 3}}
    # default: a top-level session_id (SGLang's session radix cache), never beside session_params
    assert c.engine_fields({"text": "x"}, engine_session="s1")["session_id"] == "s1"
    assert "session_params" not in c.engine_fields({"text": "x"}, engine_session="s1")
    kept = c.engine_fields(payload, engine_session="s1")
    assert "session_id" not in kept
    assert kept["session_params"] == {"offset": 3}
    await c.close()
    await legacy.close()


async def test_sessions_open_close_and_refusal(fake: Any) -> None:
    c = await _client(fake.url)
    try:
        assert await c.open_session("s1", capacity_of_str_len=1000, timeout_s=30) == "s1"
        assert fake.knobs.open_sessions == {"s1"}
        with pytest.raises(ReplicaError) as ei:
            await c.open_session("s1", capacity_of_str_len=1000)
        assert ei.value.status == 400
        assert "Failed to open" in ei.value.body
        assert not ei.value.retryable
        await c.close_session("s1")
        assert fake.knobs.open_sessions == set()
        await c.abort("rid-9")
        assert fake.knobs.requests[-1] == {"abort": "rid-9"}
    finally:
        await c.close()


async def test_loads_server_info_metrics_health(fake: Any) -> None:
    c = await _client(fake.url)
    try:
        report = await c.loads()
        assert (report.running, report.waiting, report.used_tokens, report.total_tokens) == (5, 1, 400, 2000)
        assert report.cache_hit_rate == pytest.approx(0.6)
        ev = report.to_event("r0")
        assert ev.replica_id == "r0"
        assert ev.kv_total_tokens == 2000
        info = await c.server_info()
        assert (info.kv_total_tokens, info.max_running_requests, info.page_size) == (2000, 64, 16)
        m = await c.metrics()
        assert m["sglang:num_running_reqs"] == 2.0
        assert m["sglang:e2e_request_latency_seconds_count"] == 4.0
        assert not any(k.endswith("_bucket") for k in m)
        assert "other_metric" not in m
        assert await c.health() is True
        fake.knobs.healthy = False
        assert await c.health(generate=True) is False
    finally:
        await c.close()


async def test_connection_refused_is_unavailable(dead_url: str) -> None:
    c = await _client(dead_url)
    try:
        with pytest.raises(ReplicaUnavailable) as ei:
            await c.generate({"text": "x"})
        assert ei.value.retryable
        with pytest.raises(ReplicaUnavailable):
            await collect(c.generate_stream({"text": "x"}))
        with pytest.raises(ReplicaUnavailable):
            await c.health()
    finally:
        await c.close()


async def test_dropped_before_any_byte_is_unavailable(fake: Any) -> None:
    fake.knobs.drop_before_headers = True
    c = await _client(fake.url)
    try:
        with pytest.raises(ReplicaUnavailable):
            await collect(c.generate_stream({"text": "x"}))
        with pytest.raises(ReplicaUnavailable):
            await c.generate({"text": "x"})
    finally:
        await c.close()


async def test_killed_mid_stream_is_stream_broken(fake: Any) -> None:
    fake.knobs.chunks, fake.knobs.cut_after = 5, 2
    c = await _client(fake.url)
    got: list[Any] = []

    async def consume() -> None:
        async for ch in c.generate_stream({"text": "x"}):
            got.append(ch)

    try:
        with pytest.raises(StreamBroken) as ei:
            await consume()
        assert len(got) == 2
        assert ei.value.chunks == 2
        assert not ei.value.retryable
    finally:
        await c.close()


async def test_cut_before_first_chunk_is_unavailable(fake: Any) -> None:
    fake.knobs.cut_after = 0
    c = await _client(fake.url)
    try:
        with pytest.raises(ReplicaUnavailable):
            await collect(c.openai_stream("/v1/chat/completions", {}))
    finally:
        await c.close()


async def test_stall_times_out_instead_of_hanging(fake: Any) -> None:
    fake.knobs.stall = True
    c = await _client(fake.url)
    try:
        with pytest.raises(ReplicaUnavailable, match="no response within"):
            await collect(c.generate_stream({"text": "x"}))
        with pytest.raises(ReplicaUnavailable, match="timed out"):
            await c.generate({"text": "x"})
    finally:
        await c.close()


async def test_error_status_carries_body(fake: Any) -> None:
    fake.knobs.status = 503
    c = await _client(fake.url)
    try:
        with pytest.raises(ReplicaError) as ei:
            await c.generate({"text": "x"})
        assert ei.value.status == 503
        assert ei.value.retryable
        assert "boom" in ei.value.body
        fake.knobs.status = 500
        with pytest.raises(ReplicaError) as ei:
            await collect(c.generate_stream({"text": "x"}))
        assert ei.value.status == 500
        assert not ei.value.retryable
    finally:
        await c.close()


async def test_garbage_is_protocol_error(fake: Any) -> None:
    fake.knobs.garbage = True
    c = await _client(fake.url)
    try:
        with pytest.raises(ReplicaProtocolError):
            await c.generate({"text": "x"})
        with pytest.raises(ReplicaProtocolError):
            await collect(c.generate_stream({"text": "x"}))
        with pytest.raises(ReplicaProtocolError):
            await c.loads()
        with pytest.raises(ReplicaProtocolError):
            await c.server_info()
        fake.knobs.metrics_body = "sglang:x{ 1 2 3\n"
        with pytest.raises(ReplicaProtocolError):
            await c.metrics()
    finally:
        await c.close()


async def test_garbage_mid_stream_is_stream_broken(fake: Any) -> None:
    fake.knobs.chunks, fake.knobs.garbage_stream_after = 4, 1
    c = await _client(fake.url)
    try:
        with pytest.raises(StreamBroken):
            await collect(c.generate_stream({"text": "x"}))
    finally:
        await c.close()


@pytest.mark.parametrize(
    "body",
    [
        {"loads": []},
        {"loads": [{"num_running_reqs": "3"}]},
        {"loads": [{"num_running_reqs": 1, "num_waiting_reqs": 0}]},
        {"loads": ["x"]},
        "str",
    ],
)
async def test_malformed_loads_are_protocol_errors(fake: Any, body: Any) -> None:
    fake.knobs.loads_body = body
    c = await _client(fake.url)
    try:
        with pytest.raises(ReplicaProtocolError):
            await c.loads()
    finally:
        await c.close()


async def test_early_close_releases_connection(fake: Any) -> None:
    fake.knobs.chunks = 50
    async with aiohttp.ClientSession() as http:
        c = SGLangClient("r0", fake.url, session=http, settings=FAST)
        for _ in range(20):  # abandoning streams must not leak connections (limit 100)
            async for _ch in c.generate_stream({"text": "x"}):
                break
        out = await c.generate({"text": "y"})
        assert out["meta_info"]["completion_tokens"] == 50


async def test_keys_sent_to_replicas_protected_by_sglang_api_keys() -> None:
    """SGLang's --api-key on every request, its --admin-api-key on /abort_request."""
    seen: dict[str, str | None] = {}

    async def record(request: web.Request) -> web.Response:
        seen[request.path] = request.headers.get("Authorization")
        if request.path == "/generate":
            return web.json_response({"text": "x", "meta_info": {"finish_reason": {"type": "stop"}}})
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/generate", record)
    app.router.add_post("/abort_request", record)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    keys = ClientSettings(api_key="user-key", admin_api_key="admin-key")
    both = SGLangClient("r0", f"http://127.0.0.1:{port}", settings=keys)
    user_only = SGLangClient("r0", f"http://127.0.0.1:{port}", settings=ClientSettings(api_key="user-key"))
    try:
        await both.generate({"text": "hi"})
        await both.abort("c1")
        assert seen == {"/generate": "Bearer user-key", "/abort_request": "Bearer admin-key"}
        await user_only.abort("c2")
        assert seen["/abort_request"] == "Bearer user-key"  # no admin key: the api key, as SGLang takes
    finally:
        await both.close()
        await user_only.close()
        await runner.cleanup()
