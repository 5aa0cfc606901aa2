"""The systems under test and the emulated cluster, as real processes on loopback.

Cluster: one ``saga emulate --replicas 1`` process per replica (its own core budget, so the CPU
guard can tell a saturated replica), free ports, readiness = ``/health`` answering 200. A fresh
cluster is started for every system, so each one starts with cold caches.

Systems (names used on the command line and in the report):

- ``saga``: the SAGA service, embedded default (in-memory state), via
  ``saga serve --time-scale K`` (the scheduler's clock runs at the replicas' time scale).
- ``saga-redis``: the same with ``spec.state.backend: redis`` on a throw-away ``redis-server``.
- ``cache_aware``, ``round_robin``, ``manual``: the real ``sglang-router`` (PyPI, Rust) via
  ``python -m sglang_router.launch_router --worker-urls ... --policy P`` with its defaults;
  ``manual`` routes by the ``x-smg-routing-key`` header the replayer sets to the session id
  (sticky session affinity).

Readiness of a front end: its HTTP port answers a one-token chat completion (so the router has
really registered the workers; SAGA has announced them).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from saga.bench.procs import BenchProcessError, Proc, free_port, wait_http
from saga.bench.prompts import CHARS_PER_TOKEN
from saga.scheduler.workloads.model import TenantSpec

ROUTER_POLICIES = ("cache_aware", "round_robin", "manual")
SAGA_SYSTEMS = ("saga", "saga-redis")
SYSTEMS = SAGA_SYSTEMS + ROUTER_POLICIES
READY_TIMEOUT_S = 60.0
PORT_RETRIES = 3  # relaunches of a replica whose free port was taken before it bound


@dataclass(frozen=True, slots=True)
class EmulatorSettings:
    time_scale: float  # model seconds per wall second
    page_size: int = 16  # tokens per KV page (SGLang --page-size)
    kv_capacity_tokens: int | None = None  # None: the emulator's default (Llama-3.1-8B on H100)
    context_length: int = 262_144  # long enough for 128k-token agent contexts plus output
    enable_priority_scheduling: bool = True  # SAGA sends priorities; routers send none
    enable_session_radix_cache: bool = True  # as SAGA's operator starts SGLang


@dataclass(slots=True)
class Cluster:
    procs: list[Proc]
    urls: dict[str, str]  # replica id -> base URL

    def stop(self) -> None:
        for p in self.procs:
            p.stop()


async def start_cluster(
    n: int, emu: EmulatorSettings, log_dir: Path, http: aiohttp.ClientSession, tag: str
) -> Cluster:
    procs: list[Proc] = []
    urls: dict[str, str] = {}

    def launch(i: int) -> tuple[Proc, str]:
        port = free_port()
        argv = [
                sys.executable, "-m", "saga.cli", "emulate", "--replicas", "1",
                "--host", "127.0.0.1", "--port", str(port), "--time-scale", str(emu.time_scale),
                "--page-size", str(emu.page_size), "--context-length", str(emu.context_length),
        ]  # fmt: skip
        if emu.kv_capacity_tokens is not None:
            argv += ["--kv-capacity-tokens", str(emu.kv_capacity_tokens)]
        if emu.enable_priority_scheduling:
            argv.append("--enable-priority-scheduling")
        if emu.enable_session_radix_cache:
            argv.append("--enable-session-radix-cache")
        return Proc(f"replica-{i}", argv, log_dir / f"{tag}-replica-{i}.log"), f"http://127.0.0.1:{port}"

    try:
        for i in range(n):
            p, url = launch(i)
            procs.append(p)
            urls[f"replica-{i}"] = url
        for i in range(n):
            for attempt in range(PORT_RETRIES + 1):
                try:
                    await wait_http(
                        http, urls[f"replica-{i}"] + "/health", procs[i], timeout_s=READY_TIMEOUT_S
                    )
                    break
                except BenchProcessError:
                    # Another process took the free port between our probe and the bind: retry.
                    if attempt == PORT_RETRIES or "address already in use" not in procs[i].log_tail():
                        raise
                    procs[i].stop()
                    procs[i], urls[f"replica-{i}"] = launch(i)
    except BaseException:
        for p in procs:
            p.stop()
        raise
    return Cluster(procs, urls)


async def external_cluster(urls: Sequence[str], http: aiohttp.ClientSession) -> Cluster:
    """Replicas started elsewhere (real SGLang): wait for /health, then flush their caches."""
    out = {f"replica-{i}": u.rstrip("/") for i, u in enumerate(urls)}
    for url in out.values():
        await wait_http(http, url + "/health", None, timeout_s=READY_TIMEOUT_S)
        await wait_http(http, url + "/flush_cache", None, timeout_s=READY_TIMEOUT_S, method="POST")
    return Cluster([], out)


@dataclass(slots=True)
class Front:
    """The system under test: its processes (SAGA or the router, maybe redis) and its URL."""

    system: str
    url: str
    procs: list[Proc] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    redis: Any = None

    def stop(self) -> None:
        for p in self.procs:
            p.stop()
        if self.redis is not None:
            self.redis.stop()


def api_key(tenant: str) -> str:
    return f"bench-key-{tenant}"


# SAGA must never refuse a prompt the replicas accept, or it would be compared on fewer tasks
# than the routers, which pass every prompt through (the replicas' own refusals, e.g. a prompt
# beyond the KV pool, then apply to every system alike). Its prompt limit is left at the default,
# 0: the replicas' own (their max_req_input_len); its body limit must hold a prompt of
# CONTEXT_TOKENS (the context ``e2e.replica_config`` gives the emulated replicas, ~7.3 MB of text).
MAX_REQUEST_BYTES = 64 * 1024 * 1024


def saga_config(
    replica_urls: Mapping[str, str],
    tenants: Mapping[str, TenantSpec],
    *,
    http_port: int,
    grpc_port: int,
    metrics_port: int,
    redis_url: str | None,
) -> dict[str, Any]:
    """The SchedulerConfig document SAGA runs with (tenants keyed by API key, with the workload's
    weights and deadline factors, as the simulator's engine gets them)."""
    names = sorted(tenants)
    return {
        "apiVersion": "saga.dev/v1alpha1",
        "kind": "SchedulerConfig",
        "metadata": {"name": "saga-bench-e2e"},
        "spec": {
            "listen": {
                "grpc": f"127.0.0.1:{grpc_port}",
                "http": f"127.0.0.1:{http_port}",
                "metrics": f"127.0.0.1:{metrics_port}",
            },
            "auth": {
                "anonymous_tenant": names[0],
                "api_keys": [{"key": api_key(t), "tenant": t} for t in names],
            },
            "tenants": [
                {"name": t, "weight": float(sp.weight), "deadline_factor": float(sp.slo_factor)}
                for t, sp in sorted(tenants.items())
            ],
            "replicas": {"static": [f"{rid}={url}" for rid, url in replica_urls.items()]},
            "state": {"backend": "redis", "redis_url": redis_url} if redis_url else {"backend": "memory"},
            "limits": {"max_request_bytes": MAX_REQUEST_BYTES},
            "tokens": {"chars_per_token": float(CHARS_PER_TOKEN), "block_size": 16},
        },
    }


def _probe_body() -> dict[str, Any]:
    return {"model": "default", "messages": [{"role": "user", "content": " w10001"}], "max_tokens": 1}


async def start_front(
    system: str,
    cluster: Cluster,
    tenants: Mapping[str, TenantSpec],
    time_scale: float,
    log_dir: Path,
    http: aiohttp.ClientSession,
) -> Front:
    if system in SAGA_SYSTEMS:
        return await _start_saga(system, cluster, tenants, time_scale, log_dir, http)
    if system in ROUTER_POLICIES:
        return await _start_router(system, cluster, log_dir, http)
    raise ValueError(f"unknown system {system!r}; known: {', '.join(SYSTEMS)}")


async def _start_saga(
    system: str,
    cluster: Cluster,
    tenants: Mapping[str, TenantSpec],
    time_scale: float,
    log_dir: Path,
    http: aiohttp.ClientSession,
) -> Front:
    redis = None
    redis_url = None
    if system == "saga-redis":
        from saga.service.state.redis_server import RedisServer

        redis = RedisServer().start()
        redis_url = redis.url
    http_port, grpc_port, metrics_port = free_port(), free_port(), free_port()
    cfg = saga_config(
        cluster.urls,
        tenants,
        http_port=http_port,
        grpc_port=grpc_port,
        metrics_port=metrics_port,
        redis_url=redis_url,
    )
    path = log_dir / f"{system}-config.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    argv = [
        sys.executable, "-m", "saga.cli", "serve",
        "--config", str(path), "--time-scale", str(time_scale), "--log-level", "WARNING",
    ]  # fmt: skip
    front = Front(system, f"http://127.0.0.1:{http_port}", redis=redis)
    try:
        proc = Proc("saga", argv, log_dir / f"{system}.log")
        front.procs.append(proc)
        if redis is not None and redis.proc is not None:
            front.info["redis_pid"] = redis.proc.pid
        await wait_http(http, front.url + "/health", proc, timeout_s=READY_TIMEOUT_S)
        await wait_http(
            http,
            front.url + "/v1/chat/completions",
            proc,
            timeout_s=READY_TIMEOUT_S,
            method="POST",
            json_body=_probe_body(),
            headers={"Authorization": f"Bearer {api_key(sorted(tenants)[0])}"},
        )
    except BaseException:
        front.stop()
        raise
    front.info.update({"pid": proc.pid, "argv": argv, "cmdline": proc.cmdline, "config": cfg})
    return front


