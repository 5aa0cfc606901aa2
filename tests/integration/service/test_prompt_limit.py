"""``spec.limits.max_prompt_tokens: 0`` (auto) against emulated replicas over loopback: SAGA
refuses exactly the prompts no replica would take (SGLang's ``max_req_input_len``)."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from saga.client import AsyncSagaClient, InvalidArgumentError
from saga.emulator.core import ReplicaConfig
from saga.emulator.server import start_replica
from saga.service.app import Service
from saga.service.config import load_text

from .conftest import TIME_SCALE, Stack, config_text, prompt_ids, stop_stack

pytestmark = pytest.mark.integration


async def test_auto_limit_is_the_largest_replicas_max_req_input_len() -> None:
    # KV pools of 4096 and 8192 tokens bind (the context is 131072): SGLang's max_req_input_len
    # is 4090 and 8186, so the longest prompt either accepts is 8185 tokens.
    replicas = [
        await start_replica(ReplicaConfig(kv_capacity_tokens=kv), replica_id=f"r{i}", time_scale=TIME_SCALE)
        for i, kv in enumerate((4096, 8192))
    ]
    text = config_text([f"r{i}={r.url}" for i, r in enumerate(replicas)])
    assert "max_prompt_tokens: 20000" in text
    svc = Service(
        load_text(text.replace("max_prompt_tokens: 20000", "max_prompt_tokens: 0")),
        registry=CollectorRegistry(),
    )
    st = Stack(svc, replicas)
    try:
        await svc.start()
        await svc.wait_replicas(2, timeout_s=10)
        async with AsyncSagaClient(st.grpc_target) as c:
            out = await c.generate(prompt_ids(1, 8185), max_new_tokens=1)  # only r1 holds it
            assert (out.replica_id, out.usage.prompt_tokens) == ("r1", 8185)
            with pytest.raises(
                InvalidArgumentError, match=r"largest prompt any ready replica accepts \(8185"
            ):
                await c.generate(prompt_ids(2, 8186), max_new_tokens=1)
    finally:
        await stop_stack(st)
