"""A real SAGA service on loopback (free ports) in front of emulated SGLang replicas."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import pytest
from prometheus_client import CollectorRegistry

from saga.emulator.core import ReplicaConfig
from saga.emulator.server import RunningReplica, start_replica
from saga.service.app import Service
from saga.service.config import SchedulerConfig, load_text

TIME_SCALE = 200.0  # emulated GPU time runs 200x faster than the wall clock

KEYS = {"sk-alpha-123456": "alpha", "sk-beta-1234567": "beta"}
READY_S = 10.0  # how long an asynchronous effect (events, subscriptions) may take to show


async def eventually(check: Callable[[], bool], what: str, timeout_s: float = READY_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s} s: {what}")
        await asyncio.sleep(0.01)


def prompt_ids(tag: int, n: int = 200) -> list[int]:
    return [(tag * 1009 + i * 7) % 30_000 for i in range(n)]


def config_text(urls: list[str], *, anonymous: bool = True, extra_limits: str = "") -> str:
    static = "\n".join(f"      - {u}" for u in urls)
    keys = "\n".join(f"      - {{key: {k}, tenant: {t}}}" for k, t in KEYS.items())
    anon = "default" if anonymous else "null"
    return f"""\
apiVersion: saga.dev/v1alpha1
kind: SchedulerConfig
spec:
  listen: {{grpc: "127.0.0.1:0", http: "127.0.0.1:0", metrics: "127.0.0.1:0"}}
  auth:
    anonymous_tenant: {anon}
    api_keys:
{keys}
  tenants:
    - {{name: default}}
    - {{name: alpha, weight: 2}}
    - {{name: beta}}
  replicas:
    static:
{static}
    poll_interval_s: 0.05
    connect_timeout_s: 0.5
  limits:
    max_prompt_tokens: 20000
    max_new_tokens: 4096
    queue_timeout_s: 10
{extra_limits}
"""


@dataclass
class Stack:
    service: Service
    replicas: list[RunningReplica]

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.service.grpc_port}"

    @property
    def http_base(self) -> str:
        return f"http://127.0.0.1:{self.service.http_port}/v1"


async def start_stack(n: int = 2, cfg: SchedulerConfig | None = None, *, anonymous: bool = True) -> Stack:
    replicas = [
        await start_replica(
            ReplicaConfig(enable_session_radix_cache=True), replica_id=f"r{i}", time_scale=TIME_SCALE
        )
        for i in range(n)
    ]
    urls = [f"r{i}={r.url}" for i, r in enumerate(replicas)]
    cfg = cfg or load_text(config_text(urls, anonymous=anonymous))
    svc = Service(cfg, registry=CollectorRegistry())
    await svc.start()
    await svc.wait_replicas(n, timeout_s=10)
    return Stack(svc, replicas)


async def stop_stack(st: Stack) -> None:
    await st.service.stop()
    for r in st.replicas:
        await r.runner.cleanup()


@pytest.fixture
async def stack() -> AsyncIterator[Stack]:
    st = await start_stack(2)
    try:
        yield st
    finally:
        await stop_stack(st)
