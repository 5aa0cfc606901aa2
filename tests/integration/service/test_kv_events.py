"""KV events end to end: emulated replicas publish SGLang's ZMQ format on loopback, running
services subscribe, and their engines see exactly what each replica caches, including the
blocks another scheduler process dispatched there; replicas found through EndpointSlices
(kmock) are subscribed at their address with ``discovered_port`` and unsubscribed when they go."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import kmock
import pytest
import zmq.asyncio
from kubernetes import client as k8s
from prometheus_client import CollectorRegistry

from saga.client.aio import AsyncSagaClient
from saga.emulator.core import BlockStored, ReplicaConfig
from saga.emulator.kv_publisher import KvEventPublisher, to_wire
from saga.emulator.server import RunningReplica, start_replica
from saga.kv_events import KvEventsConfig, encode_batch, seq_bytes
from saga.scheduler.api import ReplicaCache
from saga.scheduler.engine import Engine
from saga.service.app import Service
from saga.service.backend.discovery import EndpointSliceDiscovery
from saga.service.config import load_text
from saga.service.kv_events import KvEventSubscriber
from saga.service.kv_view import ReplicaKvView
from saga.service.metrics import ServiceMetrics
from saga.service.tokens import ids_prompt

from .conftest import READY_S, TIME_SCALE, config_text, eventually, prompt_ids

pytestmark = pytest.mark.integration

KV = KvEventsConfig(publisher="zmq", endpoint="tcp://127.0.0.1:*", replay_endpoint="tcp://127.0.0.1:*")
_fresh = itertools.count(1)


def cached_tokens(svc: Service, replica: str, ids: list[int]) -> int:
    assert isinstance(svc.engine, Engine)
    r = svc.engine.replicas.get(replica)
    if r is None or not r.exact_cache:
        return 0
    p = ids_prompt(ids, block_size=16, max_blocks=4096)
    return r.cached_prefix_tokens(p.block_hashes, p.block_size)


async def start_service(replicas: list[RunningReplica]) -> Service:
    urls = [f"r{i}={r.url}" for i, r in enumerate(replicas)]
    eps = "\n".join(
        f'        r{i}: "{r.kv_publisher.bound_endpoint}"' for i, r in enumerate(replicas) if r.kv_publisher
    )
    anchor = "    connect_timeout_s: 0.5\n"
    text = config_text(urls).replace(anchor, anchor + f"    kv_events:\n      endpoints:\n{eps}\n")
    cfg = load_text(text)
    assert cfg.spec.replicas.kv_events.endpoints
    svc = Service(cfg, registry=CollectorRegistry())
    await svc.start()
    await svc.wait_replicas(len(replicas), timeout_s=READY_S)
    return svc


async def subscribed(svc: Service, replicas: list[RunningReplica]) -> None:
    """Wait until the service's subscribers receive every replica's events (a SUB socket misses
    what is published before its subscription is in place): one-off requests with fresh
    prompts straight to each replica until the engine's view of it is exact."""
    assert isinstance(svc.engine, Engine)
    engine = svc.engine
    deadline = time.monotonic() + READY_S
    async with aiohttp.ClientSession() as http:
        for rep in replicas:
            rid = rep.runtime.replica_id
            while (r := engine.replicas.get(rid)) is None or not r.exact_cache:
                if time.monotonic() > deadline:
                    raise AssertionError(f"the service never received KV events from {rid}")
                body = {
                    "input_ids": prompt_ids(next(_fresh) + 10_000, 40),
                    "sampling_params": {"max_new_tokens": 1},
                }
                async with http.post(f"{rep.url}/generate", json=body) as resp:
                    assert resp.status == 200
                await asyncio.sleep(0.01)


@pytest.fixture
async def replicas() -> AsyncIterator[list[RunningReplica]]:
    reps = [
        await start_replica(
            ReplicaConfig(enable_session_radix_cache=True),
            replica_id=f"r{i}",
            time_scale=TIME_SCALE,
            kv_events=KV,
            rank=i,
        )
        for i in range(2)
    ]
    yield reps
    for r in reps:
        await r.runner.cleanup()
        if r.kv_publisher is not None:
            await r.kv_publisher.close()


