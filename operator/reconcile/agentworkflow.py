"""``AgentWorkflow``: an agent type's traces → a versioned Agent Execution Graph.

Reconcile has three steps; only the middle one is done here (pure), the handler does the I/O:

1. fetch the trace text from the source named in the spec (:class:`TraceSource`): a ConfigMap
   key, a Redis key (a string holding JSON lines), or the SDK event stream (a Redis stream
   whose entries carry one trace line each in the field ``line``);
2. build the graph with ``saga.graphs`` (:func:`build_graph`: ingest the lines, keep the
   sessions of ``spec.agentType`` and its sub-agent types, build the AEG) and decide the
   version (:func:`next_version`): the version goes up by one exactly when the graph's content
   digest changes, so re-running reconcile on the same traces is a no-op;
3. store it, one path per ``spec.storage.type``:

   * ``configMap``: a ConfigMap ``<name>-aeg`` (``graph.json``; ``graph.json.gz`` in
     ``binaryData`` when the JSON exceeds :data:`CONFIGMAP_INLINE_LIMIT`) labelled
     ``saga.dev/role=agent-graph``, ``saga.dev/agent-type=<type>`` and annotated with the
     version and digest (the workflow's own record, owned by it), **and** the workflow's key
     in the graph bundle (:func:`bundle_patch`): one ConfigMap with a fixed name (the chart's
     ``<release>-graphs``) in the scheduler's namespace, one key ``<type>.json`` (or
     ``<type>.json.gz``) per agent type, labelled ``saga.dev/role=agent-graph-bundle``. The
     chart mounts it under the scheduler's ``spec.graphs.directory``; kubelet swaps the files
     atomically and the scheduler's reloader picks the change up without a restart. Each key's
     writer is recorded in the annotation ``graphs.saga.dev/<key>`` (``<ns>/<name>``): a second
     workflow of the same agent type does not take the key over (:attr:`WorkflowResult.
     bundle_conflict`), and deleting a workflow removes only its own key
     (:func:`bundle_removal`); both use the shared bundle helpers of
     :mod:`saga.operator.reconcile.bundle`.
   * ``redis``: the state store's graph document of the agent type (``StateStore.put_graph``
     on a ``RedisStore`` under ``spec.storage.storeNamespace``, default ``saga``: keys
     ``saga:g:<type>`` and ``saga:gv``), the layout the scheduler reads with
     ``spec.graphs.from_store``. The store assigns versions; :func:`reconcile` is given what
     is stored (:class:`StoredGraph`) and asks for a compare-and-set put only when the digest
     differs, so the version in the status is the store's. Deleting the workflow (or moving
     it to another storage, agent type or store namespace) deletes the document it published
     (:func:`published_store_refs`, :func:`stale_store_ref`; ``StateStore.delete_graph`` at the stored
     version, and only while the stored content is still this workflow's graph), so running
     schedulers drop the agent type at their next poll.

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
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from saga.operator.reconcile.bundle import Bundle
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
DEFAULT_STORE_NAMESPACE = "saga"  # RedisStore namespace = the scheduler's state.key_prefix "saga:"
BUNDLE_ROLE = "agent-graph-bundle"
BUNDLE_OWNER_PREFIX = "graphs.saga.dev/"  # annotation graphs.saga.dev/<key> = "<ns>/<name>"
_BUNDLE = Bundle(BUNDLE_ROLE, BUNDLE_OWNER_PREFIX, KIND, "one workflow per agent type")
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
    store_namespace: str
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
class StoredGraph:
    """What the state store holds for the agent type: its version and content digest."""

    version: int
    digest: str


@dataclass(frozen=True, slots=True)
class StorePut:
    """A compare-and-set ``put_graph``: written exactly when the store returns ``expected + 1``."""

    agent_type: str
    document: Json
    expected_version: int


@dataclass(frozen=True, slots=True)
class StoreRef:
    """Where a workflow's status says its graph was last published in the state store."""

    store_namespace: str
    agent_type: str
    digest: str


@dataclass(frozen=True, slots=True)
class WorkflowResult:
    status: Json
    configmap: Json | None  # None when stored in Redis
    store_put: StorePut | None  # the state-store write (redis storage, graph changed), else None
    version: int
    changed: bool  # a new graph version was produced


