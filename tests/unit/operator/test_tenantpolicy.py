"""Pure TenantPolicy reconcile: secret resolution conditions, the published ConfigMap, invalid specs."""

from __future__ import annotations

import json
from typing import Any

import pytest

from saga.operator.reconcile import tenantpolicy
from saga.operator.reconcile.common import Invalid

pytestmark = pytest.mark.unit
NOW = "2026-01-01T00:00:00Z"


def policy(**spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "weight": 2,
        "slo": {"completionTimeSeconds": 120, "attainmentTarget": 0.95},
        "quotas": {"maxActiveSessions": 50},
        "apiKeySecretRef": {"name": "acme-key"},
    }
    base.update(spec)
    return {
        "apiVersion": "saga.dev/v1alpha1",
        "kind": "TenantPolicy",
        "metadata": {"name": "acme", "namespace": "ml", "uid": "u2", "generation": 1},
        "spec": base,
    }


def conds(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in status["conditions"]}


def test_missing_secret_gives_clear_condition_and_no_configmap() -> None:
    r = tenantpolicy.reconcile(policy(), None, now=NOW)
    assert not isinstance(r, Invalid)
    assert r.configmap is None
    assert not r.secret_ok
    c = conds(r.status)
    assert c["SecretResolved"]["status"] == "False"
    assert c["SecretResolved"]["reason"] == "SecretNotFound"
    assert "ml/acme-key" in c["SecretResolved"]["message"]
    assert (
        "kubectl -n ml create secret generic acme-key --from-literal=api-key="
        in c["SecretResolved"]["message"]
    )
    assert c["Ready"]["status"] == "False"
    assert r.status["phase"] == "WaitingForSecret"


def test_secret_without_key() -> None:
    r = tenantpolicy.reconcile(policy(), {"data": {"token": "eA=="}}, now=NOW)
    assert not isinstance(r, Invalid)
    c = conds(r.status)["SecretResolved"]
    assert c["reason"] == "SecretKeyMissing"
    assert "token" in c["message"]


def test_resolved_secret_publishes_policy_without_the_key() -> None:
    r = tenantpolicy.reconcile(policy(), {"data": {"api-key": "c2VjcmV0"}}, now=NOW)
    assert not isinstance(r, Invalid)
    assert r.secret_ok
    assert r.configmap is not None
    assert conds(r.status)["Ready"]["status"] == "True"
    cm = r.configmap
    assert cm["metadata"]["name"] == "saga-tenant-acme"
    assert cm["metadata"]["labels"]["saga.dev/role"] == "tenant-policy"
    doc = json.loads(cm["data"]["tenant.json"])
    assert doc["tenant"] == "acme"
    assert doc["weight"] == 2.0
    assert doc["slo"]["completion_time_s"] == 120.0
    assert doc["slo"]["deadline_factor"] == 1.5
    assert doc["quotas"]["max_active_sessions"] == 50
    assert "c2VjcmV0" not in cm["data"]["tenant.json"]
    assert "secret" not in doc["api_key"]["sha256_16"]


def test_key_rotation_changes_digest() -> None:
    a = tenantpolicy.reconcile(policy(), {"data": {"api-key": "YQ=="}}, now=NOW)
    b = tenantpolicy.reconcile(policy(), {"data": {"api-key": "Yg=="}}, now=NOW)
    assert not isinstance(a, Invalid)
    assert not isinstance(b, Invalid)
    assert a.configmap != b.configmap


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"weight": 0}, "spec.weight"),
        ({"weight": "heavy"}, "spec.weight"),
        ({"slo": {"attainmentTarget": 99}}, "spec.slo.attainmentTarget"),
        ({"slo": {"deadlineFactor": 0.5}}, "spec.slo.deadlineFactor"),
        ({"slo": {"completionTimeSeconds": -3}}, "spec.slo.completionTimeSeconds"),
        ({"quotas": {"maxActiveSessions": -1}}, "spec.quotas.maxActiveSessions"),
        ({"apiKeySecretRef": {}}, "spec.apiKeySecretRef.name"),
        ({"apiKeySecretRef": {"name": "Not_A_Name"}}, "spec.apiKeySecretRef.name"),
        ({"tenant": "has space"}, "spec.tenant"),
    ],
)
def test_invalid_specs(spec: dict[str, Any], field: str) -> None:
    r = tenantpolicy.reconcile(policy(**spec), None, now=NOW)
    assert isinstance(r, Invalid)
    assert r.field == field
    assert r.message


def test_tenant_bundle_one_key_per_tenant_and_removal_only_own() -> None:
    r = tenantpolicy.reconcile(policy(), {"data": {"api-key": "c2stYWNtZQ=="}}, now=NOW)
    assert not isinstance(r, Invalid)
    assert r.configmap is not None
    text = r.configmap["data"]["tenant.json"]
    obj = policy()
    want, conflict = tenantpolicy.bundle_patch(obj, "acme", text, None, name="saga-tenants", namespace="sys")
    assert conflict is None
    assert want is not None
    assert want["metadata"]["namespace"] == "sys"
    assert want["metadata"]["labels"]["saga.dev/role"] == "tenant-policy-bundle"
    assert want["metadata"]["annotations"] == {"tenants.saga.dev/acme": "ml/acme"}
    assert want["data"] == {"acme.json": text}
    stored = {"metadata": dict(want["metadata"], name="saga-tenants", namespace="sys"), "data": want["data"]}
    # Unchanged: nothing to write.
    assert tenantpolicy.bundle_patch(obj, "acme", text, stored, name="saga-tenants", namespace="sys") == (
        None,
        None,
    )
    # Another policy for the same tenant is refused, with who owns the key.
    other = policy()
    other["metadata"]["name"] = "acme-2"
    want2, conflict2 = tenantpolicy.bundle_patch(
        other, "acme", "{}", stored, name="saga-tenants", namespace="sys"
    )
    assert want2 is None
    assert conflict2 is not None
    assert "TenantPolicy ml/acme" in conflict2
    assert tenantpolicy.bundle_removal(other, "acme", stored) is None  # not its key
    removal = tenantpolicy.bundle_removal(obj, "acme", stored)
    assert removal is not None
    assert removal["data"] == {"acme.json": None}
    assert removal["metadata"]["annotations"] == {"tenants.saga.dev/acme": None}
    assert tenantpolicy.bundle_removal(obj, "acme", None) is None


def test_published_tenants_include_the_one_before_a_rename() -> None:
    obj = policy(tenant="acme-corp")
    obj["status"] = {"tenant": "acme"}
    assert tenantpolicy.published_tenants(obj) == ["acme-corp", "acme"]
    bad = policy(weight=-1)
    bad["status"] = {"tenant": "acme"}
    assert tenantpolicy.published_tenants(bad) == ["acme"]  # an invalid spec: the status's