async def test_engine_sees_the_replicas_stored_blocks(replicas: list[RunningReplica]) -> None:
    svc = await start_service(replicas)
    try:
        async with AsyncSagaClient(f"127.0.0.1:{svc.grpc_port}", timeout_s=30) as c:
            await subscribed(svc, replicas)
            ids = prompt_ids(1)
            async with c.session(agent="coder") as s:
                out = await s.generate(ids, max_new_tokens=40)
                # The prompt's blocks, then (at finish) the output's, reach this engine's view.
                await eventually(lambda: cached_tokens(svc, out.replica_id, ids) == 192, "prompt blocks")
                nxt = ids + list(out.output_ids) + prompt_ids(2, 40)
                await eventually(lambda: cached_tokens(svc, out.replica_id, nxt) >= 224, "output blocks")
                other = "r1" if out.replica_id == "r0" else "r0"
                assert cached_tokens(svc, other, ids) == 0
                out2 = await s.generate(nxt, max_new_tokens=8)
                assert out2.replica_id == out.replica_id
                assert out2.usage.cached_tokens >= 224
        applied = svc.registry.get_sample_value("saga_kv_events_total", {"outcome": "applied"})
        assert applied is not None
        assert applied > 0
        # A flush reaches the view as AllBlocksCleared.
        rep = next(r for r in replicas if r.runtime.replica_id == out.replica_id)
        await eventually(lambda: rep.runtime.model.load().num_running == 0, "replica idle")
        assert rep.runtime.flush_cache()
        await eventually(lambda: cached_tokens(svc, out.replica_id, ids) == 0, "flush seen")
    finally:
        await svc.stop()


async def test_each_process_knows_what_the_other_dispatched(replicas: list[RunningReplica]) -> None:
    a, b = await start_service(replicas), await start_service(replicas)
    try:
        async with (
            AsyncSagaClient(f"127.0.0.1:{a.grpc_port}", timeout_s=30) as ca,
            AsyncSagaClient(f"127.0.0.1:{b.grpc_port}", timeout_s=30) as cb,
        ):
            await subscribed(a, replicas)
            await subscribed(b, replicas)
            placed: dict[int, str] = {}
            for k in range(4):  # sessions dispatched by A only
                ids = prompt_ids(100 + k)
                async with ca.session(agent="coder") as s:
                    out = await s.generate(ids, max_new_tokens=16)
                placed[k] = out.replica_id

                def seen(ids: list[int] = ids, r: str = out.replica_id) -> bool:
                    return cached_tokens(b, r, ids) == 192

                await eventually(seen, f"B sees session {k}'s prompt on {out.replica_id}")
            # B places a call extending one of A's prompts on the replica holding its prefix.
            for k, rid in placed.items():
                out = await cb.generate(prompt_ids(100 + k) + prompt_ids(7, 40), max_new_tokens=4)
                assert out.replica_id == rid
                assert out.usage.cached_tokens >= 192
    finally:
        await a.stop()
        await b.stop()


async def test_a_gap_is_filled_from_the_replay_endpoint() -> None:
    pub = KvEventPublisher(KV)
    ctx = zmq.asyncio.Context()
    sent: list[ReplicaCache] = []

    def sink(e: ReplicaCache) -> bool:
        sent.append(e)
        return True

    metrics = ServiceMetrics(CollectorRegistry())
    sub = KvEventSubscriber(
        ReplicaKvView("r0", 16),
        pub.bound_endpoint,
        sink,
        metrics,
        ctx=ctx,
        replay_endpoint=pub.bound_replay_endpoint,
    )
    try:
        ids = tuple(range(48))
        pages = [BlockStored((i + 1,), i if i else None, 16, ids[i * 16 : (i + 1) * 16]) for i in range(3)]
        for p in pages:
            pub.publish([p])  # seq 0, 1, 2 (buffered for replay)
        await sub.handle([b"", seq_bytes(0), encode_batch(0.0, to_wire(pages[:1]))])
        await sub.handle([b"", seq_bytes(2), encode_batch(0.0, to_wire(pages[2:]))])  # 1 missed
        h = ids_prompt(list(ids), block_size=16, max_blocks=8).block_hashes
        assert sub.view.cached_hashes == set(h)
        assert not any(e.cleared for e in sent)
        get = metrics.registry.get_sample_value
        assert get("saga_kv_events_total", {"outcome": "replayed"}) == 1
        assert get("saga_kv_events_total", {"outcome": "gap"}) == 1
        # Beyond the buffer: the view is cleared instead.
        sub.last_seq = 2
        await sub.handle([b"", seq_bytes(20_000), encode_batch(0.0, [])])
        assert sent[-1].cleared
        assert not sub.view.cached_hashes
    finally:
        await pub.close()
        ctx.term()


RES = "discovery.k8s.io/v1/endpointslices"


