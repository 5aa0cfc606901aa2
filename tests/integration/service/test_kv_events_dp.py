"""KV events of a discovered replica with a replay endpoint and two attention DP ranks, end to
end: emulated ranks publish SGLang's format over ZMQ on SGLang's per-rank ports, the replica is
found through its EndpointSlice (kmock) with the ports a ReplicaPool names (kv-events,
kv-replay), and a running service reads both ranks into one view and repairs a lost batch from
the replay endpoint instead of clearing the view."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import kmock
import pytest
import zmq
from kubernetes import client as k8s
from prometheus_client import CollectorRegistry

from saga.emulator.core import ReplicaConfig
from saga.emulator.server import RunningReplica, start_replica
from saga.kv_events import KvEventsConfig
from saga.scheduler.engine import Engine
from saga.service.app import Service
from saga.service.backend.discovery import EndpointSliceDiscovery
from saga.service.config import load_text
from saga.service.tokens import ids_prompt

from .conftest import READY_S, TIME_SCALE, config_text, eventually, prompt_ids

pytestmark = pytest.mark.integration

RES = "discovery.k8s.io/v1/endpointslices"
_fresh = itertools.count(1)


def free_pair() -> int:
    """A port p with p and p + 1 free on every interface (rank 0 and rank 1 bind them)."""
    for _ in range(200):
        p = random.randint(20_000, 59_000)
        with contextlib.ExitStack() as stack:
            try:
                for q in (p, p + 1):
                    s = stack.enter_context(socket.socket())
                    s.bind(("", q))
            except OSError:
                continue
            return p
    raise RuntimeError("no two consecutive free ports")


async def start_ranks() -> tuple[list[RunningReplica], int, int]:
    """Rank 0 and rank 1 of replica ``dp`` (SGLang: ``--dp-size 2 --enable-dp-attention``
    with ``--kv-events-config`` endpoint ``tcp://*:P`` and replay endpoint ``tcp://*:R``)."""
    for _ in range(5):
        pub, replay = free_pair(), free_pair()
        if abs(pub - replay) < 2:
            continue
        kv = KvEventsConfig(
            publisher="zmq", topic="kv-events", endpoint=f"tcp://*:{pub}", replay_endpoint=f"tcp://*:{replay}"
        )
        ranks: list[RunningReplica] = []
        try:
            for rank in range(2):
                ranks.append(
                    await start_replica(
                        ReplicaConfig(enable_session_radix_cache=True),
                        replica_id=f"dp-rank{rank}",
                        time_scale=TIME_SCALE,
                        kv_events=kv,
                        rank=rank,
                        attn_dp_size=2,
                    )
                )
        except zmq.ZMQError:  # a port taken meanwhile: another pair
            await stop(ranks)
            continue
        return ranks, pub, replay
    raise RuntimeError("could not bind the ranks' ports")


async def stop(ranks: list[RunningReplica]) -> None:
    for r in ranks:
        await r.runner.cleanup()
        if r.kv_publisher is not None:
            await r.kv_publisher.close()


def pool_slice(rank0: RunningReplica, pub: int, replay: int) -> dict[str, Any]:
    """The EndpointSlice of a ReplicaPool (kvEventsReplayPort set) with one pod, ``dp``."""
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": "pool-abcde", "namespace": "llm", "labels": {"saga.dev/role": "replica"}},
        "addressType": "IPv4",
        "ports": [
            {"name": "http", "port": rank0.port, "protocol": "TCP"},
            {"name": "kv-events", "port": pub, "protocol": "TCP"},
            {"name": "kv-replay", "port": replay, "protocol": "TCP"},
        ],
        "endpoints": [
            {
                "addresses": [rank0.host],
                "conditions": {"ready": True},
                "targetRef": {"kind": "Pod", "name": "dp", "namespace": "llm"},
            }
        ],
    }


@pytest.fixture
async def k8s_api() -> AsyncIterator[Any]:
    async with kmock.KubernetesEmulator() as server, kmock.Server(server):
        server.resources[RES] = kmock.ResourceInfo(kind="EndpointSlice", namespaced=True)
        yield server


async def generate_on(http: aiohttp.ClientSession, rep: RunningReplica, ids: list[int]) -> None:
    body = {"input_ids": ids, "sampling_params": {"max_new_tokens": 1}}
    async with http.post(f"{rep.url}/generate", json=body) as resp:
        assert resp.status == 200


