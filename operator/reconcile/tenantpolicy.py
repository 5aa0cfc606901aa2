"""``TenantPolicy``: a tenant's fair-share weight, SLO targets, quotas and API-key Secret.

Reconcile checks the spec, resolves the Secret that holds the tenant's API key and renders a
ConfigMap ``saga-tenant-<name>`` (labels ``saga.dev/role=tenant-policy``,
``saga.dev/tenant=<tenant>``) holding the normalized policy as ``tenant.json`` (the
policy's own record, owned by it, for ``kubectl``), **and** the same document as the key
``<tenant>.json`` of the **tenant bundle** (:func:`bundle_patch`): one ConfigMap with a fixed
name (the chart's ``<release>-tenants``) in the scheduler's namespace, labelled
``saga.dev/role=tenant-policy-bundle``, which the chart mounts at the scheduler's
``spec.tenant_policies.directory``; the scheduler re-reads it every poll and applies weights
and SLOs without a restart (``saga.service.tenants_reload``). Each key's writer is recorded in
the annotation ``tenants.saga.dev/<tenant>`` (``<ns>/<name>``): a second policy for the same
tenant does not take the key over, and deleting a policy (or renaming its tenant, or losing
its Secret) removes only its own key (:func:`bundle_removal`); both use the shared bundle
helpers of :mod:`saga.operator.reconcile.bundle`. An invalid spec edit leaves the
key as it was (the last good policy stays in force). The API key itself never leaves the
Secret (the documents name the Secret and key, and carry a hash of the key so the scheduler
notices a rotation).

Spec fields (defaults and why):

- ``tenant``: tenant id the SDK sends (default: the resource name);
- ``weight`` (1.0): AFS share; urgency is ``weight · pending_work / time_to_deadline``;
- ``slo.completionTimeSeconds``: task completion target (optional; without it the deadline
  is ``deadlineFactor`` × the AEG's expected completion time);
- ``slo.deadlineFactor`` (1.5): the paper's deadline = submit + 1.5 × expected completion;
- ``slo.attainmentTarget`` (0.99): fraction of tasks that must meet the SLO (alerts fire
  below it);
- ``slo.ttftSeconds``: optional time-to-first-token target per call;
- ``quotas.maxActiveSessions``, ``quotas.maxCallsPerSecond``, ``quotas.maxKVTokens``
  (0 or absent = unlimited): admission control rejects beyond them;
- ``apiKeySecretRef.name`` (required), ``apiKeySecretRef.key`` (default ``api-key``).

Conditions: ``SecretResolved`` (``SecretNotFound`` / ``SecretKeyMissing`` / ``Resolved``) and
``Ready``. A missing Secret is not a spec error: the handler retries until it appears.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from saga.operator.reconcile.bundle import Bundle
from saga.operator.reconcile.common import (
    LABEL_INSTANCE,
    LABEL_MANAGED_BY,
    LABEL_ROLE,
    LABEL_TENANT,
    MANAGED_BY,
    Invalid,
    Json,
    as_int,
    as_number,
    child_metadata,
    condition,
    dns_subdomain_ok,
    generation_of,
    label_value_ok,
    merge_conditions,
    meta,
    spec_of,
)

KIND = "TenantPolicy"
PLURAL = "tenantpolicies"
DEFAULT_SECRET_KEY = "api-key"
DEFAULT_DEADLINE_FACTOR = 1.5
DEFAULT_ATTAINMENT = 0.99
BUNDLE_ROLE = "tenant-policy-bundle"
BUNDLE_OWNER_PREFIX = "tenants.saga.dev/"  # annotation tenants.saga.dev/<tenant> = "<ns>/<name>"
_BUNDLE = Bundle(BUNDLE_ROLE, BUNDLE_OWNER_PREFIX, KIND, "one policy per tenant")


@dataclass(frozen=True, slots=True)
class TenantSpec:
    tenant: str
    weight: float
    completion_time_s: float | None
    deadline_factor: float
    attainment_target: float
    ttft_s: float | None
    max_active_sessions: int
    max_calls_per_second: float
    max_kv_tokens: int
    secret_name: str
    secret_key: str


@dataclass(frozen=True, slots=True)
class TenantResult:
    """Reconcile outcome: the status, and the ConfigMap when the policy is usable."""

    status: Json
    configmap: Json | None
    secret_ok: bool


def parse_spec(obj: Mapping[str, Any]) -> TenantSpec | Invalid:
    s = spec_of(obj)
    name = str(meta(obj).get("name", ""))
    tenant = s.get("tenant", name)
    if not isinstance(tenant, str) or not tenant or not label_value_ok(tenant):
        return Invalid("spec.tenant", f"{tenant!r} must be 1-63 characters of [A-Za-z0-9_.-]")
    weight = as_number(s, "weight", 1.0, "spec", positive=True)
    if isinstance(weight, Invalid):
        return weight
    assert weight is not None
    slo = s.get("slo") or {}
    if not isinstance(slo, Mapping):
        return Invalid("spec.slo", "must be an object")
    ct = as_number(slo, "completionTimeSeconds", None, "spec.slo", positive=True)
    if isinstance(ct, Invalid):
        return ct
    factor = as_number(slo, "deadlineFactor", DEFAULT_DEADLINE_FACTOR, "spec.slo", positive=True)
    if isinstance(factor, Invalid):
        return factor
    assert factor is not None
    if factor < 1.0:
        return Invalid(
            "spec.slo.deadlineFactor", f"must be >= 1 (a deadline before the expected end), got {factor}"
        )
    att = as_number(slo, "attainmentTarget", DEFAULT_ATTAINMENT, "spec.slo", positive=True)
    if isinstance(att, Invalid):
        return att
    assert att is not None
    if att > 1.0:
        return Invalid("spec.slo.attainmentTarget", f"is a fraction in (0, 1], got {att}; write 0.99 for 99%")
    ttft = as_number(slo, "ttftSeconds", None, "spec.slo", positive=True)
    if isinstance(ttft, Invalid):
        return ttft
    q = s.get("quotas") or {}
    if not isinstance(q, Mapping):
        return Invalid("spec.quotas", "must be an object")
    mas = as_int(q, "maxActiveSessions", 0, "spec.quotas")
    if isinstance(mas, Invalid):
        return mas
    mcps = as_number(q, "maxCallsPerSecond", 0.0, "spec.quotas")
    if isinstance(mcps, Invalid):
        return mcps
    assert mcps is not None
    mkv = as_int(q, "maxKVTokens", 0, "spec.quotas")
    if isinstance(mkv, Invalid):
        return mkv
    ref = s.get("apiKeySecretRef")
    if not isinstance(ref, Mapping) or not isinstance(ref.get("name"), str) or not ref.get("name"):
        return Invalid("spec.apiKeySecretRef.name", "name the Secret that holds this tenant's API key")
    secret_name = str(ref["name"])
    if not dns_subdomain_ok(secret_name):
        return Invalid("spec.apiKeySecretRef.name", f"{secret_name!r} is not a valid Secret name")
    key = ref.get("key", DEFAULT_SECRET_KEY)
    if not isinstance(key, str) or not key:
        return Invalid("spec.apiKeySecretRef.key", "must be a non-empty Secret data key")
    return TenantSpec(
        tenant=tenant,
        weight=weight,
        completion_time_s=ct,
        deadline_factor=factor,
        attainment_target=att,
        ttft_s=ttft,
        max_active_sessions=mas,
        max_calls_per_second=mcps,
        max_kv_tokens=mkv,
        secret_name=secret_name,
        secret_key=key,
    )


def configmap_name(obj: Mapping[str, Any]) -> str:
    return f"saga-tenant-{meta(obj).get('name', '')}"


def reconcile(
    obj: Mapping[str, Any], secret: Mapping[str, Any] | None, *, now: str
) -> TenantResult | Invalid:
    """Status and ConfigMap for a policy, given its Secret as read (``None``: not found)."""
    spec = parse_spec(obj)
    if isinstance(spec, Invalid):
        return spec
    ns = str(meta(obj).get("namespace", "default"))
    gen = generation_of(obj)
    prev = obj.get("status") or {}
    prev_conds = prev.get("conditions") if isinstance(prev, Mapping) else None
    key_digest = None
    if secret is None:
        sec = condition(
            "SecretResolved",
            False,
            "SecretNotFound",
            f"Secret {ns}/{spec.secret_name} not found: create it with "
            f"`kubectl -n {ns} create secret generic {spec.secret_name} "
            f"--from-literal={spec.secret_key}=<API key>`",
            now=now,
            generation=gen,
        )
    else:
        data = secret.get("data") or {}
        string_data = secret.get("stringData") or {}
        raw = data.get(spec.secret_key) if isinstance(data, Mapping) else None
        if raw is None and isinstance(string_data, Mapping) and spec.secret_key in string_data:
            raw = base64.b64encode(str(string_data[spec.secret_key]).encode()).decode()
        if not raw:
            keys = sorted(data) if isinstance(data, Mapping) else []
            sec = condition(
                "SecretResolved",
                False,
                "SecretKeyMissing",
                f"Secret {ns}/{spec.secret_name} has no key {spec.secret_key!r} "
                f"(it has: {', '.join(keys) or 'none'}); add it or set spec.apiKeySecretRef.key",
                now=now,
                generation=gen,
            )
        else:
            key_digest = hashlib.sha256(str(raw).encode()).hexdigest()[:16]
            sec = condition(
                "SecretResolved",
                True,
                "Resolved",
                f"API key in {spec.secret_name}/{spec.secret_key}",
                now=now,
                generation=gen,
            )
    ok = key_digest is not None
    ready = condition(
        "Ready",
        ok,
        "PolicyPublished" if ok else str(sec["reason"]),
        f"tenant {spec.tenant!r} published to ConfigMap {configmap_name(obj)}" if ok else str(sec["message"]),
        now=now,
        generation=gen,
    )
    status: Json = {
        "tenant": spec.tenant,
        "weight": spec.weight,
        "phase": "Ready" if ok else "WaitingForSecret",
        "observedGeneration": gen,
        "conditions": merge_conditions(prev_conds, sec, ready),
    }
    if not ok:
        return TenantResult(status=status, configmap=None, secret_ok=False)
    status["configMap"] = configmap_name(obj)
    return TenantResult(status=status, configmap=_configmap(obj, spec, key_digest or ""), secret_ok=True)


def policy_document(spec: TenantSpec, key_digest: str) -> Json:
    """The normalized policy the scheduler reads (units in the field names)."""
    return {
        "tenant": spec.tenant,
        "weight": spec.weight,
        "slo": {
            "completion_time_s": spec.completion_time_s,
            "deadline_factor": spec.deadline_factor,
            "attainment_target": spec.attainment_target,
            "ttft_s": spec.ttft_s,
        },
        "quotas": {
            "max_active_sessions": spec.max_active_sessions,
            "max_calls_per_second": spec.max_calls_per_second,
            "max_kv_tokens": spec.max_kv_tokens,
        },
        "api_key": {"secret": spec.secret_name, "key": spec.secret_key, "sha256_16": key_digest},
    }


def _configmap(obj: Mapping[str, Any], spec: TenantSpec, key_digest: str) -> Json:
    import json

    labels = {
        LABEL_ROLE: "tenant-policy",
        LABEL_TENANT: spec.tenant,
        LABEL_INSTANCE: str(meta(obj).get("name", "")),
        LABEL_MANAGED_BY: MANAGED_BY,
    }
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": child_metadata(obj, configmap_name(obj), labels),
        "data": {"tenant.json": json.dumps(policy_document(spec, key_digest), sort_keys=True, indent=2)},
    }


# --------------------------------------------------------------------------- tenant bundle


def bundle_key(tenant: str) -> str:
    """The bundle's key of a tenant (tenant ids are valid ConfigMap keys)."""
    return f"{tenant}.json"