def replica_slice(rep: RunningReplica) -> dict[str, Any]:
    """The EndpointSlice a ReplicaPool's Service would have for this replica's pod."""
    pod = rep.runtime.replica_id
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": f"pool-{pod}", "namespace": "llm", "labels": {"saga.dev/role": "replica"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": rep.port, "protocol": "TCP"}],
        "endpoints": [
            {
                "addresses": [rep.host],
                "conditions": {"ready": True},
                "targetRef": {"kind": "Pod", "name": pod, "namespace": "llm"},
            }
        ],
    }


@pytest.fixture
async def k8s_api() -> AsyncIterator[Any]:
    async with kmock.KubernetesEmulator() as server, kmock.Server(server):
        server.resources[RES] = kmock.ResourceInfo(kind="EndpointSlice", namespaced=True)
        yield server


async def generate_on(rep: RunningReplica, ids: list[int]) -> None:
    async with aiohttp.ClientSession() as http:
        body = {"input_ids": ids, "sampling_params": {"max_new_tokens": 1}}
        async with http.post(f"{rep.url}/generate", json=body) as resp:
            assert resp.status == 200


async def test_discovered_replicas_are_subscribed_while_discovered(k8s_api: Any) -> None:
    # Both publish like ReplicaPool pods (topic "kv-events"); r0 is also listed in endpoints.
    pub = KvEventsConfig(publisher="zmq", topic="kv-events", endpoint="tcp://127.0.0.1:*")
    reps = [
        await start_replica(
            ReplicaConfig(enable_session_radix_cache=True),
            replica_id=f"r{i}",
            time_scale=TIME_SCALE,
            kv_events=pub,
        )
        for i in range(2)
    ]
    assert reps[0].kv_publisher is not None
    assert reps[1].kv_publisher is not None
    static_ep = reps[0].kv_publisher.bound_endpoint
    port = int(reps[1].kv_publisher.bound_endpoint.rsplit(":", 1)[1])
    for rep in reps:
        k8s_api.objects[RES, "llm", f"pool-{rep.runtime.replica_id}"] = replica_slice(rep)
    text = config_text([]).replace(
        "    static:\n\n",
        "    kubernetes: {namespace: llm, label_selector: saga.dev/role=replica}\n"
        f"    kv_events: {{endpoints: {{r0: '{static_ep}'}}, discovered_port: {port}, topic: kv-events}}\n",
    )
    cfg = load_text(text)
    assert cfg.spec.replicas.kubernetes is not None
    api = k8s.Configuration()
    api.host = str(k8s_api.url).rstrip("/")
    discovery = EndpointSliceDiscovery("llm", "saga.dev/role=replica", api_client=k8s.ApiClient(api))
    svc = Service(cfg, registry=CollectorRegistry(), discovery=discovery)
    await svc.start()
    try:
        await svc.wait_replicas(2, timeout_s=READY_S)
        kv = svc.kv_events
        assert kv is not None
        assert svc.pool is not None
        # r0 keeps its configured endpoint although r1's port is open on its host too.
        assert kv.replicas["r0"].ranks[0].endpoint == static_ep
        assert kv.replicas["r1"].ranks[0].endpoint == f"tcp://127.0.0.1:{port}"
        await subscribed(svc, reps)
        ids = prompt_ids(1)
        await generate_on(reps[1], ids)
        await eventually(lambda: cached_tokens(svc, "r1", ids) == 192, "r1's blocks in r1's view")
        assert cached_tokens(svc, "r0", ids) == 0

        # r1's pod leaves discovery: its subscription ends, r0's runs on.
        r1_task, r0_task = kv.replicas["r1"].tasks[0], kv.replicas["r0"].tasks[0]
        del k8s_api.objects[RES, "llm", "pool-r1"]
        await svc.pool.refresh()
        assert "r1" not in kv.replicas
        await eventually(r1_task.done, "r1's subscriber task ended")
        assert r1_task.cancelled()
        assert kv.replicas["r0"].tasks[0] is r0_task
        assert not r0_task.done()

        # It comes back: a new subscription whose view starts empty, then fills again.
        k8s_api.objects[RES, "llm", "pool-r1"] = replica_slice(reps[1])
        await svc.pool.refresh()
        await eventually(lambda: "r1" in kv.replicas and 0 in kv.replicas["r1"].tasks, "r1 subscribed again")
        assert kv.replicas["r1"].tasks[0] is not r1_task
        await subscribed(svc, reps[1:])
        assert cached_tokens(svc, "r1", ids) == 0  # stored before the new subscription
        ids2 = prompt_ids(2)
        await generate_on(reps[1], ids2)
        await eventually(lambda: cached_tokens(svc, "r1", ids2) == 192, "r1's new blocks")
    finally:
        await svc.stop()
        for r in reps:
            await r.runner.cleanup()
            if r.kv_publisher is not None:
                await r.kv_publisher.close()