def router_argv(policy: str, worker_urls: Sequence[str], port: int, prom_port: int) -> list[str]:
    return [
        sys.executable, "-m", "sglang_router.launch_router",
        "--worker-urls", *worker_urls,
        "--policy", policy,
        "--host", "127.0.0.1", "--port", str(port),
        "--prometheus-host", "127.0.0.1", "--prometheus-port", str(prom_port),
        "--log-level", "warn",
    ]  # fmt: skip


async def _start_router(policy: str, cluster: Cluster, log_dir: Path, http: aiohttp.ClientSession) -> Front:
    port, prom = free_port(), free_port()
    argv = router_argv(policy, list(cluster.urls.values()), port, prom)
    front = Front(policy, f"http://127.0.0.1:{port}")
    try:
        proc = Proc("sglang-router", argv, log_dir / f"router-{policy}.log")
        front.procs.append(proc)
        await wait_http(
            http,
            front.url + "/v1/chat/completions",
            proc,
            timeout_s=READY_TIMEOUT_S,
            method="POST",
            json_body=_probe_body(),
            headers={"x-smg-routing-key": "bench-probe"},
        )
    except BaseException:
        front.stop()
        raise
    front.info.update(
        {"pid": proc.pid, "argv": argv, "cmdline": proc.cmdline, "port": port, "prometheus_port": prom}
    )
    return front


def sglang_router_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("sglang-router")
    except PackageNotFoundError:
        return "not installed"
