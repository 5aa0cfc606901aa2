"""The kopf operator against the kmock Kubernetes emulator: create, update, delete, status."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
import redis

from saga.service.state.redis_server import RedisServer
from saga.service.tenants_reload import parse_policy

from .conftest import Cluster, running_cluster

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

DATA = Path(__file__).parent / "data"
API = "saga.dev/v1alpha1"


def conditions(obj: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in ((obj or {}).get("status") or {}).get("conditions") or []}


async def test_replicapool_create_update_delete(cluster: Cluster) -> None:
    await cluster.create(
        {
            "apiVersion": API,
            "kind": "ReplicaPool",
            "metadata": {"name": "pool-a"},
            "spec": {
                "image": "lmsysorg/sglang:v0.5.20",
                "model": "/models/m",
                "replicas": 2,
                "gpusPerReplica": 1,
            },
        }
    )
    dep = await cluster.wait_for("Deployment", lambda: cluster.get("apps/v1/deployments", "pool-a"))
    svc = await cluster.wait_for("Service", lambda: cluster.get("v1/services", "pool-a"))
    assert dep["spec"]["replicas"] == 2
    cmd = dep["spec"]["template"]["spec"]["containers"][0]["command"]
    assert "--enable-session-radix-cache" in cmd
    assert "--enable-metrics" in cmd
    assert dep["metadata"]["ownerReferences"][0]["name"] == "pool-a"
    assert svc["spec"]["selector"]["saga.dev/replica-pool"] == "pool-a"
    pool = await cluster.wait_for(
        "pool status",
        lambda: (
            (p := cluster.get(f"{API}/replicapools", "pool-a")) and p.get("status", {}).get("phase") and p
        ),
    )
    assert pool["status"]["replicas"] == 2
    assert pool["status"]["readyReplicas"] == 0
    assert conditions(pool)["Ready"]["reason"] == "ReplicasNotReady"
    assert "operator.saga.dev/finalizer" in pool["metadata"]["finalizers"]

    # The cluster reports ready pods (kmock has no controllers: play the Deployment controller).
    await cluster.patch(
        "apps/v1", "deployments", "pool-a", {"status": {"readyReplicas": 2, "availableReplicas": 2}}
    )
    await cluster.wait_for(
        "Ready=True after resync",
        lambda: (
            conditions(cluster.get(f"{API}/replicapools", "pool-a")).get("Ready", {}).get("status") == "True"
        ),
    )

    # Change: scale and switch image -> the Deployment follows.
    await cluster.patch(
        API,
        "replicapools",
        "pool-a",
        {"metadata": {"generation": 2}, "spec": {"replicas": 3, "image": "sglang:v0.5.5"}},
    )

    def updated() -> bool:
        d = cluster.get("apps/v1/deployments", "pool-a") or {}
        c = d.get("spec", {}).get("template", {}).get("spec", {}).get("containers", [{}])[0]
        return bool(d.get("spec", {}).get("replicas") == 3 and c.get("image") == "sglang:v0.5.5")

    await cluster.wait_for("Deployment updated", updated)

    # Delete: the finalizer's handler removes the Deployment and Service, then the pool goes.
    await cluster.delete(API, "replicapools", "pool-a")
    await cluster.wait_for("Deployment deleted", lambda: cluster.get("apps/v1/deployments", "pool-a") is None)
    await cluster.wait_for("Service deleted", lambda: cluster.get("v1/services", "pool-a") is None)
    await cluster.wait_for("pool gone", lambda: cluster.get(f"{API}/replicapools", "pool-a") is None)


async def test_removed_spec_fields_leave_the_workload(cluster: Cluster) -> None:
    """A key dropped from the spec disappears from the live Deployment (not just new keys)."""
    await cluster.create(
        {
            "apiVersion": API,
            "kind": "ReplicaPool",
            "metadata": {"name": "pool-c"},
            "spec": {
                "image": "img",
                "model": "/m",
                "nodeSelector": {"gpu": "a100", "zone": "b"},
                "podLabels": {"team": "search", "cost-center": "42"},
            },
        }
    )

    def pod(d: dict[str, Any] | None) -> dict[str, Any]:
        return ((d or {}).get("spec") or {}).get("template") or {}

    dep = await cluster.wait_for("Deployment", lambda: cluster.get("apps/v1/deployments", "pool-c"))
    assert pod(dep)["spec"]["nodeSelector"] == {"gpu": "a100", "zone": "b"}
    # Another writer's annotation on the same object (a rollout restart) must survive.
    await cluster.patch(
        "apps/v1", "deployments", "pool-c", {"metadata": {"annotations": {"example.com/restarted": "now"}}}
    )
    await cluster.patch(
        API,
        "replicapools",
        "pool-c",
        {
            "metadata": {"generation": 2},
            "spec": {"nodeSelector": {"zone": None}, "podLabels": None, "replicas": 2},
        },
    )

    def converged() -> dict[str, Any] | None:
        d = cluster.get("apps/v1/deployments", "pool-c")
        if d is None or d["spec"].get("replicas") != 2:
            return None
        labels = pod(d)["metadata"]["labels"]
        if pod(d)["spec"].get("nodeSelector") != {"gpu": "a100"} or "team" in labels:
            return None
        return d

    dep = await cluster.wait_for("Deployment converged on the new spec", converged)
    assert "cost-center" not in pod(dep)["metadata"]["labels"]
    assert pod(dep)["metadata"]["labels"]["saga.dev/replica-pool"] == "pool-c"
    assert dep["metadata"]["annotations"]["example.com/restarted"] == "now"


async def test_replicapool_invalid_spec_reports_permanent_error(cluster: Cluster) -> None:
    await cluster.create(
        {
            "apiVersion": API,
            "kind": "ReplicaPool",
            "metadata": {"name": "bad"},
            "spec": {"image": "img", "model": "/m", "extraArgs": ["--disable-radix-cache"]},
        }
    )
    pool = await cluster.wait_for(
        "InvalidSpec condition",
        lambda: (
            (p := cluster.get(f"{API}/replicapools", "bad"))
            and conditions(p).get("Ready", {}).get("reason") == "InvalidSpec"
            and p
        ),
    )
    assert "--disable-radix-cache" in conditions(pool)["Ready"]["message"]
    assert pool["status"]["phase"] == "Invalid"
    assert cluster.get("apps/v1/deployments", "bad") is None


async def test_replicapool_replay_port_reaches_the_service_and_is_validated(cluster: Cluster) -> None:
    """kvEventsReplayPort added to a running pool: its pods' --kv-events-config gains the replay
    endpoint and pod and Service the kv-replay port (what the scheduler finds on the
    EndpointSlice); taken away, both go; a port that overlaps the DP ranks' range is refused."""
    await cluster.create(
        {
            "apiVersion": API,
            "kind": "ReplicaPool",
            "metadata": {"name": "pool-r"},
            "spec": {"image": "img", "model": "/m"},
        }
    )

    def names(obj: dict[str, Any] | None) -> list[str]:
        return [p["name"] for p in ((obj or {}).get("spec") or {}).get("ports") or []]

    def kv_config(d: dict[str, Any] | None) -> dict[str, Any]:
        c = (((d or {}).get("spec") or {}).get("template") or {}).get("spec", {}).get("containers", [{}])[0]
        cmd = c.get("command") or []
        return json.loads(cmd[cmd.index("--kv-events-config") + 1]) if "--kv-events-config" in cmd else {}

    await cluster.wait_for(
        "Service", lambda: names(cluster.get("v1/services", "pool-r")) == ["http", "kv-events"]
    )
    assert "replay_endpoint" not in kv_config(cluster.get("apps/v1/deployments", "pool-r"))

    await cluster.patch(
        API, "replicapools", "pool-r", {"metadata": {"generation": 2}, "spec": {"kvEventsReplayPort": 5600}}
    )
    svc = await cluster.wait_for(
        "kv-replay on the Service",
        lambda: (s := cluster.get("v1/services", "pool-r")) and "kv-replay" in names(s) and s,
    )
    assert next(p for p in svc["spec"]["ports"] if p["name"] == "kv-replay")["port"] == 5600
    dep = await cluster.wait_for(
        "replay endpoint in the pods' command",
        lambda: (
            (d := cluster.get("apps/v1/deployments", "pool-r"))
            and kv_config(d).get("replay_endpoint") == "tcp://*:5600"
            and d
        ),
    )
    ports = dep["spec"]["template"]["spec"]["containers"][0]["ports"]
    assert {"name": "kv-replay", "containerPort": 5600, "protocol": "TCP"} in ports

    await cluster.patch(
        API, "replicapools", "pool-r", {"metadata": {"generation": 3}, "spec": {"kvEventsReplayPort": None}}
    )
    await cluster.wait_for(
        "kv-replay gone", lambda: names(cluster.get("v1/services", "pool-r")) == ["http", "kv-events"]
    )
    await cluster.wait_for(
        "replay endpoint gone",
        lambda: "replay_endpoint" not in kv_config(cluster.get("apps/v1/deployments", "pool-r")),
    )

    # Two attention DP ranks publish on 5557 and 5558: a replay port of 5558 would clash.
    await cluster.patch(
        API,
        "replicapools",
        "pool-r",
        {
            "metadata": {"generation": 4},
            "spec": {
                "kvEventsReplayPort": 5558,
                "gpusPerReplica": 2,
                "extraArgs": ["--dp-size", "2", "--enable-dp-attention"],
            },
        },
    )
    pool = await cluster.wait_for(
        "InvalidSpec condition",
        lambda: (
            (p := cluster.get(f"{API}/replicapools", "pool-r"))
            and conditions(p).get("Ready", {}).get("reason") == "InvalidSpec"
            and p
        ),
    )
    message = conditions(pool)["Ready"]["message"]
    assert "spec.kvEventsReplayPort" in message
    assert "overlap the KV event ports 5557..5558" in message


