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
    base = {"image": "lmsysorg/sglang:v0.5.20", "model": "/models/llama"}
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
    c = replicapool.desired(pool(image="lmsysorg/sglang:v0.5.21"))
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
        ({"kvEventsReplayPort": 0}, "spec.kvEventsReplayPort", ">= 1"),
        ({"kvEventsReplayPort": "5600"}, "spec.kvEventsReplayPort", "integer"),
        ({"kvEventsReplayPort": 65536}, "spec.kvEventsReplayPort", "1..65535"),
        ({"kvEventsReplayPort": 30000}, "spec.kvEventsReplayPort", "must differ from spec.port (30000)"),
        (
            {"kvEventsReplayPort": 5557},
            "spec.kvEventsReplayPort",
            "must differ from spec.kvEventsPort (5557)",
        ),
        ({"extraArgs": ["--kv-events-config", "{}"]}, "spec.extraArgs[0]", "kvEventsReplayPort"),
        ({"extraArgs": ["--dp-size", "two"]}, "spec.extraArgs[0]", "positive integer, got 'two'"),
        ({"extraArgs": ["--dp-size=0"]}, "spec.extraArgs[0]", "positive integer, got '0'"),
        ({"extraArgs": ["--dp-size"]}, "spec.extraArgs[0]", "positive integer, got ''"),
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


def test_replay_port_is_rendered_and_named_on_pod_and_service() -> None:
    want = replicapool.desired(pool(kvEventsReplayPort=5600))
    assert not isinstance(want, Invalid)
    c = want.workload["spec"]["template"]["spec"]["containers"][0]
    kv = json.loads(c["command"][c["command"].index("--kv-events-config") + 1])
    assert kv == {
        "publisher": "zmq",
        "topic": "kv-events",
        "endpoint": "tcp://*:5557",
        "replay_endpoint": "tcp://*:5600",  # SGLang's KVEventsConfig field, bound (a '*')
    }
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {
        "http": 30000,
        "kv-events": 5557,
        "kv-replay": 5600,
    }
    replay = next(p for p in want.service["spec"]["ports"] if p["name"] == "kv-replay")
    assert replay == {"name": "kv-replay", "port": 5600, "targetPort": "kv-replay", "protocol": "TCP"}
    # Container port names are IANA service names: at most 15 characters.
    assert all(len(p["name"]) <= 15 for p in c["ports"])
    # Absent: no replay endpoint, no port (SGLang's default), as before the field existed.
    plain = replicapool.desired(pool())
    assert not isinstance(plain, Invalid)
    c = plain.workload["spec"]["template"]["spec"]["containers"][0]
    assert "replay_endpoint" not in json.loads(c["command"][c["command"].index("--kv-events-config") + 1])
    assert [p["name"] for p in c["ports"]] == ["http", "kv-events"]
    # null (e.g. a Helm value left empty) is absent too.
    assert not isinstance(replicapool.desired(pool(kvEventsReplayPort=None)), Invalid)


def test_attention_dp_ranks_from_extra_args() -> None:
    ranks = replicapool.attention_dp_ranks
    assert ranks([]) == 1
    assert ranks(["--dp-size", "4"]) == 1  # plain DP: every worker's attn_dp_rank is 0
    assert ranks(["--dp-size", "4", "--enable-dp-attention"]) == 4
    assert ranks(["--enable-dp-attention", "--data-parallel-size=2"]) == 2
    assert ranks(["--enable-dp-attention"]) == 1


