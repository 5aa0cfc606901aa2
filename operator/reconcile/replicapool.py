"""``ReplicaPool``: an SGLang fleet → a Deployment (or StatefulSet) and a headless Service.

The rendered pods always run ``python3 -m sglang.launch_server`` with the flags SAGA relies
on (verified against SGLang 0.5):

- ``--enable-metrics``: the replica exports ``sglang:*`` metrics on its HTTP port;
- ``--enable-session-radix-cache``: a top-level ``session_id`` keeps a session's radix
  entries referenced across tool gaps (evicted last, dropped on ``/close_session``): this is
  how SAGA keeps KV across tool calls;
- ``--enable-priority-scheduling``: SAGA passes ``priority`` per request (AFS urgency);
- ``--kv-events-config {"publisher":"zmq","topic":"kv-events","endpoint":"tcp://*:<port>"}``:
  ``BlockStored``/``BlockRemoved`` events give the scheduler an exact view of each cache.

Flags SAGA owns (``--host``, ``--port``, ``--model-path``, ``--tp-size`` and the four above)
may not be overridden in ``spec.extraArgs``; ``--disable-radix-cache`` is refused (SAGA's KV
retention needs the radix cache). Both are reported as :class:`Invalid` with the fix.

Discovery: pods and the Service carry ``saga.dev/role=replica`` and
``saga.dev/replica-pool=<pool>``; the Service is headless (``clusterIP: None``) so its DNS
name resolves to every ready pod. The scheduler lists pods by these labels (or resolves the
Service) and talks to each replica on the ``http`` port; KV events come on ``kv-events``.

Spec fields and defaults (see the CRD for the schema):

- ``image`` (required), ``model`` (required: model path or name passed to ``--model-path``);
- ``replicas`` (default 1), ``gpusPerReplica`` (default 1; 0 only for test images),
  ``tensorParallel`` (default ``max(1, gpusPerReplica)``; must divide into the GPUs);
- ``workload``: ``Deployment`` (default) or ``StatefulSet`` (stable pod names, when replicas
  keep local state such as a host KV tier);
- ``port`` (30000, SGLang's default), ``kvEventsPort`` (5557, the ZMQ default in SGLang docs);
- ``radixEvictionPolicy`` (optional: ``lru|lfu|slru|priority|tlru``);
- ``shmSize`` (``16Gi``: NCCL and the tokenizer manager use ``/dev/shm``; the container
  runtime's 64 MiB default breaks tensor parallelism);
- ``resources``, ``env``, ``nodeSelector``, ``tolerations``, ``extraArgs``, ``podLabels``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from saga.operator.reconcile.common import (
    ANNOTATION_SPEC_HASH,
    LABEL_COMPONENT,
    LABEL_INSTANCE,
    LABEL_MANAGED_BY,
    LABEL_NAME,
    LABEL_REPLICA_POOL,
    LABEL_ROLE,
    MANAGED_BY,
    Invalid,
    Json,
    as_int,
    child_metadata,
    condition,
    dns_label_ok,
    generation_of,
    label_value_ok,
    merge_conditions,
    meta,
    spec_of,
    stable_hash,
)

KIND = "ReplicaPool"
PLURAL = "replicapools"
WORKLOAD_KINDS = ("Deployment", "StatefulSet")
EVICTION_POLICIES = ("lru", "lfu", "slru", "priority", "tlru")
DEFAULT_PORT = 30000
DEFAULT_KV_EVENTS_PORT = 5557
DEFAULT_SHM = "16Gi"

# Flags SAGA always passes (the engine side of SAGA's KV retention and observability).
REQUIRED_FLAGS: tuple[str, ...] = (
    "--enable-metrics",
    "--enable-session-radix-cache",
    "--enable-priority-scheduling",
)
# Flags the operator owns; overriding them in extraArgs is an error.
OWNED_FLAGS: frozenset[str] = frozenset(
    {
        "--host",
        "--port",
        "--model-path",
        "--model",
        "--tp",
        "--tp-size",
        "--kv-events-config",
        *REQUIRED_FLAGS,
    }
)
REFUSED_FLAGS: Mapping[str, str] = {
    "--disable-radix-cache": "SAGA keeps sessions' KV in the radix cache across tool calls; remove the flag",
}


@dataclass(frozen=True, slots=True)
class PoolSpec:
    """A validated ``ReplicaPool`` spec."""

    image: str
    model: str
    replicas: int
    gpus_per_replica: int
    tensor_parallel: int
    workload: str
    port: int
    kv_events_port: int
    radix_eviction_policy: str | None
    shm_size: str
    extra_args: tuple[str, ...]
    resources: Json
    env: tuple[Json, ...]
    node_selector: Json
    tolerations: tuple[Json, ...]
    pod_labels: Json
    image_pull_policy: str


@dataclass(frozen=True, slots=True)
class DesiredPool:
    """What the cluster should hold for a pool."""

    workload: Json  # Deployment or StatefulSet
    service: Json

    @property
    def workload_kind(self) -> str:
        return str(self.workload["kind"])


def parse_spec(obj: Mapping[str, Any]) -> PoolSpec | Invalid:
    """Validate a ``ReplicaPool`` (the CRD schema checks types; this checks meaning)."""
    name = str(meta(obj).get("name", ""))
    if not dns_label_ok(name) or len(name) > 52:
        return Invalid("metadata.name", f"{name!r} must be a DNS label of at most 52 characters")
    s = spec_of(obj)
    image = s.get("image")
    if not isinstance(image, str) or not image.strip():
        return Invalid("spec.image", "set the SGLang container image, e.g. lmsysorg/sglang:v0.5.4")
    model = s.get("model")
    if not isinstance(model, str) or not model.strip():
        return Invalid("spec.model", "set the model path or name passed to --model-path")
    replicas = as_int(s, "replicas", 1, "spec")
    if isinstance(replicas, Invalid):
        return replicas
    gpus = as_int(s, "gpusPerReplica", 1, "spec")
    if isinstance(gpus, Invalid):
        return gpus
    tp = as_int(s, "tensorParallel", max(1, gpus), "spec", minimum=1)
    if isinstance(tp, Invalid):
        return tp
    if gpus > 0 and tp > gpus:
        return Invalid(
            "spec.tensorParallel",
            f"tensorParallel={tp} needs at least {tp} GPUs but gpusPerReplica={gpus}; raise gpusPerReplica "
            "or lower tensorParallel",
        )
    if gpus > 0 and gpus % tp:
        return Invalid(
            "spec.tensorParallel", f"gpusPerReplica={gpus} is not a multiple of tensorParallel={tp}"
        )
    workload = s.get("workload", "Deployment")
    if workload not in WORKLOAD_KINDS:
        return Invalid("spec.workload", f"must be one of {', '.join(WORKLOAD_KINDS)}, got {workload!r}")
    port = as_int(s, "port", DEFAULT_PORT, "spec", minimum=1)
    if isinstance(port, Invalid):
        return port
    kv_port = as_int(s, "kvEventsPort", DEFAULT_KV_EVENTS_PORT, "spec", minimum=1)
    if isinstance(kv_port, Invalid):
        return kv_port
    for field, p in (("port", port), ("kvEventsPort", kv_port)):
        if p > 65535:
            return Invalid(f"spec.{field}", f"must be a TCP port (1..65535), got {p}")
    if port == kv_port:
        return Invalid("spec.kvEventsPort", f"must differ from spec.port ({port})")
    policy = s.get("radixEvictionPolicy")
    if policy is not None and policy not in EVICTION_POLICIES:
        return Invalid(
            "spec.radixEvictionPolicy", f"must be one of {', '.join(EVICTION_POLICIES)}, got {policy!r}"
        )
    extra = s.get("extraArgs", [])
    if not isinstance(extra, list) or not all(isinstance(a, str) for a in extra):
        return Invalid("spec.extraArgs", "must be a list of strings")
    checked = _check_extra_args(extra)
    if isinstance(checked, Invalid):
        return checked
    pod_labels = s.get("podLabels", {}) or {}
    if not isinstance(pod_labels, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) and label_value_ok(v) for k, v in pod_labels.items()
    ):
        return Invalid(
            "spec.podLabels", "must map label keys to valid label values (<= 63 chars, [A-Za-z0-9_.-])"
        )
    pull = s.get("imagePullPolicy", "IfNotPresent")
    if pull not in ("Always", "IfNotPresent", "Never"):
        return Invalid("spec.imagePullPolicy", f"must be Always, IfNotPresent or Never, got {pull!r}")
    return PoolSpec(
        image=image.strip(),
        model=model.strip(),
        replicas=replicas,
        gpus_per_replica=gpus,
        tensor_parallel=tp,
        workload=str(workload),
        port=port,
        kv_events_port=kv_port,
        radix_eviction_policy=policy,
        shm_size=str(s.get("shmSize", DEFAULT_SHM)),
        extra_args=tuple(extra),
        resources=dict(s.get("resources") or {}),
        env=tuple(dict(e) for e in s.get("env") or ()),
        node_selector=dict(s.get("nodeSelector") or {}),
        tolerations=tuple(dict(t) for t in s.get("tolerations") or ()),
        pod_labels=dict(pod_labels),
        image_pull_policy=str(pull),
    )


def _check_extra_args(args: Sequence[str]) -> Invalid | None:
    for i, a in enumerate(args):
        flag = a.split("=", 1)[0]
        if flag in REFUSED_FLAGS:
            return Invalid(f"spec.extraArgs[{i}]", f"{flag} is not allowed: {REFUSED_FLAGS[flag]}")
        if flag in OWNED_FLAGS:
            return Invalid(
                f"spec.extraArgs[{i}]",
                f"{flag} is set by the operator; use the matching spec field (model, port, tensorParallel, "
                "kvEventsPort) instead, or remove it",
            )
    return None


def server_args(spec: PoolSpec) -> list[str]:
    """The ``sglang.launch_server`` command line for one replica."""
    kv_events = json.dumps(
        {"publisher": "zmq", "topic": "kv-events", "endpoint": f"tcp://*:{spec.kv_events_port}"},
        separators=(",", ":"),
    )
    args = [
        "python3",
        "-m",
        "sglang.launch_server",
        "--model-path",
        spec.model,
        "--host",
        "0.0.0.0",
        "--port",
        str(spec.port),
        "--tp-size",
        str(spec.tensor_parallel),
        *REQUIRED_FLAGS,
        "--kv-events-config",
        kv_events,
    ]
    if spec.radix_eviction_policy:
        args += ["--radix-eviction-policy", spec.radix_eviction_policy]
    return args + list(spec.extra_args)


def selector_labels(pool_name: str) -> dict[str, str]:
    return {LABEL_ROLE: "replica", LABEL_REPLICA_POOL: pool_name}


def common_labels(pool_name: str) -> dict[str, str]:
    return {
        LABEL_NAME: "sglang",
        LABEL_INSTANCE: pool_name,
        LABEL_COMPONENT: "replica",
        LABEL_MANAGED_BY: MANAGED_BY,
        **selector_labels(pool_name),
    }


def desired(obj: Mapping[str, Any]) -> DesiredPool | Invalid:
    """The Deployment/StatefulSet and Service a ``ReplicaPool`` should have."""
    spec = parse_spec(obj)
    if isinstance(spec, Invalid):
        return spec
    name = str(meta(obj)["name"])
    labels = common_labels(name)
    spec_hash = stable_hash(
        {k: v for k, v in spec_of(obj).items() if k != "replicas"}  # scaling alone does not restart pods
    )
    resources = _resources(spec)
    container: Json = {
        "name": "sglang",
        "image": spec.image,
        "imagePullPolicy": spec.image_pull_policy,
        "command": server_args(spec),
        "ports": [
            {"name": "http", "containerPort": spec.port, "protocol": "TCP"},
            {"name": "kv-events", "containerPort": spec.kv_events_port, "protocol": "TCP"},
        ],
        "env": [{"name": "SGLANG_POOL", "value": name}, *spec.env],
        "resources": resources,
        "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"}],
        "readinessProbe": {
            "httpGet": {"path": "/health", "port": "http"},
            "periodSeconds": 10,
            "failureThreshold": 3,
        },
        # Model loading takes minutes; liveness starts after the startup probe passes.
        "startupProbe": {
            "httpGet": {"path": "/health", "port": "http"},
            "periodSeconds": 10,
            "failureThreshold": 120,
        },
        "livenessProbe": {
            "httpGet": {"path": "/health", "port": "http"},
            "periodSeconds": 30,
            "failureThreshold": 5,
        },
    }
    pod_spec: Json = {
        "containers": [container],
        "volumes": [{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": spec.shm_size}}],
        "terminationGracePeriodSeconds": 60,
    }
    if spec.node_selector:
        pod_spec["nodeSelector"] = spec.node_selector
    if spec.tolerations:
        pod_spec["tolerations"] = list(spec.tolerations)
    template: Json = {
        "metadata": {
            "labels": {**spec.pod_labels, **labels},
            "annotations": {
                ANNOTATION_SPEC_HASH: spec_hash,
                "prometheus.io/scrape": "true",
                "prometheus.io/port": str(spec.port),
                "prometheus.io/path": "/metrics",
            },
        },
        "spec": pod_spec,
    }
    service_name = name
    workload_spec: Json = {
        "replicas": spec.replicas,
        "selector": {"matchLabels": selector_labels(name)},
        "template": template,
    }
    if spec.workload == "StatefulSet":
        workload_spec["serviceName"] = service_name
        workload_spec["podManagementPolicy"] = "Parallel"
    workload: Json = {
        "apiVersion": "apps/v1",
        "kind": spec.workload,
        "metadata": child_metadata(obj, name, labels, {ANNOTATION_SPEC_HASH: spec_hash}),
        "spec": workload_spec,
    }
    service: Json = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": child_metadata(obj, service_name, labels),
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": False,
            "selector": selector_labels(name),
            "ports": [
                {"name": "http", "port": spec.port, "targetPort": "http", "protocol": "TCP"},
                {
                    "name": "kv-events",
                    "port": spec.kv_events_port,
                    "targetPort": "kv-events",
                    "protocol": "TCP",
                },
            ],
        },
    }
    return DesiredPool(workload=workload, service=service)


def _resources(spec: PoolSpec) -> Json:
    res: Json = {k: dict(v) for k, v in spec.resources.items() if isinstance(v, Mapping)}
    if spec.gpus_per_replica > 0:
        for part in ("limits", "requests"):
            res.setdefault(part, {})["nvidia.com/gpu"] = spec.gpus_per_replica
    return res


def status(obj: Mapping[str, Any], observed_workload: Mapping[str, Any] | None, *, now: str) -> Json:
    """The pool's status from the workload the cluster reports (``None``: not created yet)."""
    spec = spec_of(obj)
    wanted = spec.get("replicas", 1)
    ws = (observed_workload or {}).get("status") or {}
    ready = int(ws.get("readyReplicas", 0) or 0)
    available = int(ws.get("availableReplicas", 0) or 0)
    prev = obj.get("status") or {}
    gen = generation_of(obj)
    if observed_workload is None:
        cond = condition("Ready", False, "WorkloadMissing", "the workload has not been created yet", now=now)
        phase = "Pending"
    elif ready >= wanted:
        cond = condition("Ready", True, "AllReplicasReady", f"{ready}/{wanted} replicas ready", now=now)
        phase = "Ready"
    else:
        cond = condition(
            "Ready",
            False,
            "ReplicasNotReady",
            f"{ready}/{wanted} replicas ready (models may still be loading)",
            now=now,
        )
        phase = "Progressing"
    cond["observedGeneration"] = gen
    name = str(meta(obj).get("name", ""))
    return {
        "replicas": wanted,
        "readyReplicas": ready,
        "availableReplicas": available,
        "phase": phase,
        "service": name,
        "selector": ",".join(f"{k}={v}" for k, v in selector_labels(name).items()),
        "observedGeneration": gen,
        "conditions": merge_conditions(prev.get("conditions") if isinstance(prev, Mapping) else None, cond),
    }
