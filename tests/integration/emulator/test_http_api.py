"""Every emulator endpoint over real HTTP on loopback: happy path and bad input (400, never 500)."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from saga.emulator.server import RunningReplica

pytestmark = pytest.mark.integration


async def post(http: aiohttp.ClientSession, url: str, body: Any) -> tuple[int, Any]:
    async with http.post(url, json=body) as r:
        text = await r.text()
        try:
            return r.status, json.loads(text)
        except ValueError:
            return r.status, text


async def sse(http: aiohttp.ClientSession, url: str, body: Any) -> list[Any]:
    events: list[Any] = []
    async with http.post(url, json=body) as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/event-stream")
        async for line in r.content:
            s = line.decode().strip()
            if s.startswith("data: "):
                payload = s[6:]
                events.append(payload if payload == "[DONE]" else json.loads(payload))
    return events


async def test_generate_non_stream_and_cache_hit(
    replica: RunningReplica, http: aiohttp.ClientSession
) -> None:
    body = {
        "text": ("the quick brown fox jumps over the lazy dog " * 4).strip(),
        "sampling_params": {"max_new_tokens": 6},
    }
    status, out = await post(http, replica.url + "/generate", body)
    assert status == 200
    meta = out["meta_info"]
    assert meta["prompt_tokens"] == 36
    assert meta["completion_tokens"] == len(out["output_ids"]) == 6
    assert meta["finish_reason"] == {"type": "length", "length": 6}
    assert meta["cached_tokens"] == 0
    status, again = await post(http, replica.url + "/generate", body)
    assert again["meta_info"]["cached_tokens"] == 32  # 9 pages of 4, minus the always-computed last token
    assert again["output_ids"] == out["output_ids"]  # deterministic per prompt


async def test_generate_stream_input_ids_and_seed(
    replica: RunningReplica, http: aiohttp.ClientSession
) -> None:
    body = {
        "input_ids": list(range(50)),
        "sampling_params": {"max_new_tokens": 40, "sampling_seed": 7},
        "stream": True,
    }
    events = await sse(http, replica.url + "/generate", body)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert len(chunks) >= 2
    assert chunks[-1]["meta_info"]["finish_reason"]["type"] == "length"
    counts = [c["meta_info"]["completion_tokens"] for c in chunks]
    assert counts == sorted(counts)
    assert counts[-1] == 40
    assert chunks[-1]["output_ids"][: len(chunks[0]["output_ids"])] == chunks[0]["output_ids"]
    _status, unary = await post(http, replica.url + "/generate", {**body, "stream": False, "rid": "r1"})
    assert unary["output_ids"] == chunks[-1]["output_ids"]
    assert unary["meta_info"]["id"] == "r1"


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({}, "Either text or input_ids"),
        ({"text": "a", "input_ids": [1]}, "Either text or input_ids"),
        ({"input_ids": "nope"}, "input_ids"),
        ({"text": "a", "sampling_params": {"max_new_tokens": "x"}}, "max_new_tokens"),
        ({"text": "a", "stream": "yes"}, "stream"),
        ([1, 2], "JSON object"),
    ],
)
async def test_generate_bad_fields(
    replica: RunningReplica, http: aiohttp.ClientSession, body: Any, fragment: str
) -> None:
    status, out = await post(http, replica.url + "/generate", body)
    assert status == 400
    assert out["object"] == "error"
    assert out["code"] == 400
    assert fragment in out["message"]


async def test_malformed_json_and_engine_errors(replica: RunningReplica, http: aiohttp.ClientSession) -> None:
    async with http.post(replica.url + "/generate", data=b"{not json") as r:
        assert r.status == 400
        assert "malformed JSON" in (await r.json())["message"]
    for stream in (False, True):
        status, out = await post(http, replica.url + "/generate", {"input_ids": [1] * 2048, "stream": stream})
        assert status == 400
        assert "context length" in out["error"]["message"]
    # prompt and output fit the context, but SGLang's scheduler refuses max_req_input_len tokens
    body = {"input_ids": [1] * 2042, "sampling_params": {"max_new_tokens": 1}}
    status, out = await post(http, replica.url + "/generate", body)
    assert status == 400
    assert "maximum allowed length (2042 tokens)" in out["error"]["message"]
    body = {"input_ids": [1] * 2041, "sampling_params": {"max_new_tokens": 1}}
    assert (await post(http, replica.url + "/generate", body))[0] == 200
    # a legacy session (session_params.id) must be open; a top-level session_id begins on use
    status, out = await post(
        http, replica.url + "/generate", {"text": "hi", "session_params": {"id": "ghost"}}
    )
    assert status == 400
    assert "ghost" in out["error"]["message"]
    status, out = await post(http, replica.url + "/generate", {"text": "hi", "session_id": "ghost"})
    assert status == 200
    both = {"text": "hi", "session_id": "ghost", "session_params": {"id": "ghost"}}
    status, out = await post(http, replica.url + "/generate", both)
    assert status == 400
    assert "cannot both be set" in out["message"]


async def test_openai_completions_and_chat(replica: RunningReplica, http: aiohttp.ClientSession) -> None:
    status, out = await post(
        http, replica.url + "/v1/completions", {"model": "m", "prompt": "hello there", "max_tokens": 5}
    )
    assert status == 200
    assert out["object"] == "text_completion"
    assert out["usage"]["completion_tokens"] == 5
    assert out["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
    msgs = [{"role": "system", "content": "you are terse " * 10}, {"role": "user", "content": "hi"}]
    status, out = await post(http, replica.url + "/v1/chat/completions", {"messages": msgs, "max_tokens": 3})
    assert status == 200
    assert out["choices"][0]["message"]["role"] == "assistant"
    assert out["choices"][0]["finish_reason"] == "length"
    events = await sse(
        http,
        replica.url + "/v1/chat/completions",
        {"messages": msgs, "max_tokens": 8, "stream": True, "stream_options": {"include_usage": True}},
    )
    assert events[-1] == "[DONE]"
    assert events[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(e["choices"][0]["delta"].get("content", "") for e in events[:-1] if e["choices"])
    assert len(text.split()) == 8
    usage = events[-2]["usage"]
    assert usage["completion_tokens"] == 8
    assert usage["prompt_tokens_details"]["cached_tokens"] > 0  # same system prompt as before
    events = await sse(
        http, replica.url + "/v1/completions", {"prompt": [1, 2, 3], "max_tokens": 4, "stream": True}
    )
    assert events[-2]["choices"][0]["finish_reason"] == "length"


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/chat/completions", {"messages": []}),
        ("/v1/chat/completions", {"messages": [{"content": "no role"}]}),
        ("/v1/completions", {}),
        ("/v1/completions", {"prompt": "x", "max_tokens": -1}),
        ("/v1/completions", {"prompt": "x " * 3000}),
    ],
)
async def test_openai_bad_input(
    replica: RunningReplica, http: aiohttp.ClientSession, path: str, body: Any
) -> None:
    status, out = await post(http, replica.url + path, body)
    assert status == 400
    assert out["object"] == "error"
    assert out["code"] == 400


async def test_info_health_load_and_metrics(replica: RunningReplica, http: aiohttp.ClientSession) -> None:
    for path in ("/health", "/health_generate", "/ready"):
        async with http.get(replica.url + path) as r:
            assert r.status == 200, path
    for path in ("/server_info", "/get_server_info"):
        async with http.get(replica.url + path) as r:
            info = await r.json()
            assert info["max_total_num_tokens"] == 50_000
            assert info["max_req_input_len"] == 2042  # min(2048 - 1, 50_000 - 1) - 5, as SGLang
            assert info["page_size"] == 4
            assert (info["dp_size"], info["enable_dp_attention"]) == (1, False)
    for path in ("/model_info", "/get_model_info"):
        async with http.get(replica.url + path) as r:
            assert (await r.json())["is_generation"] is True
    await post(http, replica.url + "/generate", {"text": "warm up the cache " * 5})
    async with http.get(replica.url + "/v1/loads") as r:
        load = (await r.json())["loads"][0]
    assert load["max_total_num_tokens"] == 50_000
    assert load["num_running_reqs"] == 0
    async with http.get(replica.url + "/get_load") as r:
        assert (await r.json())[0]["num_reqs"] == 0
    async with http.get(replica.url + "/metrics") as r:
        text = await r.text()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for name in (
        "sglang:num_running_reqs",
        "sglang:num_queue_reqs",
        "sglang:token_usage",
        "sglang:cache_hit_rate",
        "sglang:max_total_num_tokens",
        "sglang:evicted_tokens",
        "sglang:time_to_first_token_seconds",
        "sglang:e2e_request_latency_seconds",
    ):
        assert name in families, name
    ttft = {s.name: s.value for s in families["sglang:time_to_first_token_seconds"].samples}
    assert ttft["sglang:time_to_first_token_seconds_count"] >= 2  # health_generate + generate


async def test_sessions_flush_and_abort(replica: RunningReplica, http: aiohttp.ClientSession) -> None:
    status, sid = await post(
        http, replica.url + "/open_session", {"capacity_of_str_len": 1000, "session_id": "s1"}
    )
    assert (status, sid) == (200, "s1")
    status, _ = await post(
        http, replica.url + "/open_session", {"capacity_of_str_len": 1000, "session_id": "s1"}
    )
    assert status == 400
    status, _ = await post(http, replica.url + "/open_session", {})
    assert status == 400
    status, _ = await post(http, replica.url + "/generate", {"text": "session turn one", "session_id": "s1"})
    assert status == 200
    status, _ = await post(http, replica.url + "/close_session", {"session_id": "s1"})
    assert status == 200
    # closing it again (or an unknown session) is answered 200, as SGLang does: its scheduler
    # only logs "session id ... does not exist"
    status, _ = await post(http, replica.url + "/close_session", {"session_id": "s1"})
    assert status == 200
    assert not replica.runtime.model.has_session("s1")
    status, _ = await post(http, replica.url + "/close_session", {})
    assert status == 400
    async with http.post(replica.url + "/flush_cache") as r:
        assert r.status == 200
    assert replica.runtime.model.load().cached_tokens_in_pool == 0
    status, _ = await post(http, replica.url + "/abort_request", {"rid": "unknown"})
    assert status == 200
    status, _ = await post(http, replica.url + "/abort_request", {})
    assert status == 400


async def test_abort_running_request_over_http(replica: RunningReplica, http: aiohttp.ClientSession) -> None:
    import asyncio

    async def long_call() -> tuple[int, Any]:
        return await post(
            http,
            replica.url + "/generate",
            {"text": "go", "rid": "long", "sampling_params": {"max_new_tokens": 100_0}},
        )

    task = asyncio.create_task(long_call())
    for _ in range(200):
        if replica.runtime.model.load().num_running:
            break
        await asyncio.sleep(0.01)
    status, _ = await post(http, replica.url + "/abort_request", {"rid": "long"})
    assert status == 200
    status, out = await task
    assert status == 200
    assert out["meta_info"]["finish_reason"]["type"] == "abort"
    assert out["meta_info"]["completion_tokens"] < 1000


async def test_fault_knobs(replica: RunningReplica, http: aiohttp.ClientSession) -> None:
    status, _ = await post(http, replica.url + "/admin/faults", {"healthy": False})
    assert status == 200
    async with http.get(replica.url + "/health") as r:
        assert r.status == 503
    status, _ = await post(http, replica.url + "/admin/faults", {"healthy": True, "failure_rate": 1.0})
    status, _ = await post(http, replica.url + "/generate", {"text": "x"})
    assert status == 500
    status, _ = await post(http, replica.url + "/admin/faults", {"failure_rate": 2})
    assert status == 400
    status, _out = await post(http, replica.url + "/admin/faults", {"bogus": 1})
    assert status == 400
    await post(
        http, replica.url + "/admin/faults", {"failure_rate": 0.0, "crash_after_requests": 2}
    )  # counted since start: 1 so far
    status, _ = await post(http, replica.url + "/generate", {"text": "last one"})
    assert status == 200
    with pytest.raises(aiohttp.ClientError):
        await post(http, replica.url + "/generate", {"text": "crash"})
    assert replica.runtime.crashed
