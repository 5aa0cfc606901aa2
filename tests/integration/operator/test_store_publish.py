"""storage: redis publishes through the state store, and the scheduler's reloader reads it.

A real redis-server on a loopback port: the operator's I/O (``sources.read_stored`` /
``put_stored``) driven by the pure reconcile, then ``GraphReloader(from_store=True)`` over a
``RedisStore`` with the scheduler's default namespace picks the graph up, and drops it when
the workflow's document is deleted (``sources.delete_stored``, what the delete handler runs).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from saga.operator import sources
from saga.operator.reconcile import agentworkflow
from saga.operator.reconcile.common import Invalid
from saga.service.config import GraphSettings
from saga.service.graphs_reload import GraphReloader
from saga.service.state.redis_server import RedisServer
from saga.service.state.redis_store import RedisStore

pytestmark = pytest.mark.integration
DATA = Path(__file__).parent / "data"


async def _publish(obj: dict[str, Any], graph: agentworkflow.BuiltGraph, url: str) -> Any:
    stored = await sources.read_stored(url, "saga", "claude-code")
    r = agentworkflow.reconcile(obj, graph, now="2026-01-01T00:00:00Z", stored=stored)
    assert not isinstance(r, Invalid)
    if r.store_put is not None:
        assert await sources.put_stored(url, "saga", r.store_put) == r.version
    obj["status"] = r.status
    return r


async def test_operator_store_graph_reaches_the_reloader(redis_server: RedisServer) -> None:
    url = redis_server.url
    obj: dict[str, Any] = {
        "apiVersion": "saga.dev/v1alpha1",
        "kind": "AgentWorkflow",
        "metadata": {"name": "coder", "namespace": "ml", "uid": "u1", "generation": 1},
        "spec": {
            "agentType": "claude-code",
            "source": {"redis": {"key": "traces"}},
            "storage": {"type": "redis"},
        },
    }
    text = (DATA / "sample_weka_traces.jsonl").read_text()
    graph = sources.build_graph(text, "claude-code", "auto")
    r1 = await _publish(obj, graph, url)
    assert (r1.version, r1.store_put is not None) == (1, True)
    r2 = await _publish(obj, graph, url)  # same traces: nothing written, same version
    assert (r2.version, r2.store_put) == (1, None)

    applied: list[Any] = []
    store = RedisStore(url, process_id="scheduler-1")  # the scheduler's default namespace
    try:
        reloader = GraphReloader(GraphSettings(from_store=True), applied.append, store=store)
        assert await reloader.poll()
        assert applied[-1] is not None
        assert "claude-code" in reloader.state.agent_types
        assert reloader.state.sources == {"store:claude-code": "v1"}

        more = text + text.replace('"sample-', '"more-')
        r3 = await _publish(obj, sources.build_graph(more, "claude-code", "auto"), url)
        assert r3.version == 2
        assert await reloader.poll()
        assert reloader.state.sources == {"store:claude-code": "v2"}

        # The workflow is deleted: its document goes, and the scheduler drops the agent type.
        ref = agentworkflow.stored_ref(obj)
        assert ref == agentworkflow.StoreRef("saga", "claude-code", r3.status["graphDigest"])
        assert not await sources.delete_stored(url, "saga", "claude-code", "0" * 16)  # not ours
        assert await sources.delete_stored(url, ref.store_namespace, ref.agent_type, ref.digest)
        assert await store.graph_versions() == {}
        assert await reloader.poll()
        assert applied[-1] is None  # back to the built-in prior
        assert reloader.state.agent_types == []
        assert not await sources.delete_stored(url, "saga", "claude-code", ref.digest)  # gone

        # Re-created and rebuilt twice before the next poll: versions restart (v1, v2), and the
        # reloader must not mistake the new v2 for the deleted one.
        obj.pop("status")
        assert (await _publish(obj, graph, url)).version == 1
        assert (await _publish(obj, sources.build_graph(more, "claude-code", "auto"), url)).version == 2
        assert await reloader.poll()
        assert reloader.state.sources == {"store:claude-code": "v2"}
        assert "claude-code" in reloader.state.agent_types
    finally:
        await store.close()