async def test_agentworkflow_builds_graph_configmap(cluster: Cluster) -> None:
    pytest.importorskip(
        "saga.graphs.aeg", reason="saga.graphs.aeg (the AEG builder) is not in this checkout yet"
    )
    text = (DATA / "sample_weka_traces.jsonl").read_text()
    await cluster.create(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "coder-traces"},
            "data": {"traces.jsonl": text},
        },
        plural="configmaps",
    )
    await cluster.create(
        {
            "apiVersion": API,
            "kind": "AgentWorkflow",
            "metadata": {"name": "coder"},
            "spec": {
                "agentType": "claude-code",
                "format": "weka",
                "minSessions": 10,
                "source": {"configMap": {"name": "coder-traces", "key": "traces.jsonl"}},
            },
        }
    )
    cm = await cluster.wait_for(
        "graph ConfigMap", lambda: cluster.get("v1/configmaps", "coder-aeg"), timeout=40
    )
    assert cm["metadata"]["annotations"]["saga.dev/graph-version"] == "1"
    assert cm["metadata"]["labels"]["saga.dev/role"] == "agent-graph"
    graph = json.loads(cm["data"]["graph.json"])
    assert graph  # a non-empty AEG document from saga.graphs
    # The graph bundle the chart mounts into the scheduler holds the same document.
    bundle = await cluster.wait_for(
        "graph bundle",
        lambda: (
            (b := cluster.get("v1/configmaps", "saga-graphs"))
            and "claude-code.json" in b.get("data", {})
            and b
        ),
    )
    assert bundle["metadata"]["labels"]["saga.dev/role"] == "agent-graph-bundle"
    assert json.loads(bundle["data"]["claude-code.json"]) == graph
    wf = await cluster.wait_for(
        "workflow status",
        lambda: (
            (w := cluster.get(f"{API}/agentworkflows", "coder"))
            and w.get("status", {}).get("graphVersion")
            and w
        ),
    )
    st = wf["status"]
    assert st["sessionsSeen"] == 6
    assert st["skippedRecords"] == 1
    assert st["confidence"] == pytest.approx(0.6)
    assert st["graphRef"] == "configmap/coder-aeg"
    assert conditions(wf)["Ready"]["reason"] == "LowConfidence"

    # New traces -> new graph version; the resync timer picks them up (level-triggered).
    more = text + text.replace('"sample-', '"more-')
    await cluster.patch("v1", "configmaps", "coder-traces", {"data": {"traces.jsonl": more}})
    wf2 = await cluster.wait_for(
        "graph v2",
        lambda: (
            (w := cluster.get(f"{API}/agentworkflows", "coder"))
            and w["status"].get("graphVersion") == 2
            and w
        ),
        timeout=40,
    )
    assert wf2["status"]["sessionsSeen"] == 12
    assert conditions(wf2)["Ready"]["reason"] == "GraphReady"
    assert (cluster.get("v1/configmaps", "coder-aeg") or {})["metadata"]["annotations"][
        "saga.dev/graph-version"
    ] == "2"
    v2 = json.loads((cluster.get("v1/configmaps", "coder-aeg") or {})["data"]["graph.json"])
    await cluster.wait_for(
        "bundle at v2",
        lambda: (
            json.loads((cluster.get("v1/configmaps", "saga-graphs") or {})["data"]["claude-code.json"]) == v2
        ),
    )

    # Deleting the workflow takes its key out of the bundle (the bundle itself stays).
    await cluster.delete(API, "agentworkflows", "coder")
    await cluster.wait_for(
        "bundle key removed",
        lambda: (
            "claude-code.json" not in ((cluster.get("v1/configmaps", "saga-graphs") or {}).get("data") or {})
        ),
    )
    assert cluster.get("v1/configmaps", "saga-graphs") is not None


