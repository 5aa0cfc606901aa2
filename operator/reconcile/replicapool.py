"""``ReplicaPool``: an SGLang fleet → a Deployment (or StatefulSet) and a headless Service.

The rendered pods always run ``python3 -m sglang.launch_server`` with the flags SAGA relies
on, which need **SGLang 0.5.17 or later** (checked against the argument definitions of 0.5.17
and 0.5.20 by ``tests/contract/sglang/test_interfaces.py``):

- ``--enable-metrics``: the replica exports ``sglang:*`` metrics on its HTTP port;
- ``--enable-session-radix-cache``: a top-level ``session_id`` keeps a session's radix
  entries referenced across tool gaps (evicted last, dropped on ``/close_session``): this is
  how SAGA keeps KV across tool calls. SGLang 0.5.17 and 0.5.18 accept the flag only on the
  unified radix tree, so pods also get ``SGLANG_ENABLE_UNIFIED_RADIX_TREE=1`` (the default
  tree from 0.5.19 on; ``spec.env`` may override it). Before 0.5.15 the flag does not exist
  and SGLang refuses to start; 0.5.15 and 0.5.16 only tag entries (ordinary LRU) and require
  ``--radix-eviction-policy priority``;
- ``--enable-priority-scheduling``: SAGA passes ``priority`` per request (AFS urgency);
- ``--kv-events-config {"publisher":"zmq","topic":"kv-events","endpoint":"tcp://*:<port>"}``:
  ``BlockStored``/``BlockRemoved`` events give the scheduler an exact view of each cache; with
  ``kvEventsReplayPort`` also ``"replay_endpoint":"tcp://*:<replay port>"`` (SGLang's
  ``KVEventsConfig.replay_endpoint``: a ZMQ ROUTER serving the last ``buffer_steps`` batches,
  so a scheduler that missed batches fetches them instead of dropping its view).

Flags SAGA owns (``--host``, ``--port``, ``--model-path``, ``--tp-size`` and the four above)
may not be overridden in ``spec.extraArgs``; ``--disable-radix-cache`` is refused (SAGA's KV
retention needs the radix cache). Both are reported as :class:`Invalid` with the fix.

Discovery: pods and the Service carry ``saga.dev/role=replica`` and
``saga.dev/replica-pool=<pool>``; the Service is headless (``clusterIP: None``) so its DNS
name resolves to every ready pod. The scheduler lists pods by these labels (or resolves the
Service) and talks to each replica on the ``http`` port; KV events come on ``kv-events``, replays
on ``kv-replay`` (container and Service ports of those names, so every pod's EndpointSlice
names them; a container port name is at most 15 characters, hence not ``kv-events-replay``).

Data-parallel attention (``--dp-size N --enable-dp-attention`` in ``extraArgs``): SGLang runs
one publisher per attention DP rank, rank ``r`` binding ``kvEventsPort + r`` and
``kvEventsReplayPort + r``. The operator reads those two flags from ``extraArgs`` only to check
that the ranges ``[kvEventsPort, kvEventsPort + N)``, ``[kvEventsReplayPort, … + N)`` and
``port`` do not overlap and stay below 65536; the scheduler learns N from each replica's
``/server_info`` and derives the ranks' ports from the two named ports. The rank ports beyond
rank 0 are not declared as container ports (pod IPs reach them all the same; a NetworkPolicy
must allow the whole range).

Spec fields and defaults (see the CRD for the schema):

- ``image`` (required), ``model`` (required: model path or name passed to ``--model-path``);
- ``replicas`` (default 1), ``gpusPerReplica`` (default 1; 0 only for test images),
  ``tensorParallel`` (default ``max(1, gpusPerReplica)``; must divide into the GPUs);
- ``workload``: ``Deployment`` (default) or ``StatefulSet`` (stable pod names, when replicas
  keep local state such as a host KV tier);
- ``port`` (30000, SGLang's default), ``kvEventsPort`` (5557, the ZMQ default in SGLang docs);
- ``kvEventsReplayPort`` (optional, off when absent: SGLang's own default is no replay
  endpoint, an existing pool's pods keep their command line, and no port is guessed next to
  the DP ranks' range; e.g. 5600);
- ``radixEvictionPolicy`` (optional: ``lru|lfu|slru|priority|tlru``; ``tlru`` needs SGLang
  0.5.21 or later, ``EVICTION_POLICY_SINCE``);
- ``shmSize`` (``16Gi``: NCCL and the tokenizer manager use ``/dev/shm``; the container
  runtime's 64 MiB default breaks tensor parallelism);
- ``apiKeySecret`` (optional ``{name, key: api-key, adminKey}``): the Secret holding SGLang's
  ``--api-key`` (and ``--admin-api-key``), passed as ``$(SGLANG_API_KEY)`` from a
  ``secretKeyRef`` so no key is in the pod spec; the scheduler reads the same Secret
  (the chart's ``scheduler.replicaKeys``);
- ``resources``, ``env``, ``nodeSelector``, ``tolerations``, ``extraArgs``, ``podLabels``.
"""

