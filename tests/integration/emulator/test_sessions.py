"""Sessions over HTTP: ``--enable-session-radix-cache`` on and off, and a session's cached
tokens per turn, against what SGLang 0.5.17 reported on an H100
(bench/results/gpu_probe_2026-11-24.md)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from saga.cli import build_parser
from saga.emulator.cli import config_from_args
from saga.emulator.core import ReplicaConfig
from saga.emulator.server import RunningReplica, start_replica, stop_cluster

pytestmark = pytest.mark.integration


@pytest.fixture
async def started() -> AsyncIterator[list[RunningReplica]]:
    reps: list[RunningReplica] = []
    yield reps
    await stop_cluster(reps)


async def start(reps: list[RunningReplica], **config: Any) -> str:
    rep = await start_replica(ReplicaConfig(**config), time_scale=100.0)
    reps.append(rep)
    return rep.url


async def generate(http: aiohttp.ClientSession, url: str, ids: list[int], new: int, **extra: Any) -> Any:
    body = {"input_ids": ids, "sampling_params": {"max_new_tokens": new}, **extra}
    async with http.post(url + "/generate", json=body) as r:
        assert r.status == 200, await r.text()
        return await r.json()


async def test_a_turn_caches_the_previous_prompt_and_all_its_output(
    started: list[RunningReplica], http: aiohttp.ClientSession
) -> None:
    """The H100's figures: prompt 3000, 64 output tokens, 200 new tokens per turn; turn 2
    cached 3064 of 3264, turn 3 3328 of 3528 (every output token, the last one included)."""
    url = await start(started, page_size=1, enable_session_radix_cache=True)
    prompt = [10_000 + i for i in range(3000)]
    seen = []
    for turn in range(3):
        out = await generate(http, url, prompt, 64, session_id="agent")
        meta = out["meta_info"]
        seen.append((meta["prompt_tokens"], meta["cached_tokens"], meta["completion_tokens"]))
        prompt = prompt + out["output_ids"] + [20_000 + 200 * turn + i for i in range(200)]
    assert seen == [(3000, 0, 64), (3264, 3064, 64), (3528, 3328, 64)]


@pytest.mark.parametrize("radix", [True, False])
async def test_session_radix_cache_flag(
    radix: bool, started: list[RunningReplica], http: aiohttp.ClientSession
) -> None:
    """``/server_info`` reports the flag. On: a session's prefix outlives unrelated traffic
    that fills the pool. Off (SGLang's default): the same traffic evicts it like any entry."""
    url = await start(
        started, page_size=1, kv_capacity_tokens=4000, context_length=4000, enable_session_radix_cache=radix
    )
    async with http.get(url + "/server_info") as r:
        assert (await r.json())["enable_session_radix_cache"] is radix
    agent = [10_000 + i for i in range(1000)]
    await generate(http, url, agent, 8, session_id="agent")
    for i in range(8):  # 8 x 1500 tokens through a 4000-token pool
        await generate(http, url, [20_000 + i] * 1500, 8)
    out = await generate(http, url, [*agent, 1, 2, 3], 1, session_id="agent")
    assert out["meta_info"]["cached_tokens"] == (1000 if radix else 0)


def test_the_cli_flag_defaults_off_like_sglang() -> None:
    parse = build_parser().parse_args
    assert config_from_args(parse(["emulate"])).enable_session_radix_cache is False
    on = parse(["emulate", "--enable-session-radix-cache"])
    assert config_from_args(on).enable_session_radix_cache is True