async def test_agentworkflow_missing_source_is_retried(cluster: Cluster) -> None:
    await cluster.create(
        {
            "apiVersion": API,
            "kind": "AgentWorkflow",
            "metadata": {"name": "late"},
            "spec": {"agentType": "claude-code", "source": {"configMap": {"name": "not-yet"}}},
        }
    )
    wf = await cluster.wait_for(
        "TracesUnavailable",
        lambda: (
            (w := cluster.get(f"{API}/agentworkflows", "late"))
            and conditions(w).get("Ready", {}).get("reason") == "TracesUnavailable"
            and w
        ),
    )
    assert "not-yet" in conditions(wf)["Ready"]["message"]


async def test_tenantpolicy_missing_secret_then_created(cluster: Cluster) -> None:
    await cluster.create(
        {
            "apiVersion": API,
            "kind": "TenantPolicy",
            "metadata": {"name": "acme"},
            "spec": {
                "weight": 2,
                "slo": {"completionTimeSeconds": 60},
                "apiKeySecretRef": {"name": "acme-key"},
            },
        }
    )
    tp = await cluster.wait_for(
        "SecretNotFound condition",
        lambda: (
            (t := cluster.get(f"{API}/tenantpolicies", "acme"))
            and conditions(t).get("SecretResolved", {}).get("reason") == "SecretNotFound"
            and t
        ),
    )
    c = conditions(tp)["SecretResolved"]
    assert c["status"] == "False"
    assert "ml/acme-key" in c["message"]
    assert "kubectl" in c["message"]
    assert conditions(tp)["Ready"]["status"] == "False"
    assert cluster.get("v1/configmaps", "saga-tenant-acme") is None

    # The Secret appears: the temporary error is retried and the policy is published.
    key = base64.b64encode(b"sk-test").decode()
    await cluster.create(
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "acme-key"}, "data": {"api-key": key}},
        plural="secrets",
    )
    cm = await cluster.wait_for("tenant ConfigMap", lambda: cluster.get("v1/configmaps", "saga-tenant-acme"))
    doc = json.loads(cm["data"]["tenant.json"])
    assert doc["tenant"] == "acme"
    assert doc["weight"] == 2.0
    await cluster.wait_for(
        "Ready=True",
        lambda: (
            conditions(cluster.get(f"{API}/tenantpolicies", "acme")).get("Ready", {}).get("status") == "True"
        ),
    )

    # The tenant bundle the scheduler mounts gets the same document, which the scheduler's
    # reloader accepts; a second policy for the tenant does not take the key over.
    bundle = await cluster.wait_for(
        "tenant bundle",
        lambda: (
            (b := cluster.get("v1/configmaps", "saga-tenants")) and "acme.json" in b.get("data", {}) and b
        ),
    )
    assert bundle["metadata"]["labels"]["saga.dev/role"] == "tenant-policy-bundle"
    assert bundle["metadata"]["annotations"]["tenants.saga.dev/acme"] == "ml/acme"
    assert bundle["data"]["acme.json"] == cm["data"]["tenant.json"]
    policy = parse_policy(bundle["data"]["acme.json"])
    assert (policy.tenant, policy.weight, policy.slo_s) == ("acme", 2.0, 60.0)
    await cluster.create(
        {
            "apiVersion": API,
            "kind": "TenantPolicy",
            "metadata": {"name": "acme-two"},
            "spec": {"tenant": "acme", "weight": 9, "apiKeySecretRef": {"name": "acme-key"}},
        }
    )
    await cluster.wait_for(
        "second policy published", lambda: cluster.get("v1/configmaps", "saga-tenant-acme-two")
    )

    # A weight change reaches the bundle (and so the scheduler) without a restart.
    await cluster.patch(API, "tenantpolicies", "acme", {"metadata": {"generation": 2}, "spec": {"weight": 3}})
    await cluster.wait_for(
        "bundle follows the new weight",
        lambda: (
            parse_policy((cluster.get("v1/configmaps", "saga-tenants") or {})["data"]["acme.json"]).weight
            == 3.0
        ),
    )
    # Deleting the second policy leaves acme's key; deleting acme's policy removes it.
    await cluster.delete(API, "tenantpolicies", "acme-two")
    await cluster.wait_for("acme-two gone", lambda: cluster.get(f"{API}/tenantpolicies", "acme-two") is None)
    assert "acme.json" in (cluster.get("v1/configmaps", "saga-tenants") or {})["data"]
    await cluster.delete(API, "tenantpolicies", "acme")
    await cluster.wait_for(
        "bundle key removed",
        lambda: "acme.json" not in ((cluster.get("v1/configmaps", "saga-tenants") or {}).get("data") or {}),
    )
    assert "tenants.saga.dev/acme" not in (cluster.get("v1/configmaps", "saga-tenants") or {})[
        "metadata"
    ].get("annotations", {})


