"""Shared pieces of the pure reconcile functions: API names, labels, conditions, errors.

Every reconcile function takes the custom resource as a plain ``dict`` (what the API server
returns) and returns plain ``dict`` manifests, so the same code runs under kopf, in tests and
in ``saga operator render``. Nothing here reads the clock: callers pass ``now`` (an RFC 3339
string) for condition transition times.

Conditions follow the Kubernetes convention (``type``, ``status`` ``"True"``/``"False"``/
``"Unknown"``, ``reason`` in CamelCase, ``message`` for people, ``lastTransitionTime``,
``observedGeneration``). :func:`set_condition` keeps ``lastTransitionTime`` when the status
did not change, so re-running a reconcile with the same inputs yields the same status
(idempotence: the handlers then patch nothing new).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

GROUP = "saga.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

# Labels on every object the operator creates.
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "saga-operator"
LABEL_NAME = "app.kubernetes.io/name"
LABEL_INSTANCE = "app.kubernetes.io/instance"
LABEL_COMPONENT = "app.kubernetes.io/component"
# Labels the scheduler discovers things by.
LABEL_REPLICA_POOL = "saga.dev/replica-pool"  # pods and services of a ReplicaPool
LABEL_ROLE = "saga.dev/role"  # "replica" | "agent-graph" | "tenant-policy"
LABEL_AGENT_TYPE = "saga.dev/agent-type"
LABEL_TENANT = "saga.dev/tenant"
ANNOTATION_GRAPH_VERSION = "saga.dev/graph-version"
ANNOTATION_GRAPH_DIGEST = "saga.dev/graph-digest"
ANNOTATION_SPEC_HASH = "saga.dev/spec-hash"

Json = dict[str, Any]

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


@dataclass(frozen=True, slots=True)
class Invalid:
    """An invalid spec: a permanent error until the user changes the resource.

    ``field`` is the path of the offending field (``spec.replicas``), ``message`` says what
    is wrong and what to do about it.
    """

    field: str
    message: str
    reason: str = "InvalidSpec"

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


def dns_label_ok(name: str) -> bool:
    return len(name) <= 63 and bool(_DNS1123_LABEL.match(name))


def dns_subdomain_ok(name: str) -> bool:
    return 0 < len(name) <= 253 and all(dns_label_ok(part) for part in name.split("."))


def label_value_ok(value: str) -> bool:
    return len(value) <= 63 and bool(_LABEL_VALUE.match(value))


def meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    m = obj.get("metadata") or {}
    return m if isinstance(m, Mapping) else {}


def spec_of(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    s = obj.get("spec") or {}
    return s if isinstance(s, Mapping) else {}


def owner_reference(owner: Mapping[str, Any]) -> Json:
    """An ``ownerReference`` to ``owner`` (controller, blocks owner deletion)."""
    m = meta(owner)
    return {
        "apiVersion": str(owner.get("apiVersion", API_VERSION)),
        "kind": str(owner.get("kind", "")),
        "name": str(m.get("name", "")),
        "uid": str(m.get("uid", "")),
        "controller": True,
        "blockOwnerDeletion": True,
    }


def child_metadata(
    owner: Mapping[str, Any],
    name: str,
    labels: Mapping[str, str],
    annotations: Mapping[str, str] | None = None,
) -> Json:
    """Metadata of an object owned by ``owner``: same namespace, owner reference, labels."""
    m = meta(owner)
    out: Json = {
        "name": name,
        "namespace": str(m.get("namespace", "default")),
        "labels": dict(labels),
        "ownerReferences": [owner_reference(owner)],
    }
    if annotations:
        out["annotations"] = dict(annotations)
    return out


def stable_hash(value: Any) -> str:
    """Short content hash of a JSON-able value (stable across runs and Python versions)."""
    blob = json.dumps(value, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def condition(
    type_: str, ok: bool | None, reason: str, message: str, *, now: str, generation: int | None = None
) -> Json:
    status = "Unknown" if ok is None else ("True" if ok else "False")
    c: Json = {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": now,
    }
    if generation is not None:
        c["observedGeneration"] = generation
    return c


def set_condition(existing: Sequence[Mapping[str, Any]] | None, new: Json) -> list[Json]:
    """``existing`` with ``new`` replacing the condition of the same type.

    The previous ``lastTransitionTime`` is kept when the status is unchanged.
    """
    out: list[Json] = []
    replaced = False
    for c in existing or ():
        if c.get("type") == new["type"]:
            merged = dict(new)
            if c.get("status") == new["status"] and c.get("lastTransitionTime"):
                merged["lastTransitionTime"] = c["lastTransitionTime"]
            out.append(merged)
            replaced = True
        else:
            out.append(dict(c))
    if not replaced:
        out.append(dict(new))
    return out


def merge_conditions(existing: Sequence[Mapping[str, Any]] | None, *new: Json) -> list[Json]:
    out = [dict(c) for c in existing or ()]
    for c in new:
        out = set_condition(out, c)
    return out


def invalid_status(
    obj: Mapping[str, Any], invalid: Invalid, *, now: str, condition_type: str = "Ready"
) -> Json:
    """Status for a resource whose spec is invalid."""
    generation = _generation(obj)
    prev = obj.get("status") or {}
    conds = merge_conditions(
        prev.get("conditions") if isinstance(prev, Mapping) else None,
        condition(condition_type, False, invalid.reason, str(invalid), now=now, generation=generation),
    )
    return {"conditions": conds, "observedGeneration": generation, "phase": "Invalid"}


def _generation(obj: Mapping[str, Any]) -> int | None:
    g = meta(obj).get("generation")
    return int(g) if isinstance(g, int) else None


def generation_of(obj: Mapping[str, Any]) -> int | None:
    return _generation(obj)


def as_int(spec: Mapping[str, Any], key: str, default: int, path: str, *, minimum: int = 0) -> int | Invalid:
    v = spec.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int):
        return Invalid(f"{path}.{key}", f"must be an integer, got {v!r}")
    if v < minimum:
        return Invalid(f"{path}.{key}", f"must be >= {minimum}, got {v}")
    return v


def as_number(
    spec: Mapping[str, Any], key: str, default: float | None, path: str, *, positive: bool = False
) -> float | Invalid | None:
    v = spec.get(key, default)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float):
        return Invalid(f"{path}.{key}", f"must be a number, got {v!r}")
    if positive and v <= 0:
        return Invalid(f"{path}.{key}", f"must be > 0, got {v}")
    if v < 0:
        return Invalid(f"{path}.{key}", f"must be >= 0, got {v}")
    return float(v)