from __future__ import annotations

import json
import re
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
# SGLang release that first accepts a policy (the others: every supported release).
EVICTION_POLICY_SINCE: Mapping[str, str] = {"tlru": "0.5.21"}
# Environment every replica pod gets before spec.env (which may override it): SGLang 0.5.17
# and 0.5.18 refuse --enable-session-radix-cache without the unified radix tree.
REQUIRED_ENV: tuple[tuple[str, str], ...] = (("SGLANG_ENABLE_UNIFIED_RADIX_TREE", "1"),)
# Environment variables holding spec.apiKeySecret's keys, expanded into --api-key $(...) /
# --admin-api-key $(...) by Kubernetes (the keys never appear in the pod spec).
API_KEY_ENV = "SGLANG_API_KEY"
ADMIN_API_KEY_ENV = "SGLANG_ADMIN_API_KEY"
_SECRET_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")
_SECRET_KEY = re.compile(r"[-._a-zA-Z0-9]+")
DEFAULT_PORT = 30000
DEFAULT_KV_EVENTS_PORT = 5557
REPLAY_PORT_NAME = "kv-replay"  # the scheduler's kv_events.discovered_replay_port_name default
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
    kv_events_replay_port: int | None
    radix_eviction_policy: str | None
    shm_size: str
    extra_args: tuple[str, ...]
    resources: Json
    env: tuple[Json, ...]
    node_selector: Json
    tolerations: tuple[Json, ...]
    pod_labels: Json
    image_pull_policy: str
    api_key_secret: ApiKeySecret | None = None


@dataclass(frozen=True, slots=True)
class ApiKeySecret:
    """``spec.apiKeySecret``: the Secret holding SGLang's ``--api-key`` (and ``--admin-api-key``)."""

    name: str
    key: str = "api-key"
    admin_key: str | None = None


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
        return Invalid(
            "spec.image", "set the SGLang container image (0.5.17 or later), e.g. lmsysorg/sglang:v0.5.20"
        )
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
    replay_port: int | None = None
    if s.get("kvEventsReplayPort") is not None:
        rp = as_int(s, "kvEventsReplayPort", 0, "spec", minimum=1)
        if isinstance(rp, Invalid):
            return rp
        if rp > 65535:
            return Invalid("spec.kvEventsReplayPort", f"must be a TCP port (1..65535), got {rp}")
        replay_port = rp
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
    ranks = attention_dp_ranks(extra)
    if isinstance(ranks, Invalid):
        return ranks
    clash = _check_port_ranges(port, kv_port, replay_port, ranks)
    if clash is not None:
        return clash
    pod_labels = s.get("podLabels", {}) or {}
    if not isinstance(pod_labels, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) and label_value_ok(v) for k, v in pod_labels.items()
    ):
        return Invalid(
            "spec.podLabels", "must map label keys to valid label values (<= 63 chars, [A-Za-z0-9_.-])"
        )
    keys = _api_key_secret(s.get("apiKeySecret"), extra)
    if isinstance(keys, Invalid):
        return keys
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
        kv_events_replay_port=replay_port,
        radix_eviction_policy=policy,
        shm_size=str(s.get("shmSize", DEFAULT_SHM)),
        extra_args=tuple(extra),
        resources=dict(s.get("resources") or {}),
        env=tuple(dict(e) for e in s.get("env") or ()),
        node_selector=dict(s.get("nodeSelector") or {}),
        tolerations=tuple(dict(t) for t in s.get("tolerations") or ()),
        pod_labels=dict(pod_labels),
        image_pull_policy=str(pull),
        api_key_secret=keys,
    )


def _api_key_secret(raw: Any, extra: Sequence[str]) -> ApiKeySecret | Invalid | None:
    if raw is None:
        return None
    where = "spec.apiKeySecret"
    if not isinstance(raw, Mapping):
        return Invalid(where, "must be an object {name, key, adminKey}")
    name, key, admin = raw.get("name"), raw.get("key", "api-key"), raw.get("adminKey")
    if not isinstance(name, str) or not _SECRET_NAME.fullmatch(name):
        return Invalid(f"{where}.name", f"must be a Secret name (DNS subdomain), got {name!r}")
    for field, value in (("key", key), ("adminKey", admin)):
        if value is not None and (not isinstance(value, str) or not _SECRET_KEY.fullmatch(value)):
            return Invalid(f"{where}.{field}", f"must be a Secret key ([-._a-zA-Z0-9]+), got {value!r}")
    for i, a in enumerate(extra):
        if a.split("=", 1)[0] in ("--api-key", "--admin-api-key"):
            return Invalid(f"spec.extraArgs[{i}]", "the keys come from spec.apiKeySecret; remove the flag")
    return ApiKeySecret(name, str(key), admin)


