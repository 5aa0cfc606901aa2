"""I/O for ``AgentWorkflow``: fetch trace text, build the graph, publish it to the state store.

- :func:`fetch_traces`: the JSON-lines text of a workflow's traces from a ConfigMap key, a
  Redis string key, or the newest ``max_entries`` entries of a Redis stream (the SDK event
  stream: each entry's ``line`` field holds one trace line). Missing sources raise
  :class:`SourceUnavailable` (the handler retries: a ConfigMap or key can appear later).
- :func:`build_graph`: write the text to a temporary file, ingest it with
  ``saga.graphs.ingest`` (bad records skipped and counted), keep the sessions of the
  workflow's agent type (and its sub-agent types ``<type>/<sub>``), build the AEG with
  ``saga.graphs.aeg.build_graphs`` and serialize it canonically (sorted keys) so that the
  digest, and hence the version, only changes when the graph does. CPU-bound: the handler
  runs it in a worker thread.
- :func:`read_stored` / :func:`put_stored` (``storage: redis``): the agent type's graph
  document in the state store (``saga.service.state``'s :class:`RedisStore`, fail-closed:
  an outage raises :class:`SourceUnavailable` and the handler retries), the one layout the
  scheduler reads with ``spec.graphs.from_store``. The put is a compare-and-set on the
  version the reconcile function was given.
- :func:`delete_stored`: delete a workflow's published document (workflow deleted, or moved
  to other storage), only while the store still holds this workflow's graph (same digest),
  at the version read (compare-and-delete).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from saga.graphs.aeg import build_graphs
from saga.graphs.ingest import IngestResult, read_traces
from saga.graphs.trace import TraceError
from saga.operator.kube import KubeClient
from saga.operator.reconcile.agentworkflow import BuiltGraph, StoredGraph, StorePut, TraceSource, graph_digest


class SourceUnavailable(Exception):
    """The trace source does not exist (yet) or cannot be reached; worth retrying."""


class TraceBuildError(Exception):
    """The traces cannot be turned into a graph (a format problem the user must fix)."""


async def fetch_traces(kube: KubeClient, source: TraceSource, namespace: str, default_redis_url: str) -> str:
    if source.kind == "configMap":
        cm = await kube.get("v1", "ConfigMap", namespace, source.name)
        if cm is None:
            raise SourceUnavailable(f"ConfigMap {namespace}/{source.name} not found")
        data = cm.get("data") or {}
        if source.key not in data:
            have = ", ".join(sorted(data)) or "none"
            raise SourceUnavailable(
                f"ConfigMap {namespace}/{source.name} has no key {source.key!r} (it has: {have})"
            )
        return str(data[source.key])
    url = source.url or default_redis_url
    if not url:
        raise SourceUnavailable("no Redis URL: set spec.source.<kind>.url or the operator's --redis-url")
    import redis.asyncio as aioredis

    client = aioredis.from_url(url)
    try:
        if source.kind == "redis":
            raw = await client.get(source.key)
            if raw is None:
                raise SourceUnavailable(f"Redis key {source.key!r} not found")
            return raw.decode() if isinstance(raw, bytes) else str(raw)
        entries = await client.xrevrange(source.key, count=source.max_entries)
        if not entries:
            raise SourceUnavailable(f"Redis stream {source.key!r} is empty or missing")
        lines = []
        for _id, fields in reversed(entries):
            line = (fields or {}).get(b"line") or (fields or {}).get("line")
            if line is not None:
                lines.append(line.decode() if isinstance(line, bytes) else str(line))
        return "\n".join(lines) + "\n"
    except (OSError, aioredis.ConnectionError, aioredis.TimeoutError) as e:
        raise SourceUnavailable(f"Redis at {url}: {e}") from e
    finally:
        await client.aclose()


def _matches(agent_type: str, session_agent_type: str) -> bool:
    return session_agent_type == agent_type or session_agent_type.startswith(agent_type + "/")


def build_graph(text: str, agent_type: str, trace_format: str) -> BuiltGraph:
    """Ingest ``text`` (JSON lines) and build the canonical AEG JSON for ``agent_type``."""

    with tempfile.TemporaryDirectory(prefix="saga-aeg-") as tmp:
        path = Path(tmp) / "traces.jsonl"
        path.write_text(text, encoding="utf-8")
        try:
            result = _ingest(path, trace_format)
        except (TraceError, ValueError) as e:
            raise TraceBuildError(str(e)) from e
    sessions = [s for s in result.sessions if _matches(agent_type, s.agent_type)]
    graph_json = canonical_json(build_graphs(sessions).to_json())
    digest = graph_digest(graph_json)
    return BuiltGraph(
        graph_json=graph_json, digest=digest, sessions_seen=len(sessions), skipped=result.skipped
    )


def _ingest(path: Path, trace_format: str) -> IngestResult:
    fmt = None if trace_format == "auto" else trace_format
    return read_traces([path], skip_bad=True, fmt=fmt)


def canonical_json(value: Any) -> str:
    """JSON text with sorted keys (``value`` may already be JSON text)."""
    if isinstance(value, str):
        value = json.loads(value)
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _store(url: str, namespace: str) -> Any:
    from saga.service.state.redis_store import RedisStore

    return RedisStore(url, process_id="saga-operator", namespace=namespace, on_outage="fail")


async def read_stored(url: str, namespace: str, agent_type: str) -> StoredGraph | None:
    """Version and digest of the agent type's graph document in the state store (None: absent)."""
    from saga.service.state.api import StateError

    store = _store(url, namespace)
    try:
        doc = await store.get_graph(agent_type)
    except StateError as e:
        raise SourceUnavailable(f"state store at {url}: {e}") from e
    finally:
        await store.close()
    if doc is None:
        return None
    return StoredGraph(doc.version, graph_digest(canonical_json(doc.document)))


async def put_stored(url: str, namespace: str, put: StorePut) -> int:
    """Compare-and-set ``put``; the stored version (``expected_version + 1`` when written)."""
    from saga.service.state.api import StateError

    store = _store(url, namespace)
    try:
        return int(
            await store.put_graph(put.agent_type, dict(put.document), expected_version=put.expected_version)
        )
    except StateError as e:
        raise SourceUnavailable(f"state store at {url}: {e}") from e
    finally:
        await store.close()


async def delete_stored(url: str, namespace: str, agent_type: str, digest: str) -> bool:
    """Delete the agent type's graph document if it is still the graph with ``digest``.

    True if deleted; False when it is absent or holds another graph (another workflow of the
    agent type published since: its document stays).
    """
    from saga.service.state.api import StateError

    store = _store(url, namespace)
    try:
        doc = await store.get_graph(agent_type)
        if doc is None or graph_digest(canonical_json(doc.document)) != digest:
            return False
        return bool(await store.delete_graph(agent_type, expected_version=doc.version))
    except StateError as e:
        raise SourceUnavailable(f"state store at {url}: {e}") from e
    finally:
        await store.close()
