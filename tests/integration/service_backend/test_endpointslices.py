"""EndpointSliceDiscovery against kmock (an in-memory Kubernetes API server on loopback)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import kmock
import pytest
from kubernetes import client as k8s

from saga.scheduler.api import ReplicaAdded, ReplicaRemoved
from saga.service.backend.api import PoolSettings, ReplicaEvent
from saga.service.backend.discovery import EndpointSliceDiscovery, parse_selector, replicas_from_slices
from saga.service.backend.pool import ReplicaPool

pytestmark = pytest.mark.integration
RES = "discovery.k8s.io/v1/endpointslices"


def slice_(
    name: str, port: int, endpoints: list[dict[str, Any]], labels: dict[str, str] | None = None
) -> dict[str, Any]:
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": "llm", "labels": labels or {"app": "sglang"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
        "endpoints": endpoints,
    }


def ep(addr: str, pod: str | None, ready: bool | None = True) -> dict[str, Any]:
    out: dict[str, Any] = {"addresses": [addr], "conditions": {} if ready is None else {"ready": ready}}
    if pod:
        out["targetRef"] = {"kind": "Pod", "name": pod, "namespace": "llm"}
    return out


def api_client(server: Any) -> k8s.ApiClient:
    cfg = k8s.Configuration()
    cfg.host = str(server.url).rstrip("/")
    return k8s.ApiClient(cfg)


async def until(pred: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not pred():
            await asyncio.sleep(0.01)


@pytest.fixture
async def k8s_api() -> Any:
    async with kmock.KubernetesEmulator() as server, kmock.Server(server):
        server.resources[RES] = kmock.ResourceInfo(kind="EndpointSlice", namespaced=True)
        yield server


async def test_lists_ready_endpoints_by_selector(k8s_api: Any) -> None:
    k8s_api.objects[RES, "llm", "s1"] = slice_(
        "s1",
        30000,
        [ep("10.0.0.1", "sglang-0"), ep("10.0.0.2", "sglang-1", ready=False), ep("10.0.0.3", None, None)],
    )
    k8s_api.objects[RES, "llm", "other"] = slice_("other", 8080, [ep("10.9.9.9", "x")], labels={"app": "web"})
    disc = EndpointSliceDiscovery("llm", "app=sglang", port_name="http", api_client=api_client(k8s_api))
    try:
        got = await disc.discover()
        assert [(r.replica_id, r.base_url) for r in got] == [
            ("10.0.0.3", "http://10.0.0.3:30000"),
            ("sglang-0", "http://10.0.0.1:30000"),
        ]
    finally:
        await disc.close()


async def test_pool_follows_endpointslices(k8s_api: Any, fake_factory: Any) -> None:
    a, b = await fake_factory(), await fake_factory()
    port_a, port_b = (int(x.url.rsplit(":", 1)[1]) for x in (a, b))
    k8s_api.objects[RES, "llm", "sa"] = slice_("sa", port_a, [ep("127.0.0.1", "pod-a")])
    k8s_api.objects[RES, "llm", "sb"] = slice_("sb", port_b, [ep("127.0.0.1", "pod-b")])
    events: list[ReplicaEvent] = []
    disc = EndpointSliceDiscovery("llm", "app=sglang", api_client=api_client(k8s_api))
    settings = PoolSettings(health_interval_s=0.05, load_interval_s=0.05, discovery_interval_s=0.05)
    pool = ReplicaPool(disc, events.append, settings=settings)
    await pool.start()
    try:
        await pool.wait_announced(["pod-a", "pod-b"], timeout_s=5)
        assert {e.replica_id for e in events if isinstance(e, ReplicaAdded)} == {"pod-a", "pod-b"}
        del k8s_api.objects[RES, "llm", "sb"]  # the pod's slice disappears (scaled down)
        await until(lambda: ReplicaRemoved("pod-b") in events)
        assert pool.healthy_ids() == ["pod-a"]
    finally:
        await pool.stop()


def test_slice_parsing_edge_cases() -> None:
    assert parse_selector("app=sglang, tier!=cpu,gpu,!legacy") == [
        ("app", "=", "sglang"),
        ("tier", "!=", "cpu"),
        ("gpu", "exists", None),
        ("legacy", "absent", None),
    ]
    with pytest.raises(ValueError, match="set-based"):
        parse_selector("env in (a,b)")
    v6 = slice_(
        "v6", 80, [ep("fd00::1", "p6"), {"addresses": ["10.0.0.5"], "conditions": {"terminating": True}}]
    )
    two_ports = slice_("two", 80, [ep("10.0.0.7", "p7")])
    two_ports["ports"].append({"name": "http", "port": 81})
    got = replicas_from_slices([v6, two_ports, "junk", {"ports": None}], port_name="http", scheme="http")
    assert [(r.replica_id, r.base_url) for r in got] == [("p6", "http://[fd00::1]:80")]
    kv = slice_("kv", 30000, [ep("10.0.0.9", "p9")])
    kv["ports"] += [{"name": "kv-events", "port": 5557}, {"port": 1}]  # an unnamed port is skipped
    (p9,) = replicas_from_slices([kv], port_name="http", scheme="http")
    assert (p9.base_url, p9.named_ports) == ("http://10.0.0.9:30000", (("http", 30000), ("kv-events", 5557)))
    with pytest.raises(ValueError, match="namespace"):
        EndpointSliceDiscovery("", "app=x")