def _check_extra_args(args: Sequence[str]) -> Invalid | None:
    for i, a in enumerate(args):
        flag = a.split("=", 1)[0]
        if flag in REFUSED_FLAGS:
            return Invalid(f"spec.extraArgs[{i}]", f"{flag} is not allowed: {REFUSED_FLAGS[flag]}")
        if flag in OWNED_FLAGS:
            return Invalid(
                f"spec.extraArgs[{i}]",
                f"{flag} is set by the operator; use the matching spec field (model, port, tensorParallel, "
                "kvEventsPort, kvEventsReplayPort) instead, or remove it",
            )
    return None


DP_SIZE_FLAGS = ("--dp-size", "--data-parallel-size")  # SGLang's spellings of dp_size
DP_ATTENTION_FLAG = "--enable-dp-attention"


def attention_dp_ranks(args: Sequence[str]) -> int | Invalid:
    """How many KV event publishers a replica runs: ``--dp-size N`` (or ``=N``) with
    ``--enable-dp-attention``, else 1 (SGLang's ``attn_dp_rank`` is 0 without DP attention)."""
    dp = 1
    for i, a in enumerate(args):
        flag, eq, value = a.partition("=")
        if flag not in DP_SIZE_FLAGS:
            continue
        if not eq:
            value = args[i + 1] if i + 1 < len(args) else ""
        if not value.isdigit() or int(value) < 1:
            return Invalid(f"spec.extraArgs[{i}]", f"{flag} needs a positive integer, got {value!r}")
        dp = int(value)
    return dp if DP_ATTENTION_FLAG in args else 1


def _check_port_ranges(port: int, kv_port: int, replay_port: int | None, ranks: int) -> Invalid | None:
    """The HTTP port and the KV event (and replay) ports of every attention DP rank must not
    overlap: SGLang would fail to bind."""
    why = f" (rank r of the {ranks} attention DP ranks binds the port + r)" if ranks > 1 else ""
    ranges = [("kvEventsPort", kv_port)] + ([("kvEventsReplayPort", replay_port)] if replay_port else [])
    for field, first in ranges:
        last = first + ranks - 1
        span = f"{first}..{last}" if ranks > 1 else str(first)
        if last > 65535:
            return Invalid(f"spec.{field}", f"ports {span} go beyond 65535{why}; lower it")
        if first <= port <= last:
            if ranks == 1:
                return Invalid(f"spec.{field}", f"must differ from spec.port ({port})")
            return Invalid(f"spec.{field}", f"ports {span} include spec.port ({port}){why}")
    if replay_port is not None and abs(replay_port - kv_port) < ranks:
        if ranks == 1:
            return Invalid("spec.kvEventsReplayPort", f"must differ from spec.kvEventsPort ({kv_port})")
        return Invalid(
            "spec.kvEventsReplayPort",
            f"ports {replay_port}..{replay_port + ranks - 1} overlap the KV event ports "
            f"{kv_port}..{kv_port + ranks - 1}{why}; use a port below {kv_port - ranks + 1} or "
            f"from {kv_port + ranks} on",
        )
    return None


def kv_events_config(spec: PoolSpec) -> str:
    """The ``--kv-events-config`` JSON (SGLang's ``KVEventsConfig`` fields)."""
    doc = {"publisher": "zmq", "topic": "kv-events", "endpoint": f"tcp://*:{spec.kv_events_port}"}
    if spec.kv_events_replay_port is not None:
        doc["replay_endpoint"] = f"tcp://*:{spec.kv_events_replay_port}"
    return json.dumps(doc, separators=(",", ":"))


def server_args(spec: PoolSpec) -> list[str]:
    """The ``sglang.launch_server`` command line for one replica."""
    kv_events = kv_events_config(spec)
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
    if spec.api_key_secret is not None:  # Kubernetes expands $(VAR) from the container's env
        args += ["--api-key", f"$({API_KEY_ENV})"]
        if spec.api_key_secret.admin_key:
            args += ["--admin-api-key", f"$({ADMIN_API_KEY_ENV})"]
    return args + list(spec.extra_args)


def _secret_env(spec: PoolSpec) -> list[Json]:
    keys = spec.api_key_secret
    if keys is None:
        return []
    pairs = [(API_KEY_ENV, keys.key)] + ([(ADMIN_API_KEY_ENV, keys.admin_key)] if keys.admin_key else [])
    return [{"name": n, "valueFrom": {"secretKeyRef": {"name": keys.name, "key": k}}} for n, k in pairs]


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
            *_replay_ports(spec, "containerPort"),
        ],
        "env": [
            {"name": "SGLANG_POOL", "value": name},
            *({"name": k, "value": v} for k, v in REQUIRED_ENV),
            *_secret_env(spec),
            *spec.env,
        ],
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
                *_replay_ports(spec, "port"),
            ],
        },
    }
    return DesiredPool(workload=workload, service=service)


def _replay_ports(spec: PoolSpec, key: str) -> list[Json]:
    """The ``kv-replay`` container (``key`` "containerPort") or Service ("port") port."""
    if spec.kv_events_replay_port is None:
        return []
    p: Json = {"name": REPLAY_PORT_NAME, key: spec.kv_events_replay_port, "protocol": "TCP"}
    if key == "port":
        p["targetPort"] = REPLAY_PORT_NAME
    return [p]


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