async def test_agentworkflow_store_document_follows_the_workflow(redis_server: RedisServer) -> None:
    """storage: redis: switching storage away, or deleting the workflow, deletes its document
    in the state store (what running schedulers poll), so they stop predicting with it."""
    text = (DATA / "sample_weka_traces.jsonl").read_text()
    r = redis.Redis.from_url(redis_server.url)
    r.set("coder-traces", text)

    def stored() -> dict[bytes | str, bytes | str]:  # bytes: the client does not decode
        return r.hgetall("saga:gv")

    async with running_cluster(redis_url=redis_server.url) as cluster:
        await cluster.create(
            {
                "apiVersion": API,
                "kind": "AgentWorkflow",
                "metadata": {"name": "coder"},
                "spec": {
                    "agentType": "claude-code",
                    "source": {"redis": {"key": "coder-traces"}},
                    "storage": {"type": "redis"},
                },
            }
        )
        await cluster.wait_for("graph in the store", lambda: stored() == {b"claude-code": b"1"}, timeout=40)

        def ref() -> str:
            wf = cluster.get(f"{API}/agentworkflows", "coder") or {}
            return str((wf.get("status") or {}).get("graphRef", ""))

        await cluster.wait_for("status names the document", lambda: ref().startswith("redis/saga:g:"))

        # Storage switched to configMap: the bundle gets the graph, the store loses it.
        await cluster.patch(
            API, "agentworkflows", "coder", {"metadata": {"generation": 2}, "spec": {"storage": None}}
        )
        await cluster.wait_for(
            "bundle key",
            lambda: "claude-code.json" in (cluster.get("v1/configmaps", "saga-graphs") or {}).get("data", {}),
        )
        await cluster.wait_for("store document deleted", lambda: stored() == {})
        assert r.exists("saga:g:claude-code") == 0

        # Back to redis, then the workflow is deleted: the document goes with it.
        await cluster.patch(
            API,
            "agentworkflows",
            "coder",
            {"metadata": {"generation": 3}, "spec": {"storage": {"type": "redis"}}},
        )
        await cluster.wait_for("graph back in the store", lambda: stored() == {b"claude-code": b"1"})
        await cluster.delete(API, "agentworkflows", "coder")
        await cluster.wait_for("workflow gone", lambda: cluster.get(f"{API}/agentworkflows", "coder") is None)
        assert stored() == {}
        assert r.exists("saga:g:claude-code") == 0
    r.close()
