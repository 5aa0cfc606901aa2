"""Pure AgentWorkflow reconcile: versioning by digest, storage choice, confidence, invalid specs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from saga.operator.reconcile import agentworkflow
from saga.operator.reconcile.agentworkflow import BuiltGraph
from saga.operator.reconcile.common import Invalid

pytestmark = pytest.mark.unit
NOW = "2026-01-01T00:00:00Z"


def wf(**spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"agentType": "claude-code", "source": {"configMap": {"name": "traces"}}}
    base.update(spec)
    return {
        "apiVersion": "saga.dev/v1alpha1",
        "kind": "AgentWorkflow",
        "metadata": {"name": "coder", "namespace": "ml", "uid": "u3", "generation": 1},
        "spec": base,
    }


def graph(digest: str = "d1", sessions: int = 12, text: str = '{"nodes":[]}') -> BuiltGraph:
    return BuiltGraph(graph_json=text, digest=digest, sessions_seen=sessions, skipped=1)


def test_first_build_stores_configmap_v1() -> None:
    r = agentworkflow.reconcile(wf(), graph(), now=NOW)
    assert not isinstance(r, Invalid)
    assert r.version == 1
    assert r.changed
    cm = r.configmap
    assert cm is not None
    assert cm["metadata"]["name"] == "coder-aeg"
    assert cm["metadata"]["annotations"]["saga.dev/graph-version"] == "1"
    assert cm["metadata"]["labels"]["saga.dev/role"] == "agent-graph"
    assert agentworkflow.graph_from_configmap(cm) == {"nodes": []}
    st = r.status
    assert st["sessionsSeen"] == 12
    assert st["graphVersion"] == 1
    assert st["confidence"] == pytest.approx(0.4)
    ready = {c["type"]: c for c in st["conditions"]}["Ready"]
    assert (ready["status"], ready["reason"]) == ("True", "LowConfidence")


def test_same_digest_keeps_version_new_digest_bumps() -> None:
    obj = wf()
    r1 = agentworkflow.reconcile(obj, graph("d1"), now=NOW)
    assert not isinstance(r1, Invalid)
    obj["status"] = r1.status
    r2 = agentworkflow.reconcile(obj, graph("d1"), now="2026-01-02T00:00:00Z")
    assert not isinstance(r2, Invalid)
    assert (r2.version, r2.changed) == (1, False)
    assert r2.status == r1.status  # idempotent: nothing new to patch
    obj["status"] = r2.status
    r3 = agentworkflow.reconcile(obj, graph("d2", sessions=40), now="2026-01-03T00:00:00Z")
    assert not isinstance(r3, Invalid)
    assert (r3.version, r3.changed) == (2, True)
    assert r3.status["confidence"] == 1.0
    assert {c["type"]: c for c in r3.status["conditions"]}["Ready"]["reason"] == "GraphReady"


def test_no_sessions_not_ready() -> None:
    r = agentworkflow.reconcile(wf(), graph(sessions=0), now=NOW)
    assert not isinstance(r, Invalid)
    ready = {c["type"]: c for c in r.status["conditions"]}["Ready"]
    assert (ready["status"], ready["reason"]) == ("False", "NoSessions")


def test_large_graph_is_gzipped() -> None:
    big = json.dumps({"x": "a" * (agentworkflow.CONFIGMAP_INLINE_LIMIT + 10)})
    r = agentworkflow.reconcile(wf(), graph(text=big), now=NOW)
    assert not isinstance(r, Invalid)
    assert r.configmap is not None
    assert "graph.json" not in r.configmap["data"]
    assert agentworkflow.graph_from_configmap(r.configmap) == json.loads(big)


def test_redis_storage_puts_a_store_document_versioned_by_the_store() -> None:
    obj = wf(storage={"type": "redis"})
    r = agentworkflow.reconcile(obj, graph(), now=NOW)
    assert not isinstance(r, Invalid)
    assert r.configmap is None
    assert r.store_put == agentworkflow.StorePut("claude-code", {"nodes": []}, 0)
    assert (r.version, r.changed) == (1, True)
    assert r.status["graphRef"] == "redis/saga:g:claude-code@v1"
    # The store already holds this digest at v4 (another operator run wrote it): no put, v4.
    obj["status"] = r.status
    same = agentworkflow.reconcile(obj, graph(), now=NOW, stored=agentworkflow.StoredGraph(4, "d1"))
    assert not isinstance(same, Invalid)
    assert (same.store_put, same.version, same.status["graphVersion"]) == (None, 4, 4)
    # A new digest: compare-and-set from the stored version.
    new = agentworkflow.reconcile(obj, graph("d2"), now=NOW, stored=agentworkflow.StoredGraph(4, "d1"))
    assert not isinstance(new, Invalid)
    assert new.store_put is not None
    assert new.store_put.expected_version == 4
    assert (new.version, new.changed) == (5, True)


def test_the_published_store_document_is_found_from_status() -> None:
    obj = wf(storage={"type": "redis"})
    assert agentworkflow.stored_ref(obj) is None  # nothing published yet
    r = agentworkflow.reconcile(obj, graph("d9"), now=NOW, stored=agentworkflow.StoredGraph(2, "d0"))
    assert not isinstance(r, Invalid)
    obj["status"] = r.status
    ref = agentworkflow.stored_ref(obj)
    assert ref == agentworkflow.StoreRef("saga", "claude-code", "d9")
    spec = agentworkflow.parse_spec(obj)
    assert not isinstance(spec, Invalid)
    assert agentworkflow.stale_store_ref(obj, spec) is None  # still where it publishes
    assert agentworkflow.published_store_refs(obj) == [ref]
    # Deleted before the status recorded a put: the spec's target with the status digest.
    racing = wf(storage={"type": "redis", "storeNamespace": "prod"})
    racing["status"] = r.status
    assert agentworkflow.published_store_refs(racing) == [
        ref,
        agentworkflow.StoreRef("prod", "claude-code", "d9"),
    ]
    for moved in (
        wf(),  # storage back to configMap
        wf(agentType="other", storage={"type": "redis"}),
        wf(storage={"type": "redis", "storeNamespace": "prod"}),
    ):
        moved["status"] = r.status
        spec = agentworkflow.parse_spec(moved)
        assert not isinstance(spec, Invalid)
        assert agentworkflow.stale_store_ref(moved, spec) == ref
    configmap_stored = agentworkflow.reconcile(wf(), graph(), now=NOW)
    assert not isinstance(configmap_stored, Invalid)
    assert agentworkflow.stored_ref({"status": configmap_stored.status}) is None
    assert agentworkflow.stored_ref({"status": {"graphRef": "redis/nonsense", "graphDigest": "d"}}) is None


def test_redis_key_prefix_is_gone() -> None:
    r = agentworkflow.reconcile(wf(storage={"type": "redis", "redisKeyPrefix": "x:"}), graph(), now=NOW)
    assert isinstance(r, Invalid)
    assert r.field == "spec.storage.redisKeyPrefix"


def test_bundle_gets_one_key_per_agent_type_and_removal_only_own() -> None:
    obj = wf()
    want, conflict = agentworkflow.bundle_patch(obj, graph(), None, name="saga-graphs", namespace="saga")
    assert conflict is None
    assert want is not None
    assert want["metadata"]["name"] == "saga-graphs"
    assert want["metadata"]["namespace"] == "saga"
    assert want["metadata"]["labels"]["saga.dev/role"] == "agent-graph-bundle"
    assert want["data"] == {"claude-code.json": '{"nodes":[]}'}
    assert want["metadata"]["annotations"] == {"graphs.saga.dev/claude-code": "ml/coder"}
    assert "ownerReferences" not in want["metadata"]  # shared by every workflow
    # Already in the bundle: nothing to write (idempotent resync).
    current = {**want, "data": {**want["data"], "other.json": "{}"}}
    assert agentworkflow.bundle_patch(obj, graph(), current, name="saga-graphs", namespace="saga") == (
        None,
        None,
    )
    # Another workflow of the same agent type does not take the key over.
    other = wf()
    other["metadata"] = {**other["metadata"], "name": "coder2", "uid": "u4"}
    taken, msg = agentworkflow.bundle_patch(other, graph("d9"), current, name="saga-graphs", namespace="saga")
    assert taken is None
    assert msg is not None
    assert "ml/coder" in msg
    assert agentworkflow.bundle_removal(other, "claude-code", current) is None
    # Deleting the owner removes its key and annotation only.
    removal = agentworkflow.bundle_removal(obj, "claude-code", current)
    assert removal is not None
    assert removal["data"] == {"claude-code.json": None}
    assert removal["metadata"]["annotations"] == {"graphs.saga.dev/claude-code": None}
    # A graph above the inline limit moves to binaryData and the .json key is dropped.
    big = json.dumps({"x": "a" * (agentworkflow.CONFIGMAP_INLINE_LIMIT + 10)})
    moved, _ = agentworkflow.bundle_patch(
        obj, graph("d3", text=big), current, name="saga-graphs", namespace="saga"
    )
    assert moved is not None
    assert moved["data"] == {"claude-code.json": None}
    assert set(moved["binaryData"]) == {"claude-code.json.gz"}


def test_build_graph_from_sample_trace() -> None:
    from saga.operator.sources import build_graph

    text = (Path(__file__).parents[2] / "integration/operator/data/sample_weka_traces.jsonl").read_text()
    g = build_graph(text, "claude-code", "auto")
    assert g.sessions_seen == 6
    assert g.skipped == 1
    doc = json.loads(g.graph_json)
    assert "claude-code" in doc["graphs"]
    assert build_graph(text, "claude-code", "weka") == g  # canonical: same traces, same digest
    other = build_graph(text, "browser-agent", "auto")
    assert other.sessions_seen == 0
    assert other.digest != g.digest


def test_sources_parse() -> None:
    s = agentworkflow.parse_spec(
        wf(source={"sdkStream": {"stream": "saga:events", "url": "redis://r:6379/0"}})
    )
    assert not isinstance(s, Invalid)
    assert (s.source.kind, s.source.key, s.source.url) == ("sdkStream", "saga:events", "redis://r:6379/0")
    s2 = agentworkflow.parse_spec(wf(source={"redis": {"key": "traces:coder"}}))
    assert not isinstance(s2, Invalid)
    assert s2.source.kind == "redis"


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"agentType": ""}, "spec.agentType"),
        ({"source": {}}, "spec.source"),
        ({"source": {"configMap": {"name": "a"}, "redis": {"key": "k"}}}, "spec.source"),
        ({"source": {"configMap": {"name": "Bad_Name"}}}, "spec.source.configMap.name"),
        ({"source": {"redis": {"key": ""}}}, "spec.source.redis.key"),
        ({"source": {"redis": {"key": "k", "url": "http://x"}}}, "spec.source.redis.url"),
        ({"format": "csv"}, "spec.format"),
        ({"storage": {"type": "s3"}}, "spec.storage.type"),
        ({"minSessions": 0}, "spec.minSessions"),
    ],
)
def test_invalid_specs(spec: dict[str, Any], field: str) -> None:
    r = agentworkflow.reconcile(wf(**spec), graph(), now=NOW)
    assert isinstance(r, Invalid)
    assert r.field == field
