"""The Helm chart: render (Helm SDK) with default and non-default values, lint, validate every
manifest offline (kubernetes-validate --strict), sample CRs against the CRDs, bad values rejected."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

helm = pytest.importorskip("helm_python", reason="helm-python-sdk is a dev dependency")

pytestmark = pytest.mark.integration

CHART = Path(__file__).resolve().parents[3] / "deploy" / "helm" / "saga"
KUBE_VERSION = "1.30.0"
# Kinds from the Prometheus Operator: no schema in kubernetes-validate; checked structurally below.
MONITORING_KINDS = {"ServiceMonitor", "PrometheusRule"}

VALUE_SETS: dict[str, dict[str, Any]] = {
    "default": {},
    "namespaced-operator-external-redis": {
        "operator": {"watchNamespaces": ["ml", "agents"], "resyncIntervalSeconds": 30},
        "redis": {"enabled": False, "externalUrl": "redis://redis.infra:6379/2"},
        "scheduler": {"replicas": 3, "replicaNamespace": "ml", "anonymousTenant": None},
    },
    "monitoring-on": {
        "metrics": {
            "serviceMonitor": {"enabled": True, "labels": {"release": "kps"}},
            "prometheusRule": {"enabled": True},
        },
        "grafana": {"dashboards": {"namespace": "monitoring", "labelValue": "true"}},
    },
    "memory-state-custom-ports": {
        "redis": {"enabled": False},
        "scheduler": {
            "ports": {"grpc": 9000, "http": 9001, "metrics": 9002},
            "service": {"type": "LoadBalancer"},
            "tenants": [
                {
                    "name": "acme",
                    "weight": 2,
                    "sloSeconds": 300,
                    "deadlineFactor": 2,
                    "attainmentTarget": 0.95,
                    "ttftSeconds": 1.5,
                    "maxActiveSessions": 40,
                    "maxCallsPerSecond": 2.5,
                    "maxKvTokens": 1000000,
                },
                {"name": "globex"},
            ],
            "anonymousTenant": "acme",
            "extraConfig": {"limits": {"max_prompt_tokens": 65536}},
        },
        "image": {"tag": "v9.9.9"},
    },
    "scheduler-only": {"operator": {"enabled": False}, "grafana": {"dashboards": {"enabled": False}}},
    "kv-events-on": {"scheduler": {"kvEvents": {"enabled": True}}},
}


def render(values: dict[str, Any]) -> list[dict[str, Any]]:
    with helm.Chart.load(CHART) as chart:
        out = chart.render(values, name="saga", namespace="saga-system")
    docs: list[dict[str, Any]] = []
    for name, text in out.items():
        if name.endswith("NOTES.txt"):
            continue
        docs.extend(d for d in yaml.safe_load_all(text) if d)
    return docs


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_render_and_validate_strict(name: str) -> None:
    docs = render(VALUE_SETS[name])
    assert docs
    for doc in docs:
        if doc["kind"] in MONITORING_KINDS:
            assert doc["apiVersion"] == "monitoring.coreos.com/v1"
            assert doc["spec"]
            continue
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)


def test_lint_default_and_strict() -> None:
    for values in VALUE_SETS.values():
        report = helm.lint(str(CHART), values, strict=True, kube_version=f"v{KUBE_VERSION}")
        errors = [m for m in report["messages"] if m["severity"] >= 2] + report["errors"]
        assert not errors, errors


def test_default_objects() -> None:
    docs = render({})
    kinds = sorted(d["kind"] for d in docs)
    assert kinds.count("Deployment") == 3  # operator, scheduler, redis
    assert "ClusterRole" in kinds
    assert "ServiceMonitor" not in kinds
    svc = next(d for d in by_kind(docs, "Service") if d["metadata"]["name"] == "saga-scheduler")
    assert {p["name"]: p["port"] for p in svc["spec"]["ports"]} == {
        "grpc": 50051,
        "http": 8000,
        "metrics": 9464,
    }
    dashboards = [
        d for d in by_kind(docs, "ConfigMap") if d["metadata"]["labels"].get("grafana_dashboard") == "1"
    ]
    assert len(dashboards) == 3
    op = next(d for d in by_kind(docs, "Deployment") if d["metadata"]["name"] == "saga-operator")
    args = op["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--redis-url=redis://saga-redis.saga-system.svc:6379/0" in args


def test_operator_rbac_is_least_privilege() -> None:
    docs = render({})
    role = by_kind(docs, "ClusterRole")[0]
    verbs = {
        (g, r): set(rule["verbs"])
        for rule in role["rules"]
        for g in rule["apiGroups"]
        for r in rule["resources"]
    }
    assert verbs[("", "secrets")] == {"get"}
    assert "list" not in verbs[("apps", "deployments")]
    assert "*" not in str(role["rules"])
    assert verbs[("saga.dev", "replicapools/status")] == {"get", "patch", "update"}
    ns_docs = render(VALUE_SETS["namespaced-operator-external-redis"])
    assert not by_kind(ns_docs, "ClusterRole")
    assert sorted(
        r["metadata"]["namespace"] for r in by_kind(ns_docs, "Role") if "operator" in r["metadata"]["name"]
    ) == [
        "agents",
        "ml",
        "saga-system",  # the graph and tenant bundles only: create, and get/patch by name
    ]
    bundle_role = next(
        r for r in by_kind(ns_docs, "Role") if r["metadata"]["name"] == "saga-operator-bundles"
    )
    assert bundle_role["metadata"]["namespace"] == "saga-system"
    assert {tuple(r["verbs"]): r.get("resourceNames") for r in bundle_role["rules"]} == {
        ("create",): None,
        ("get", "patch"): ["saga-graphs", "saga-tenants"],
    }
    only_tenants = render({**VALUE_SETS["namespaced-operator-external-redis"], "graphs": {"enabled": False}})
    role = next(r for r in by_kind(only_tenants, "Role") if r["metadata"]["name"] == "saga-operator-bundles")
    assert role["rules"][1]["resourceNames"] == ["saga-tenants"]


def _scheduler(docs: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    dep = next(d for d in by_kind(docs, "Deployment") if d["metadata"]["name"] == "saga-scheduler")
    cm = next(d for d in by_kind(docs, "ConfigMap") if d["metadata"]["name"] == "saga-scheduler")
    return dep["spec"]["template"]["spec"], yaml.safe_load(cm["data"]["config.yaml"])["spec"]


def test_scheduler_mounts_the_graph_bundle_the_operator_writes() -> None:
    docs = render({})
    pod, spec = _scheduler(docs)
    vol = next(v for v in pod["volumes"] if v["name"] == "graphs")
    assert vol["configMap"] == {"name": "saga-graphs", "optional": True}
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "graphs")
    assert (mount["mountPath"], mount["readOnly"]) == ("/var/lib/saga/graphs", True)
    assert spec["graphs"] == {"directory": "/var/lib/saga/graphs", "from_store": True, "poll_interval_s": 10}
    op = next(d for d in by_kind(docs, "Deployment") if d["metadata"]["name"] == "saga-operator")
    args = op["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--graph-bundle=saga-graphs" in args
    assert "--graph-bundle-namespace=saga-system" in args

    pod, spec = _scheduler(
        render({"redis": {"enabled": False}, "graphs": {"mountPath": "/g", "pollIntervalSeconds": 3}})
    )
    assert spec["graphs"] == {"directory": "/g", "from_store": False, "poll_interval_s": 3}

    docs = render({"graphs": {"enabled": False}})
    pod, spec = _scheduler(docs)
    assert "graphs" not in spec
    assert all(v["name"] != "graphs" for v in pod["volumes"])
    op = next(d for d in by_kind(docs, "Deployment") if d["metadata"]["name"] == "saga-operator")
    assert not any(
        a.startswith("--graph-bundle") for a in op["spec"]["template"]["spec"]["containers"][0]["args"]
    )


def test_scheduler_mounts_the_tenant_bundle_the_operator_writes() -> None:
    docs = render({})
    pod, spec = _scheduler(docs)
    vol = next(v for v in pod["volumes"] if v["name"] == "tenants")
    assert vol["configMap"] == {"name": "saga-tenants", "optional": True}
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "tenants")
    assert (mount["mountPath"], mount["readOnly"]) == ("/var/lib/saga/tenants", True)
    assert spec["tenant_policies"] == {"directory": "/var/lib/saga/tenants", "poll_interval_s": 10}
    op = next(d for d in by_kind(docs, "Deployment") if d["metadata"]["name"] == "saga-operator")
    args = op["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--tenant-bundle=saga-tenants" in args
    assert "--tenant-bundle-namespace=saga-system" in args

    docs = render({"tenantPolicies": {"enabled": False}})
    pod, spec = _scheduler(docs)
    assert "tenant_policies" not in spec
    assert all(v["name"] != "tenants" for v in pod["volumes"])
    op = next(d for d in by_kind(docs, "Deployment") if d["metadata"]["name"] == "saga-operator")
    assert not any(
        a.startswith("--tenant-bundle") for a in op["spec"]["template"]["spec"]["containers"][0]["args"]
    )


def test_scheduler_config_is_a_valid_schedulerconfig(tmp_path: Path) -> None:
    from saga.service.config import load_file

    for name, values in VALUE_SETS.items():
        if name == "scheduler-only" or not values.get("scheduler", {}).get("enabled", True):
            continue
        cm = next(
            d for d in by_kind(render(values), "ConfigMap") if d["metadata"]["name"] == "saga-scheduler"
        )
        path = tmp_path / f"{name}.yaml"
        path.write_text(cm["data"]["config.yaml"])
        cfg = load_file(str(path))  # raises ConfigError naming the field when invalid
        assert cfg.spec.listen.metrics.endswith(":9464") or name == "memory-state-custom-ports"
    acme = load_file(str(tmp_path / "memory-state-custom-ports.yaml")).tenant("acme")
    assert acme is not None
    assert (acme.weight, acme.slo_s, acme.deadline_factor, acme.attainment_target, acme.ttft_s) == (
        2.0,
        300.0,
        2.0,
        0.95,
        1.5,
    )
    assert (acme.max_active_sessions, acme.max_calls_per_second, acme.max_kv_tokens) == (40, 2.5, 1000000)
    custom = yaml.safe_load((tmp_path / "memory-state-custom-ports.yaml").read_text())
    assert custom["spec"]["state"] == {"backend": "memory"}
    assert custom["spec"]["limits"] == {"max_prompt_tokens": 65536}


def test_scheduler_kv_events_match_what_replicapool_pods_publish(tmp_path: Path) -> None:
    from saga.cli import main
    from saga.operator.reconcile import replicapool
    from saga.operator.reconcile.common import Invalid
    from saga.service.config import load_file

    _, spec = _scheduler(render({}))
    assert "kv_events" not in spec["replicas"]  # off by default

    # The sample pool (default kvEventsPort, a kvEventsReplayPort) publishes where the chart's
    # defaults subscribe, and serves replays on the Service port the scheduler looks for.
    pool = replicapool.desired(yaml.safe_load((CHART / "samples" / "replicapool.yaml").read_text()))
    assert not isinstance(pool, Invalid)
    cmd = pool.workload["spec"]["template"]["spec"]["containers"][0]["command"]
    published = json.loads(cmd[cmd.index("--kv-events-config") + 1])
    svc_ports = {p["name"]: p["port"] for p in pool.service["spec"]["ports"]}
    _, spec = _scheduler(render(VALUE_SETS["kv-events-on"]))
    kv = spec["replicas"]["kv_events"]
    assert kv == {
        "discovered_port": int(published["endpoint"].rsplit(":", 1)[1]),
        "topic": published["topic"],
        "discovered_replay_port_name": "kv-replay",
    }
    replay_port = svc_ports[kv["discovered_replay_port_name"]]
    assert published["replay_endpoint"] == f"tcp://*:{replay_port}"
    assert spec["replicas"]["kubernetes"]["label_selector"] == "saga.dev/role=replica"

    # A custom port, and extraConfig still merges into the block; `saga serve --check` accepts it.
    values = {
        "scheduler": {
            "kvEvents": {"enabled": True, "port": 6000, "topic": "kv", "replayPortName": ""},
            "extraConfig": {"replicas": {"kv_events": {"replay_timeout_s": 2}}},
        }
    }
    cm = next(d for d in by_kind(render(values), "ConfigMap") if d["metadata"]["name"] == "saga-scheduler")
    path = tmp_path / "config.yaml"
    path.write_text(cm["data"]["config.yaml"])
    assert main(["serve", "--check", "--config", str(path)]) == 0
    got = load_file(path).spec.replicas.kv_events
    assert (got.discovered_port, got.topic, got.replay_timeout_s, got.endpoints) == (6000, "kv", 2.0, {})
    assert got.discovered_replay_port_name == ""  # replays off


def test_replica_keys_come_from_a_secret_never_the_configmap(tmp_path: Path) -> None:
    from saga.service.app import client_settings
    from saga.service.backend.api import ClientTimeouts
    from saga.service.config import load_file

    pod, spec = _scheduler(render({}))
    assert "env" not in pod["containers"][0]
    assert "api_key_env" not in spec["replicas"]
    keys = {"secretName": "sglang-keys", "apiKey": "user", "adminApiKey": "admin"}
    docs = render({"scheduler": {"replicaKeys": keys}})
    pod, spec = _scheduler(docs)
    env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in pod["containers"][0]["env"]}
    assert env == {
        "SAGA_REPLICA_API_KEY": {"name": "sglang-keys", "key": "user"},
        "SAGA_REPLICA_ADMIN_API_KEY": {"name": "sglang-keys", "key": "admin"},
    }
    cm = next(d for d in by_kind(docs, "ConfigMap") if d["metadata"]["name"] == "saga-scheduler")
    assert "admin" not in cm["data"]["config.yaml"].replace("admin_api_key_env", "")
    path = tmp_path / "config.yaml"
    path.write_text(cm["data"]["config.yaml"])
    replicas = load_file(path).spec.replicas
    # the variables the Deployment sets are the ones the config names
    got = client_settings(
        replicas, ClientTimeouts(), {"SAGA_REPLICA_API_KEY": "u", "SAGA_REPLICA_ADMIN_API_KEY": "a"}
    )
    assert (got.api_key, got.admin_api_key) == ("u", "a")


@pytest.mark.parametrize(
    "bad",
    [
        {"operator": {"replicas": 2}},
        {"scheduler": {"ports": {"grpc": 70000, "http": 8000, "metrics": 9464}}},
        {"redis": {"externalUrl": "http://not-redis"}},
        {"scheduler": {"tenants": []}},
        {"scheduler": {"tenants": [{"name": "a", "weight": 0}]}},
        {"scheduler": {"tenants": [{"name": "default", "deadlineFactor": 0.5}]}},
        {"scheduler": {"tenants": [{"name": "default", "maxActiveSessions": 1.5}]}},
        {"scheduler": {"tenants": [{"name": "default", "maxKvTokens": -1}]}},
        {"metrics": {"prometheusRule": {"sloAttainmentTarget": 99}}},
        {"image": {"pullPolicy": "Sometimes"}},
        {"schedulr": {}},  # typo at the top level
        {"operator": {"watchNamespaces": ["Bad_NS"]}},
        {"graphs": {"mountPath": "relative/path"}},
        {"graphs": {"pollIntervalSeconds": 0}},
        {"tenantPolicies": {"mountPath": "relative/path"}},
        {"tenantPolicies": {"pollIntervalSeconds": 0}},
        {"scheduler": {"kvEvents": {"port": 0}}},
        {"scheduler": {"kvEvents": {"enabled": "yes"}}},
        {"scheduler": {"kvEvents": {"prot": 5557}}},
        {"scheduler": {"kvEvents": {"replayPortName": "Kv_Replay"}}},
        {"scheduler": {"replicaKeys": {"secretName": "Bad_Secret"}}},
        {"scheduler": {"replicaKeys": {"apiKey": ""}}},
        {"scheduler": {"replicaKeys": {"token": "x"}}},
    ],
)
def test_invalid_values_rejected_by_schema(bad: dict[str, Any]) -> None:
    with helm.Chart.load(CHART) as chart:
        with pytest.raises(helm.HelmError):
            chart.validate_schema(chart.merge_values(bad))
        with pytest.raises(helm.HelmError):
            chart.render(bad, name="saga", namespace="saga-system")


def test_anonymous_tenant_must_be_configured() -> None:
    bad = {"scheduler": {"tenants": [{"name": "acme"}]}}
    with helm.Chart.load(CHART) as chart, pytest.raises(helm.HelmError, match="anonymousTenant"):
        chart.render(bad, name="saga", namespace="saga-system")


def crds() -> dict[str, dict[str, Any]]:
    out = {}
    for path in sorted((CHART / "crds").glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        out[crd["spec"]["names"]["kind"]] = crd
    return out


def test_crds_are_valid_and_have_status_and_columns() -> None:
    found = crds()
    assert set(found) == {"ReplicaPool", "AgentWorkflow", "TenantPolicy"}
    for crd in found.values():
        kubernetes_validate.validate(crd, KUBE_VERSION, strict=True)
        v = crd["spec"]["versions"][0]
        assert crd["spec"]["group"] == "saga.dev"
        assert v["name"] == "v1alpha1"
        assert "status" in v["subresources"]
        assert v["additionalPrinterColumns"]
        assert "conditions" in v["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]


def crd_validator(kind: str) -> jsonschema.Draft4Validator:
    schema = crds()[kind]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return jsonschema.Draft4Validator(schema)  # OpenAPI v3.0 schemas use draft-4 keywords


@pytest.mark.parametrize("sample", sorted((CHART / "samples").glob("*.yaml")), ids=lambda p: p.name)
def test_samples_validate_against_crds(sample: Path) -> None:
    doc = yaml.safe_load(sample.read_text())
    crd_validator(doc["kind"]).validate(doc)


@pytest.mark.parametrize(
    ("kind", "spec"),
    [
        ("ReplicaPool", {"model": "m"}),  # image missing
        ("ReplicaPool", {"image": "i", "model": "m", "replicas": -1}),
        ("ReplicaPool", {"image": "i", "model": "m", "workload": "DaemonSet"}),
        ("ReplicaPool", {"image": "i", "model": "m", "kvEventsReplayPort": 0}),
        ("ReplicaPool", {"image": "i", "model": "m", "kvEventsReplayPort": 70000}),
        ("ReplicaPool", {"image": "i", "model": "m", "kvEventsReplayPort": "5600"}),
        ("AgentWorkflow", {"agentType": "a", "source": {}}),
        ("AgentWorkflow", {"agentType": "a", "source": {"configMap": {"name": "c"}, "redis": {"key": "k"}}}),
        ("TenantPolicy", {"weight": 0, "apiKeySecretRef": {"name": "s"}}),
        ("TenantPolicy", {"slo": {"attainmentTarget": 1.5}, "apiKeySecretRef": {"name": "s"}}),
        ("TenantPolicy", {"weight": 1}),  # secret ref missing
    ],
)
def test_invalid_custom_resources_rejected_by_crd_schema(kind: str, spec: dict[str, Any]) -> None:
    doc = {"apiVersion": "saga.dev/v1alpha1", "kind": kind, "metadata": {"name": "x"}, "spec": spec}
    with pytest.raises(jsonschema.ValidationError):
        crd_validator(kind).validate(doc)