def bundle_patch(
    obj: Mapping[str, Any],
    tenant: str,
    document: str,
    current: Mapping[str, Any] | None,
    *,
    name: str,
    namespace: str,
) -> tuple[Json | None, str | None]:
    """The tenant bundle's desired change for a published policy.

    Returns ``(object, conflict)``: ``object`` is the merge patch (or the ConfigMap to create)
    that sets the tenant's key to ``document`` (None when the bundle already holds it),
    ``conflict`` a message when another ``TenantPolicy`` owns the tenant's key (the bundle is
    then left alone). ``current`` is the bundle as read (None: absent).
    """
    want = {"data": {bundle_key(tenant): document}}
    what = f"tenant {tenant!r}"
    return _BUNDLE.key_patch(obj, current, want, stem=tenant, what=what, name=name, namespace=namespace)


def bundle_removal(obj: Mapping[str, Any], tenant: str, current: Mapping[str, Any] | None) -> Json | None:
    """The merge patch that removes ``obj``'s key for ``tenant`` from the bundle; None when the
    bundle holds no key written by ``obj`` for it."""
    return _BUNDLE.key_removal(obj, current, {"data": [bundle_key(tenant)]}, stem=tenant)


def published_tenants(obj: Mapping[str, Any]) -> list[str]:
    """Tenants whose bundle key ``obj`` may have written: its spec's and its status's (the
    tenant before a rename, or of a spec that is invalid now)."""
    out: list[str] = []
    spec = parse_spec(obj)
    if not isinstance(spec, Invalid):
        out.append(spec.tenant)
    status = obj.get("status") or {}
    prev = status.get("tenant") if isinstance(status, Mapping) else None
    if isinstance(prev, str) and prev and prev not in out:
        out.append(prev)
    return out
