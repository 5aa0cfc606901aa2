"""``AgentWorkflow``: an agent type's traces → a versioned Agent Execution Graph.

Reconcile has three steps; only the middle one is done here (pure), the handler does the I/O:

1. fetch the trace text from the source named in the spec (:class:`TraceSource`): a ConfigMap
   key, a Redis key (a string holding JSON lines), or the SDK event stream (a Redis stream
   whose entries carry one trace line each in the field ``line``);
2. build the graph with ``saga.graphs`` (:func:`build_graph`: ingest the lines, keep the
   sessions of ``spec.agentType`` and its sub-agent types, build the AEG) and decide the
   version (:func:`next_version`): the version goes up by one exactly when the graph's content
   digest changes, so re-running reconcile on the same traces is a no-op;
3. store it: a ConfigMap ``<name>-aeg`` (``graph.json``; ``graph.json.gz`` in ``binaryData``
   when the JSON exceeds :data:`CONFIGMAP_INLINE_LIMIT`) labelled ``saga.dev/role=agent-graph``,
   ``saga.dev/agent-type=<type>`` and annotated with the version and digest, or Redis keys
   ``<prefix><agentType>:v<version>`` and ``<prefix><agentType>:latest``. The scheduler watches
   the label (or polls ``:latest``) and swaps graphs without a restart.

Status: ``sessionsSeen``, ``graphVersion``, ``graphDigest``, ``confidence``, ``graphRef`` and
conditions ``GraphBuilt`` and ``Ready``.

Confidence: the AEG serves an agent type request-by-request until about 30 sessions were
seen (the paper authors' threshold). Confidence is ``min(1, sessions / spec.minSessions)``
(``minSessions`` default 30); ``Ready`` is ``True`` once a graph is stored, with reason
``LowConfidence`` while below the threshold so users see why predictions are weak.
"""

from __future__ import annotations

import base64
import gzip
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from saga.operator.reconcile.common import (
    ANNOTATION_GRAPH_DIGEST,
    ANNOTATION_GRAPH_VERSION,
    LABEL_AGENT_TYPE,
    LABEL_INSTANCE,
    LABEL_MANAGED_BY,
    LABEL_ROLE,
    MANAGED_BY,
    Invalid,
    Json,
    as_int,
    child_metadata,
    condition,
    dns_subdomain_ok,
    generation_of,
    label_value_ok,
    merge_conditions,
    meta,
    spec_of,
)

KIND = "AgentWorkflow"
PLURAL = "agentworkflows"
SOURCE_KINDS = ("configMap", "redis", "sdkStream")
STORAGE_KINDS = ("configMap", "redis")
FORMATS = ("auto", "eventlog", "weka", "otel", "mooncake")  # saga.graphs.ingest readers
DEFAULT_MIN_SESSIONS = 30  # paper authors' cold-start threshold
DEFAULT_REDIS_PREFIX = "saga:aeg:"
DEFAULT_STREAM_MAX = 10000  # newest stream entries read per reconcile (bounds memory and time)
# ConfigMaps hold at most 1 MiB in total; above this the graph is gzipped into binaryData.
CONFIGMAP_INLINE_LIMIT = 900 * 1024


@dataclass(frozen=True, slots=True)
class TraceSource:
    kind: str  # "configMap" | "redis" | "sdkStream"
    name: str = ""  # configMap: ConfigMap name
    key: str = ""  # configMap: data key; redis: key; sdkStream: stream key
    url: str = ""  # redis/sdkStream: Redis URL ("" = the operator's default)
    max_entries: int = DEFAULT_STREAM_MAX


@dataclass(frozen=True, slots=True)
class WorkflowSpec:
    agent_type: str
    source: TraceSource
    trace_format: str
    storage: str
    redis_prefix: str
    redis_url: str
    min_sessions: int


@dataclass(frozen=True, slots=True)
class BuiltGraph:
    """A graph ready to store: its JSON text and what status reports about it."""

    graph_json: str
    digest: str
    sessions_seen: int
    skipped: int


@dataclass(frozen=True, slots=True)
class WorkflowResult:
    status: Json
    configmap: Json | None  # None when stored in Redis
    redis_keys: Mapping[str, str]  # key -> value to SET (empty when stored in a ConfigMap)
    version: int
    changed: bool  # a new graph version was produced


