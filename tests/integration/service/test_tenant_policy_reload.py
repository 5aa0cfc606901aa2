"""A running service picks up tenant policy changes (weights, SLOs) without a restart, and
keeps the last good policy when a bad one is published."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from saga.client import AsyncSagaClient
from saga.client.errors import RejectedError
from saga.emulator.core import ReplicaConfig
from saga.emulator.server import start_replica
from saga.scheduler.engine import Engine
from saga.service.app import Service
from saga.service.config import load_text

from .conftest import KEYS, TIME_SCALE, Stack, config_text, stop_stack

pytestmark = pytest.mark.integration
ALPHA_KEY = next(k for k, t in KEYS.items() if t == "alpha")


def publish(folder: Path, tenant: str, weight: Any, completion_s: float | None, **quotas: float) -> None:
    """Atomically replace the tenant's policy file (as kubelet swaps a mounted ConfigMap)."""
    doc = {
        "tenant": tenant,
        "weight": weight,
        "slo": {
            "completion_time_s": completion_s,
            "deadline_factor": 1.5,
            "attainment_target": 0.99,
            "ttft_s": None,
        },
        "quotas": {"max_active_sessions": 0, "max_calls_per_second": 0.0, "max_kv_tokens": 0, **quotas},
        "api_key": {"secret": f"{tenant}-key", "key": "api-key", "sha256_16": "0123456789abcdef"},
    }
    tmp = folder / f"{tenant}.tmp"
    tmp.write_text(json.dumps(doc))
    os.replace(tmp, folder / f"{tenant}.json")


async def wait_for(cond: Callable[[], bool], timeout_s: float = 10.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not cond():
            await asyncio.sleep(0.02)


async def test_policy_changes_apply_to_the_next_session_and_bad_ones_are_refused(tmp_path: Path) -> None:
    folder = tmp_path / "tenants"
    folder.mkdir()
    publish(folder, "alpha", 4.0, 120.0)
    replica = await start_replica(
        ReplicaConfig(enable_session_radix_cache=True), replica_id="r0", time_scale=TIME_SCALE
    )
    extra = f"  tenant_policies: {{directory: {str(folder)!r}, poll_interval_s: 0.05}}\n"
    cfg = load_text(config_text([f"r0={replica.url}"], extra_limits=extra))
    svc = Service(cfg, registry=CollectorRegistry())
    await svc.start()
    st = Stack(svc, [replica])
    try:
        await svc.wait_replicas(1, timeout_s=10)
        engine = svc.engine
        assert isinstance(engine, Engine)
        assert svc.core is not None
        reloader = svc.tenant_policies
        assert reloader is not None
        assert engine.settings.fairness.weights["alpha"] == 4.0  # in force before the first call
        async with AsyncSagaClient(st.grpc_target, api_key=ALPHA_KEY) as c:
            async with c.session(agent="swe") as s:
                assert svc.core.sessions[s.session_id].slo_s == 120.0
                out = await s.generate("hello world " * 10, max_new_tokens=4)
                assert out.usage.completion_tokens > 0

            publish(folder, "alpha", 1.5, 30.0)
            await wait_for(lambda: reloader.state.generation == 2)
            assert engine.settings.fairness.weights["alpha"] == 1.5
            async with c.session(agent="swe") as s:
                assert svc.core.sessions[s.session_id].slo_s == 30.0

            # A bad publish is refused: logged, counted, and the last good policy stays.
            publish(folder, "alpha", -1, 30.0)
            await wait_for(lambda: str(folder / "alpha.json") in reloader.state.errors)
            assert engine.settings.fairness.weights["alpha"] == 1.5
            async with c.session(agent="swe") as s:
                assert svc.core.sessions[s.session_id].slo_s == 30.0
        url = f"http://127.0.0.1:{svc.metrics_port}/metrics"
        async with aiohttp.ClientSession() as http, http.get(url) as resp:
            text = await resp.text()
        assert "saga_tenant_policy_rejected_documents 1.0" in text
        assert 'saga_tenant_policy_reloads_total{outcome="rejected"} 1.0' in text
        assert 'saga_tenant_policy_reloads_total{outcome="applied"} 2.0' in text

        (folder / "alpha.json").unlink()  # the TenantPolicy is deleted: spec.tenants again
        await wait_for(lambda: reloader.state.generation == 3)
        assert engine.settings.fairness.weights["alpha"] == 2.0  # config_text's weight
    finally:
        await stop_stack(st)


async def test_policy_quotas_refuse_over_grpc_and_http(tmp_path: Path) -> None:
    folder = tmp_path / "tenants"
    folder.mkdir()
    publish(folder, "alpha", 2.0, None, max_active_sessions=1, max_calls_per_second=0.5)
    replica = await start_replica(
        ReplicaConfig(enable_session_radix_cache=True), replica_id="r0", time_scale=TIME_SCALE
    )
    extra = f"  tenant_policies: {{directory: {str(folder)!r}, poll_interval_s: 0.05}}\n"
    svc = Service(
        load_text(config_text([f"r0={replica.url}"], extra_limits=extra)), registry=CollectorRegistry()
    )
    await svc.start()
    st = Stack(svc, [replica])
    try:
        await svc.wait_replicas(1, timeout_s=10)
        async with (
            AsyncSagaClient(st.grpc_target, api_key=ALPHA_KEY) as c,
            c.session(agent="swe") as s,
        ):
            with pytest.raises(RejectedError, match="open sessions, its quota is 1") as ei:
                async with c.session(agent="swe"):
                    pass
            assert ei.value.retry_after_s == 5.0
            out = await s.generate("hello world", max_new_tokens=4)  # the bucket's one call
            assert out.usage.completion_tokens > 0
            with pytest.raises(RejectedError, match=r"0\.5 calls per second"):
                await s.generate("hello again", max_new_tokens=4)
        body = {"model": "default", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
        headers = {"Authorization": f"Bearer {ALPHA_KEY}"}
        async with (
            aiohttp.ClientSession() as http,
            http.post(f"{st.http_base}/chat/completions", json=body, headers=headers) as resp,
        ):
            assert resp.status == 429
            assert resp.headers["Retry-After"] == "2"
            err = (await resp.json())["error"]
            assert err["type"] == "rate_limit_error"
            assert "calls per second" in err["message"]
        url = f"http://127.0.0.1:{svc.metrics_port}/metrics"
        async with aiohttp.ClientSession() as http, http.get(url) as resp:
            text = await resp.text()
        assert 'saga_admission_rejections_total{reason="tenant_quota",tenant="alpha"} 3.0' in text
        assert 'saga_calls_total{status="rejected",tenant="alpha"} 2.0' in text  # the session is no call
    finally:
        await stop_stack(st)