def graph_digest(graph_json: str) -> str:
    """Content digest of canonical graph JSON (16 hex digits of SHA-256)."""
    return hashlib.sha256(graph_json.encode()).hexdigest()[:16]


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
    if "redisKeyPrefix" in storage:
        return Invalid(
            "spec.storage.redisKeyPrefix",
            "removed: graphs go to the state store's graph documents; use storeNamespace "
            "(the scheduler's spec.state.key_prefix without the trailing ':', default 'saga')",
        )
    store_ns = storage.get("storeNamespace", DEFAULT_STORE_NAMESPACE)
    redis_url = storage.get("redisUrl", "")
    if not isinstance(store_ns, str) or not store_ns or not isinstance(redis_url, str):
        return Invalid("spec.storage", "storeNamespace must be a non-empty string and redisUrl a string")
    min_sessions = as_int(s, "minSessions", DEFAULT_MIN_SESSIONS, "spec", minimum=1)
    if isinstance(min_sessions, Invalid):
        return min_sessions
    return WorkflowSpec(
        agent_type=agent_type,
        source=source,
        trace_format=str(fmt),
        storage=str(stype),
        store_namespace=store_ns,
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


def reconcile(
    obj: Mapping[str, Any], graph: BuiltGraph, *, now: str, stored: StoredGraph | None = None
) -> WorkflowResult | Invalid:
    """Desired storage and status for a workflow whose graph was just built.

    ``stored``: what the state store holds for the agent type (redis storage only; the handler
    reads it first). Versions then come from the store: unchanged digest → its version, no
    write; otherwise a put expecting its version (0 when absent).
    """
    spec = parse_spec(obj)
    if isinstance(spec, Invalid):
        return spec
    prev = obj.get("status") or {}
    prev = prev if isinstance(prev, Mapping) else {}
    gen = generation_of(obj)
    confidence = round(min(1.0, graph.sessions_seen / spec.min_sessions), 4)
    put: StorePut | None = None
    if spec.storage == "configMap":
        version, changed = next_version(prev, graph.digest)
        ref = f"configmap/{configmap_name(obj)}"
        cm = graph_configmap(obj, spec, graph, version)
    else:
        cm = None
        if stored is not None and stored.digest == graph.digest:
            version = stored.version
            changed = prev.get("graphDigest") != graph.digest or prev.get("graphVersion") != version
        else:
            expected = stored.version if stored is not None else 0
            version, changed = expected + 1, True
            put = StorePut(spec.agent_type, json.loads(graph.graph_json), expected)
        ref = f"redis/{spec.store_namespace}:g:{spec.agent_type}@v{version}"
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
    return WorkflowResult(status=status, configmap=cm, store_put=put, version=version, changed=changed)


def stored_ref(obj: Mapping[str, Any]) -> StoreRef | None:
    """The state-store document the workflow last published (from ``status.graphRef``
    ``redis/<ns>:g:<type>@v<N>`` and ``status.graphDigest``); None when it published none."""
    status = obj.get("status") or {}
    if not isinstance(status, Mapping):
        return None
    ref, digest = status.get("graphRef"), status.get("graphDigest")
    if not isinstance(ref, str) or not ref.startswith("redis/") or not isinstance(digest, str):
        return None
    head, sep, _version = ref.removeprefix("redis/").rpartition("@v")
    store_ns, sep2, agent_type = head.partition(":g:")
    if not sep or not sep2 or not store_ns or not agent_type:
        return None
    return StoreRef(store_ns, agent_type, digest)


def published_store_refs(obj: Mapping[str, Any]) -> list[StoreRef]:
    """Every state-store document a deleted workflow may have published: the one its status
    names, and (a deletion can arrive after a put but before the status recording it was
    written) its spec's current target with the status digest. Deleting is digest-checked,
    so naming a document that holds another graph is harmless."""
    refs: list[StoreRef] = []
    ref = stored_ref(obj)
    if ref is not None:
        refs.append(ref)
    spec = parse_spec(obj)
    status = obj.get("status") or {}
    digest = status.get("graphDigest") if isinstance(status, Mapping) else None
    if not isinstance(spec, Invalid) and spec.storage == "redis" and isinstance(digest, str):
        target = StoreRef(spec.store_namespace, spec.agent_type, digest)
        if target not in refs:
            refs.append(target)
    return refs


def stale_store_ref(obj: Mapping[str, Any], spec: WorkflowSpec) -> StoreRef | None:
    """The state-store document the workflow published before its spec moved away from it
    (storage switched to ``configMap``, or another agent type or store namespace): the
    handler deletes it, as it takes a bundle key out when storage switches to ``redis``."""
    ref = stored_ref(obj)
    if ref is None:
        return None
    if spec.storage == "redis" and (ref.store_namespace, ref.agent_type) == (
        spec.store_namespace,
        spec.agent_type,
    ):
        return None
    return ref


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


# --------------------------------------------------------------------------- graph bundle


def bundle_key(agent_type: str) -> str:
    """The bundle's key stem of an agent type (ConfigMap keys allow no ``/``)."""
    return agent_type.replace("/", ".")


def bundle_patch(
    obj: Mapping[str, Any],
    graph: BuiltGraph,
    current: Mapping[str, Any] | None,
    *,
    name: str,
    namespace: str,
) -> tuple[Json | None, str | None]:
    """The graph bundle's desired change for a workflow stored in a ConfigMap.

    Returns ``(object, conflict)``: ``object`` is the ConfigMap to create or merge-patch
    (None when the bundle already holds this graph), ``conflict`` a message when another
    workflow already owns the agent type's key (the bundle is then left alone). ``current``
    is the bundle as read (None: absent). A ``null`` entry in the patch removes the key of
    the other encoding (``.json`` ↔ ``.json.gz``) when the graph crossed the inline limit.
    """
    spec = parse_spec(obj)
    if isinstance(spec, Invalid):
        return None, None
    stem = bundle_key(spec.agent_type)
    want: dict[str, dict[str, str | None]]
    if len(graph.graph_json.encode()) <= CONFIGMAP_INLINE_LIMIT:
        want = {"data": {f"{stem}.json": graph.graph_json}, "binaryData": {f"{stem}.json.gz": None}}
    else:
        packed = base64.b64encode(gzip.compress(graph.graph_json.encode(), mtime=0)).decode()
        want = {"data": {f"{stem}.json": None}, "binaryData": {f"{stem}.json.gz": packed}}
    what = f"agent type {spec.agent_type!r}"
    return _BUNDLE.key_patch(obj, current, want, stem=stem, what=what, name=name, namespace=namespace)


def bundle_removal(obj: Mapping[str, Any], agent_type: str, current: Mapping[str, Any] | None) -> Json | None:
    """The merge patch that removes ``obj``'s key from the bundle (deleted workflow, or one
    switched to redis storage); None when the bundle holds no key written by ``obj``."""
    stem = bundle_key(agent_type)
    keys = {"data": [f"{stem}.json"], "binaryData": [f"{stem}.json.gz"]}
    return _BUNDLE.key_removal(obj, current, keys, stem=stem)