def parse_spec(obj: Mapping[str, Any]) -> WorkflowSpec | Invalid:
    s = spec_of(obj)
    agent_type = s.get("agentType")
    if not isinstance(agent_type, str) or not agent_type or not label_value_ok(agent_type.replace("/", ".")):
        return Invalid("spec.agentType", f"{agent_type!r} must be 1-63 characters of [A-Za-z0-9_.-/]")
    src = s.get("source")
    if not isinstance(src, Mapping):
        return Invalid("spec.source", f"set exactly one of {', '.join(SOURCE_KINDS)}")
    present = [k for k in SOURCE_KINDS if src.get(k) is not None]
    if len(present) != 1:
        return Invalid(
            "spec.source",
            f"set exactly one of {', '.join(SOURCE_KINDS)} (got {', '.join(present) or 'none'})",
        )
    kind = present[0]
    body = src[kind]
    if not isinstance(body, Mapping):
        return Invalid(f"spec.source.{kind}", "must be an object")
    source: TraceSource
    if kind == "configMap":
        name = body.get("name")
        if not isinstance(name, str) or not dns_subdomain_ok(name):
            return Invalid("spec.source.configMap.name", f"{name!r} is not a valid ConfigMap name")
        key = body.get("key", "traces.jsonl")
        if not isinstance(key, str) or not key:
            return Invalid("spec.source.configMap.key", "must be a non-empty data key")
        source = TraceSource(kind=kind, name=name, key=key)
    else:
        key = body.get("key" if kind == "redis" else "stream")
        field = "key" if kind == "redis" else "stream"
        if not isinstance(key, str) or not key:
            return Invalid(f"spec.source.{kind}.{field}", "name the Redis key holding the traces")
        url = body.get("url", "")
        if not isinstance(url, str) or (url and not url.startswith(("redis://", "rediss://", "unix://"))):
            return Invalid(f"spec.source.{kind}.url", f"{url!r} must be a redis://, rediss:// or unix:// URL")
        max_entries = as_int(body, "maxEntries", DEFAULT_STREAM_MAX, f"spec.source.{kind}", minimum=1)
        if isinstance(max_entries, Invalid):
            return max_entries
        source = TraceSource(kind=kind, key=key, url=url, max_entries=max_entries)
    fmt = s.get("format", "auto")
    if fmt not in FORMATS:
        return Invalid("spec.format", f"must be one of {', '.join(FORMATS)}, got {fmt!r}")
    storage = s.get("storage") or {}
    if not isinstance(storage, Mapping):
        return Invalid("spec.storage", "must be an object")
    stype = storage.get("type", "configMap")
    if stype not in STORAGE_KINDS:
        return Invalid("spec.storage.type", f"must be one of {', '.join(STORAGE_KINDS)}, got {stype!r}")
    prefix = storage.get("redisKeyPrefix", DEFAULT_REDIS_PREFIX)
    redis_url = storage.get("redisUrl", "")
    if not isinstance(prefix, str) or not isinstance(redis_url, str):
        return Invalid("spec.storage", "redisKeyPrefix and redisUrl must be strings")
    min_sessions = as_int(s, "minSessions", DEFAULT_MIN_SESSIONS, "spec", minimum=1)
    if isinstance(min_sessions, Invalid):
        return min_sessions
    return WorkflowSpec(
        agent_type=agent_type,
        source=source,
        trace_format=str(fmt),
        storage=str(stype),
        redis_prefix=prefix,
        redis_url=redis_url,
        min_sessions=min_sessions,
    )


def configmap_name(obj: Mapping[str, Any]) -> str:
    return f"{meta(obj).get('name', '')}-aeg"


def next_version(previous_status: Mapping[str, Any] | None, digest: str) -> tuple[int, bool]:
    """(version, changed): bump the version exactly when the digest changed."""
    prev = previous_status or {}
    v = prev.get("graphVersion")
    prev_version = int(v) if isinstance(v, int) else 0
    if prev.get("graphDigest") == digest and prev_version > 0:
        return prev_version, False
    return prev_version + 1, True