@pytest.mark.parametrize(
    ("spec", "field", "message"),
    [
        (
            {"kvEventsReplayPort": 5558},
            "spec.kvEventsReplayPort",
            "ports 5558..5559 overlap the KV event ports 5557..5558 (rank r of the 2 attention DP "
            "ranks binds the port + r); use a port below 5556 or from 5559 on",
        ),
        (
            {"kvEventsReplayPort": 5556},
            "spec.kvEventsReplayPort",
            "ports 5556..5557 overlap the KV event ports 5557..5558 (rank r of the 2 attention DP "
            "ranks binds the port + r); use a port below 5556 or from 5559 on",
        ),
        (
            {"port": 5558},
            "spec.kvEventsPort",
            "ports 5557..5558 include spec.port (5558) (rank r of the 2 attention DP ranks binds the "
            "port + r)",
        ),
        (
            {"kvEventsPort": 65535},
            "spec.kvEventsPort",
            "ports 65535..65536 go beyond 65535 (rank r of the 2 attention DP ranks binds the port + r);"
            " lower it",
        ),
        (
            {"kvEventsReplayPort": 29999},
            "spec.kvEventsReplayPort",
            "ports 29999..30000 include spec.port (30000) (rank r of the 2 attention DP ranks binds "
            "the port + r)",
        ),
    ],
)
def test_port_ranges_of_attention_dp_ranks_must_not_overlap(
    spec: dict[str, Any], field: str, message: str
) -> None:
    dp = ["--dp-size", "2", "--enable-dp-attention"]
    got = replicapool.desired(pool(gpusPerReplica=2, tensorParallel=2, extraArgs=dp, **spec))
    assert got == Invalid(field, message)
    # The same ports are fine without DP attention (one publisher per replica).
    assert not isinstance(replicapool.desired(pool(extraArgs=["--dp-size", "2"], **spec)), Invalid)
    ok = replicapool.desired(pool(gpusPerReplica=2, tensorParallel=2, extraArgs=dp, kvEventsReplayPort=5559))
    assert not isinstance(ok, Invalid)


def test_pods_get_the_unified_radix_tree_and_spec_env_may_override_it() -> None:
    # SGLang 0.5.17/0.5.18 refuse --enable-session-radix-cache without the unified radix tree
    want = replicapool.desired(pool(env=[{"name": "HF_HOME", "value": "/cache"}]))
    assert not isinstance(want, Invalid)
    env = want.workload["spec"]["template"]["spec"]["containers"][0]["env"]
    names = [e["name"] for e in env]
    assert {"name": "SGLANG_ENABLE_UNIFIED_RADIX_TREE", "value": "1"} in env
    assert names.index("SGLANG_ENABLE_UNIFIED_RADIX_TREE") < names.index("HF_HOME")  # spec.env comes last


def test_api_keys_come_from_a_secret_as_env_expansions() -> None:
    want = replicapool.desired(pool(apiKeySecret={"name": "sglang-keys", "adminKey": "admin"}))
    assert not isinstance(want, Invalid)
    c = want.workload["spec"]["template"]["spec"]["containers"][0]
    cmd = c["command"]
    assert cmd[cmd.index("--api-key") + 1] == "$(SGLANG_API_KEY)"  # Kubernetes expands it
    assert cmd[cmd.index("--admin-api-key") + 1] == "$(SGLANG_ADMIN_API_KEY)"
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in c["env"] if "valueFrom" in e}
    assert refs == {
        "SGLANG_API_KEY": {"name": "sglang-keys", "key": "api-key"},
        "SGLANG_ADMIN_API_KEY": {"name": "sglang-keys", "key": "admin"},
    }
    plain = replicapool.desired(pool())
    assert not isinstance(plain, Invalid)
    assert "--api-key" not in plain.workload["spec"]["template"]["spec"]["containers"][0]["command"]


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"apiKeySecret": "keys"}, "spec.apiKeySecret"),
        ({"apiKeySecret": {"name": "Bad_Name"}}, "spec.apiKeySecret.name"),
        ({"apiKeySecret": {"name": "k", "key": "a b"}}, "spec.apiKeySecret.key"),
        ({"apiKeySecret": {"name": "k"}, "extraArgs": ["--api-key", "x"]}, "spec.extraArgs[0]"),
    ],
)
def test_bad_api_key_secrets_are_refused(spec: dict[str, Any], field: str) -> None:
    got = replicapool.desired(pool(**spec))
    assert isinstance(got, Invalid)
    assert got.field == field
