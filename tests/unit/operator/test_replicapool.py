"""Pure ReplicaPool reconcile: desired objects, flags, labels, status, invalid specs."""

from __future__ import annotations

import json
from typing import Any

import pytest

from saga.operator.reconcile import replicapool
from saga.operator.reconcile.common import Invalid

pytestmark = pytest.mark.unit

NOW = "2026-01-01T00:00:00Z"


def pool(**spec: Any) -> dict[str, Any]:
    base = {"image": "lmsysorg/sglang:v0.5.4", "model": "/models/llama"}
    base.update(spec)
    return {
        "apiVersion": "saga.dev/v1alpha1",
        "kind": "ReplicaPool",
        "metadata": {"name": "pool-a", "namespace": "ml", "uid": "uid-1", "generation": 3},
        "spec": base,
    }


def test_default_pool_renders_deployment_and_headless_service() -> None:
    want = replicapool.desired(pool())
    assert not isinstance(want, Invalid)
    d, svc = want.workload, want.service
    assert d["kind"] == "Deployment"
    assert d["spec"]["replicas"] == 1
    assert d["metadata"]["namespace"] == "ml"
    owner = d["metadata"]["ownerReferences"][0]
    assert owner == {
        "apiVersion": "saga.dev/v1alpha1",
        "kind": "ReplicaPool",
        "name": "pool-a",
        "uid": "uid-1",
        "controller": True,
        "blockOwnerDeletion": True,
    }
    assert svc["spec"]["clusterIP"] == "None"
    assert svc["spec"]["selector"] == {"saga.dev/role": "replica", "saga.dev/replica-pool": "pool-a"}
    assert d["spec"]["selector"]["matchLabels"] == svc["spec"]["selector"]
    pod_labels = d["spec"]["template"]["metadata"]["labels"]
    assert pod_labels["saga.dev/replica-pool"] == "pool-a"
    assert {p["name"] for p in svc["spec"]["ports"]} == {"http", "kv-events"}


def test_saga_flags_always_present() -> None:
    want = replicapool.desired(
        pool(extraArgs=["--mem-fraction-static", "0.85"], radixEvictionPolicy="priority")
    )
    assert not isinstance(want, Invalid)
    cmd = want.workload["spec"]["template"]["spec"]["containers"][0]["command"]
    for flag in ("--enable-metrics", "--enable-session-radix-cache", "--enable-priority-scheduling"):
        assert flag in cmd
    kv = json.loads(cmd[cmd.index("--kv-events-config") + 1])
    assert kv == {"publisher": "zmq", "topic": "kv-events", "endpoint": "tcp://*:5557"}
    assert cmd[cmd.index("--model-path") + 1] == "/models/llama"
    assert cmd[cmd.index("--radix-eviction-policy") + 1] == "priority"
    assert cmd[-2:] == ["--mem-fraction-static", "0.85"]


def test_gpus_and_tensor_parallel() -> None:
    want = replicapool.desired(pool(gpusPerReplica=4, tensorParallel=4, replicas=3))
    assert not isinstance(want, Invalid)
    c = want.workload["spec"]["template"]["spec"]["containers"][0]
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 4
    assert c["command"][c["command"].index("--tp-size") + 1] == "4"
    assert want.workload["spec"]["replicas"] == 3


def test_statefulset_uses_service_name() -> None:
    want = replicapool.desired(pool(workload="StatefulSet"))
    assert not isinstance(want, Invalid)
    assert want.workload["kind"] == "StatefulSet"
    assert want.workload["spec"]["serviceName"] == want.service["metadata"]["name"]


def test_desired_is_deterministic_and_scaling_keeps_pod_template() -> None:
    a = replicapool.desired(pool(replicas=1))
    b = replicapool.desired(pool(replicas=5))
    c = replicapool.desired(pool(image="lmsysorg/sglang:v0.5.5"))
    assert not isinstance(a, Invalid)
    assert not isinstance(b, Invalid)
    assert not isinstance(c, Invalid)
    assert a == replicapool.desired(pool(replicas=1))
    assert a.workload["spec"]["template"] == b.workload["spec"]["template"]
    assert a.workload["spec"]["template"] != c.workload["spec"]["template"]


@pytest.mark.parametrize(
    ("spec", "field", "words"),
    [
        ({"image": ""}, "spec.image", "image"),
        ({"model": None}, "spec.model", "--model-path"),
        ({"replicas": -1}, "spec.replicas", ">= 0"),
        ({"gpusPerReplica": 2, "tensorParallel": 4}, "spec.tensorParallel", "raise gpusPerReplica"),
        ({"gpusPerReplica": 6, "tensorParallel": 4}, "spec.tensorParallel", "multiple"),
        ({"workload": "DaemonSet"}, "spec.workload", "Deployment, StatefulSet"),
        ({"extraArgs": ["--disable-radix-cache"]}, "spec.extraArgs[0]", "radix cache"),
        ({"extraArgs": ["--port=8000"]}, "spec.extraArgs[0]", "set by the operator"),
        ({"kvEventsPort": 30000}, "spec.kvEventsPort", "differ"),
        ({"port": 70000}, "spec.port", "1..65535"),
        ({"radixEvictionPolicy": "fifo"}, "spec.radixEvictionPolicy", "lru"),
    ],
)
def test_invalid_specs_name_field_and_fix(spec: dict[str, Any], field: str, words: str) -> None:
    got = replicapool.desired(pool(**spec))
    assert isinstance(got, Invalid)
    assert got.field == field
    assert words in got.message


def test_invalid_name() -> None:
    obj = pool()
    obj["metadata"]["name"] = "Bad_Name"
    got = replicapool.desired(obj)
    assert isinstance(got, Invalid)
    assert got.field == "metadata.name"


def test_status_ready_and_progressing() -> None:
    obj = pool(replicas=2)
    st = replicapool.status(obj, {"status": {"readyReplicas": 1}}, now=NOW)
    assert st["readyReplicas"] == 1
    assert st["phase"] == "Progressing"
    ready = st["conditions"][0]
    assert (ready["type"], ready["status"], ready["reason"]) == ("Ready", "False", "ReplicasNotReady")
    obj["status"] = st
    st2 = replicapool.status(
        obj, {"status": {"readyReplicas": 2, "availableReplicas": 2}}, now="2026-01-02T00:00:00Z"
    )
    c = st2["conditions"][0]
    assert (c["status"], c["reason"], c["lastTransitionTime"]) == (
        "True",
        "AllReplicasReady",
        "2026-01-02T00:00:00Z",
    )
    obj["status"] = st2
    st3 = replicapool.status(obj, {"status": {"readyReplicas": 2}}, now="2026-01-03T00:00:00Z")
    # Same status: transition time kept (idempotent re-reconcile).
    assert st3["conditions"][0]["lastTransitionTime"] == "2026-01-02T00:00:00Z"
    assert st3["observedGeneration"] == 3


def test_status_without_workload() -> None:
    st = replicapool.status(pool(), None, now=NOW)
    assert st["phase"] == "Pending"
    assert st["conditions"][0]["reason"] == "WorkloadMissing"