def reconcile(obj: Mapping[str, Any], graph: BuiltGraph, *, now: str) -> WorkflowResult | Invalid:
    """Desired storage and status for a workflow whose graph was just built."""
    spec = parse_spec(obj)
    if isinstance(spec, Invalid):
        return spec
    prev = obj.get("status") or {}
    prev = prev if isinstance(prev, Mapping) else {}
    version, changed = next_version(prev, graph.digest)
    gen = generation_of(obj)
    confidence = round(min(1.0, graph.sessions_seen / spec.min_sessions), 4)
    if spec.storage == "configMap":
        ref = f"configmap/{configmap_name(obj)}"
        cm = graph_configmap(obj, spec, graph, version)
        redis_keys: dict[str, str] = {}
    else:
        ref = f"redis/{spec.redis_prefix}{spec.agent_type}:v{version}"
        cm = None
        redis_keys = {
            f"{spec.redis_prefix}{spec.agent_type}:v{version}": graph.graph_json,
            f"{spec.redis_prefix}{spec.agent_type}:latest": str(version),
        }
    built = condition(
        "GraphBuilt",
        True,
        "Built",
        f"graph v{version} from {graph.sessions_seen} sessions ({graph.skipped} bad records skipped)",
        now=now,
        generation=gen,
    )
    if graph.sessions_seen == 0:
        ready = condition(
            "Ready",
            False,
            "NoSessions",
            f"no sessions of agent type {spec.agent_type!r} in the traces; "
            "check spec.agentType and the source",
            now=now,
            generation=gen,
        )
    elif graph.sessions_seen < spec.min_sessions:
        ready = condition(
            "Ready",
            True,
            "LowConfidence",
            f"{graph.sessions_seen}/{spec.min_sessions} sessions seen: predictions stay request-level "
            "until more traces arrive",
            now=now,
            generation=gen,
        )
    else:
        ready = condition(
            "Ready", True, "GraphReady", f"graph v{version} stored in {ref}", now=now, generation=gen
        )
    status: Json = {
        "agentType": spec.agent_type,
        "sessionsSeen": graph.sessions_seen,
        "skippedRecords": graph.skipped,
        "graphVersion": version,
        "graphDigest": graph.digest,
        "confidence": confidence,
        "graphRef": ref,
        "phase": "Ready" if ready["status"] == "True" else "Pending",
        "observedGeneration": gen,
        "conditions": merge_conditions(prev.get("conditions"), built, ready),
    }
    if changed or "lastBuildTime" not in prev:
        status["lastBuildTime"] = now
    else:
        status["lastBuildTime"] = prev["lastBuildTime"]
    return WorkflowResult(
        status=status, configmap=cm, redis_keys=redis_keys, version=version, changed=changed
    )


def graph_configmap(obj: Mapping[str, Any], spec: WorkflowSpec, graph: BuiltGraph, version: int) -> Json:
    labels = {
        LABEL_ROLE: "agent-graph",
        LABEL_AGENT_TYPE: spec.agent_type.replace("/", "."),
        LABEL_INSTANCE: str(meta(obj).get("name", "")),
        LABEL_MANAGED_BY: MANAGED_BY,
    }
    annotations = {
        ANNOTATION_GRAPH_VERSION: str(version),
        ANNOTATION_GRAPH_DIGEST: graph.digest,
        "saga.dev/agent-type": spec.agent_type,
        "saga.dev/sessions-seen": str(graph.sessions_seen),
    }
    cm: Json = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": child_metadata(obj, configmap_name(obj), labels, annotations),
    }
    if len(graph.graph_json.encode()) <= CONFIGMAP_INLINE_LIMIT:
        cm["data"] = {"graph.json": graph.graph_json, "version": str(version)}
    else:
        packed = gzip.compress(graph.graph_json.encode(), mtime=0)
        cm["data"] = {"version": str(version)}
        cm["binaryData"] = {"graph.json.gz": base64.b64encode(packed).decode()}
    return cm


def graph_from_configmap(cm: Mapping[str, Any]) -> Json:
    """Read a stored graph back (what the scheduler does); inverse of :func:`graph_configmap`."""
    data = cm.get("data") or {}
    if "graph.json" in data:
        loaded: Json = json.loads(data["graph.json"])
        return loaded
    packed = base64.b64decode((cm.get("binaryData") or {})["graph.json.gz"])
    loaded = json.loads(gzip.decompress(packed))
    return loaded
