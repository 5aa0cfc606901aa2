"""SLO lanes through the real service: spec.tenants' deadline factors reach the engine, a lane
forms from the measured work, the tight tenant's calls run on it and the others stay off it,
and ``saga_slo_lane_replicas`` shows it."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from saga.client import AsyncSagaClient
from saga.emulator.core import ReplicaConfig
from saga.emulator.server import start_replica
from saga.service.app import Service
from saga.service.config import load_text

from .conftest import KEYS, TIME_SCALE, config_text

pytestmark = pytest.mark.integration

ALPHA, BETA = (k for k, t in KEYS.items() if t in ("alpha", "beta"))
PROMPT = "lane test words " * 40  # every call the same size: the work share is the call share

# alpha is tight (factor 1.5), beta is not (3.0); a lane whenever the share allows one, sized to
# the average load so that one replica of two stays uncapped for alpha's shares here (1/6 to 1/2)
LANES = """\
  engine:
    lanes: {hold_s: 0, min_work_s: 0, max_reserved: 0.5, relative_load: 1.0}
"""


async def _calls(target: str, key: str, n: int) -> list[str]:
    out = []
    async with AsyncSagaClient(target, api_key=key) as c:
        for _ in range(n):
            async with c.session(agent="x") as s:
                r = await s.generate(PROMPT, max_new_tokens=8)
                out.append(r.replica_id)
    return out


async def test_the_tight_tenant_gets_a_replica_of_its_own() -> None:
    replicas = [
        await start_replica(
            ReplicaConfig(enable_session_radix_cache=True), replica_id=f"r{i}", time_scale=TIME_SCALE
        )
        for i in range(2)
    ]
    text = config_text([f"r{i}={r.url}" for i, r in enumerate(replicas)], extra_limits=LANES)
    text = text.replace("{name: alpha, weight: 2}", "{name: alpha, weight: 2, deadline_factor: 1.5}")
    text = text.replace("{name: beta}", "{name: beta, deadline_factor: 3}")
    registry = CollectorRegistry()
    svc = Service(load_text(text), registry=registry)
    await svc.start()
    try:
        await svc.wait_replicas(2, timeout_s=10)
        target = f"127.0.0.1:{svc.grpc_port}"
        assert registry.get_sample_value("saga_slo_lane_replicas") == 0.0
        await _calls(target, BETA, 5)  # one class only so far: no lane
        assert registry.get_sample_value("saga_slo_lane_replicas") == 0.0
        await _calls(target, ALPHA, 1)  # alpha's share is now 1/6: one replica of two
        tight = await _calls(target, ALPHA, 4)
        others = await _calls(target, BETA, 4)
        assert registry.get_sample_value("saga_slo_lane_replicas") == 1.0
        assert len(set(tight)) == 1
        assert tight[0] not in others
    finally:
        await svc.stop()
        for r in replicas:
            await r.runner.cleanup()
