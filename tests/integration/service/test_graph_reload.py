"""A running service picks up a new AEG document from its graph folder without a restart."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from saga.client import AsyncSagaClient
from saga.emulator.core import ReplicaConfig
from saga.emulator.server import start_replica
from saga.graphs.aeg import GraphSet, build_graphs
from saga.graphs.predict import AEGPredictor
from saga.graphs.synthetic import sessions
from saga.scheduler.engine import Engine
from saga.service.app import Service
from saga.service.config import load_text

from .conftest import TIME_SCALE, Stack, config_text, stop_stack

pytestmark = pytest.mark.integration


def sessions_in(graphs: GraphSet, agent_type: str) -> float:
    """How many sessions ``agent_type``'s graph was built from (the graph must be there)."""
    g = graphs.get(agent_type)
    assert g is not None, agent_type
    return g.sessions


def write_graph(path: Path, n: int, seed: int) -> None:
    """Atomically replace ``path`` (as kubelet's symlink swap does: old or new, never a mix)."""
    doc = json.loads(build_graphs(sessions(n, seed=seed, agent_type="swe")).to_json())
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, sort_keys=True, separators=(",", ":")))
    os.replace(tmp, path)


async def wait_for(cond: Callable[[], bool], timeout_s: float = 10.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not cond():
            await asyncio.sleep(0.02)


async def test_new_graph_file_changes_the_predictor_in_use(tmp_path: Path) -> None:
    graphs = tmp_path / "graphs"
    graphs.mkdir()
    write_graph(graphs / "swe.json", 20, seed=1)
    replicas = [
        await start_replica(
            ReplicaConfig(enable_session_radix_cache=True), replica_id=f"r{i}", time_scale=TIME_SCALE
        )
        for i in range(2)
    ]
    urls = [f"r{i}={r.url}" for i, r in enumerate(replicas)]
    extra = f"  graphs: {{directory: {str(graphs)!r}, poll_interval_s: 0.05}}\n"
    svc = Service(load_text(config_text(urls, extra_limits=extra)), registry=CollectorRegistry())
    await svc.start()
    st = Stack(svc, replicas)
    try:
        await svc.wait_replicas(2, timeout_s=10)
        engine = st.service.engine
        assert isinstance(engine, Engine)
        first = engine.predictor
        assert isinstance(first, AEGPredictor)  # loaded before the first call
        assert sessions_in(first.graphs, "swe") == 20
        async with AsyncSagaClient(st.grpc_target) as c, c.session(agent="swe") as s:
            out = await s.generate("hello world " * 20, max_new_tokens=8)
            assert out.usage.completion_tokens > 0

            write_graph(graphs / "swe.json", 60, seed=2)
            await wait_for(lambda: engine.predictor is not first)
            second = engine.predictor
            assert isinstance(second, AEGPredictor)
            assert sessions_in(second.graphs, "swe") == 60
            reloader = st.service.graphs
            assert reloader is not None
            assert reloader.state.generation == 2

            # the service keeps serving the open session under the new graphs
            out = await s.generate("hello world " * 20 + "again", max_new_tokens=8)
            assert out.usage.completion_tokens > 0

        # a corrupt publish is refused and the working predictor stays
        (graphs / "swe.json").write_text('{"kind": "saga.graphs/GraphSet", "version": 1')
        await wait_for(lambda: str(graphs / "swe.json") in reloader.state.errors)
        assert engine.predictor is second
    finally:
        await stop_stack(st)