def cached_tokens(svc: Service, ids: list[int]) -> int:
    assert isinstance(svc.engine, Engine)
    r = svc.engine.replicas.get("dp")
    if r is None or not r.exact_cache:
        return 0
    p = ids_prompt(ids, block_size=16, max_blocks=4096)
    return r.cached_prefix_tokens(p.block_hashes, p.block_size)


async def test_discovered_dp_replica_reads_every_rank_and_replays_a_gap(k8s_api: Any) -> None:
    ranks, pub, replay = await start_ranks()
    k8s_api.objects[RES, "llm", "pool-abcde"] = pool_slice(ranks[0], pub, replay)
    text = config_text([]).replace(
        "    static:\n\n",
        "    kubernetes: {namespace: llm, label_selector: saga.dev/role=replica}\n"
        "    kv_events: {discovered_port: 5557, topic: kv-events, replay_timeout_s: 5}\n",
    )
    api = k8s.Configuration()
    api.host = str(k8s_api.url).rstrip("/")
    discovery = EndpointSliceDiscovery("llm", "saga.dev/role=replica", api_client=k8s.ApiClient(api))
    svc = Service(load_text(text), registry=CollectorRegistry(), discovery=discovery)
    await svc.start()
    try:
        await svc.wait_replicas(1, timeout_s=READY_S)
        kv = svc.kv_events
        assert kv is not None
        sub = kv.replicas["dp"]
        assert svc.pool is not None
        info = svc.pool.replicas()["dp"].info
        assert info is not None
        assert info.attn_dp_size == 2  # /server_info: dp_size 2, enable_dp_attention
        # Two ranks (from /server_info), on the slice's named ports + rank, not discovered_port.
        host = ranks[0].host
        assert [(s.rank, s.endpoint, s.replay_endpoint) for s in sub.ranks] == [
            (0, f"tcp://{host}:{pub}", f"tcp://{host}:{replay}"),
            (1, f"tcp://{host}:{pub + 1}", f"tcp://{host}:{replay + 1}"),
        ]
        async with aiohttp.ClientSession() as http:
            # A SUB socket misses what is published before its subscription is in place.
            deadline = time.monotonic() + READY_S
            while any(s.last_seq is None for s in sub.ranks):
                assert time.monotonic() < deadline, "the service never received both ranks' events"
                for rank in ranks:
                    await generate_on(http, rank, prompt_ids(next(_fresh) + 10_000, 40))
                await asyncio.sleep(0.01)

            # Each rank's blocks reach the replica's one view.
            on0, on1 = prompt_ids(1), prompt_ids(2)
            await generate_on(http, ranks[0], on0)
            await generate_on(http, ranks[1], on1)
            await eventually(lambda: cached_tokens(svc, on0) == 192, "rank 0's blocks in the view")
            await eventually(lambda: cached_tokens(svc, on1) == 192, "rank 1's blocks in the view")
            h1 = set(ids_prompt(on1, block_size=16, max_blocks=64).block_hashes)
            assert h1 <= sub.view.rank_hashes(1)
            assert not h1 & sub.view.rank_hashes(0)

            # Rank 1 loses a batch on the way (its PUB socket's high-water mark, say): the next
            # one shows the gap, the missing batch comes from rank 1's replay endpoint, and
            # nothing is cleared: every block known before stays known.
            metric = svc.registry.get_sample_value
            seq_before = sub.ranks[1].last_seq
            assert seq_before is not None
            publisher = ranks[1].kv_publisher
            assert publisher is not None
            publisher.drop_next = 1
            lost, after = prompt_ids(3), prompt_ids(4)
            await generate_on(http, ranks[1], lost)
            await eventually(lambda: publisher.drop_next == 0, "a batch dropped")
            await generate_on(http, ranks[1], after)
            await eventually(lambda: cached_tokens(svc, after) == 192, "blocks after the gap")
        assert metric("saga_kv_events_total", {"outcome": "gap"}) == 1
        replayed = metric("saga_kv_events_total", {"outcome": "replayed"})
        assert replayed is not None
        assert replayed >= 1
        assert cached_tokens(svc, lost) == 192  # stored in the dropped batch: replayed
        assert cached_tokens(svc, on1) == 192  # a cleared view would have lost these
        assert cached_tokens(svc, on0) == 192
        assert sub.ranks[1].last_seq is not None
        assert sub.ranks[1].last_seq > seq_before + 1
    finally:
        await svc.stop()
        await stop(ranks)
