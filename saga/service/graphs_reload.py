"""Graph hot reload: the scheduler picks up new Agent Execution Graphs without a restart.

Where graphs come from (``spec.graphs``, docs/config.md):

* **a folder** (``directory``): every ``*.json`` / ``*.json.gz`` file below it (recursively;
  names starting with ``..`` are skipped: Kubernetes' ``..data`` and timestamped folders of a
  ConfigMap volume) holds one ``saga.graphs/GraphSet`` document: a ``<agentType>.json`` (or
  ``.json.gz``) key of the operator's graph bundle ConfigMap, which the Helm chart mounts here
  (docs/operator.md "Graphs"). Other files are ignored. Each file is read whole every poll
  and compared by SHA-256 digest: kubelet updates a mounted ConfigMap by an atomic symlink
  swap, so a reader sees the old or the new content, never a mix, and an unchanged file costs
  neither a parse nor a rebuild. The walk and the per-source bookkeeping are
  :class:`saga.service.reload_sources.SourceDocs`, shared with the tenant policy reloader.
* **the state store** (``from_store``): :meth:`StateStore.graph_versions` (one round trip) and
  :meth:`StateStore.get_graph` for the agent types whose version moved. A type that leaves
  the versions (deleted with :meth:`StateStore.delete_graph` when its ``AgentWorkflow`` is
  deleted) leaves the merged graphs at the next poll.

Merge: every document is a :class:`GraphSet` (its workflow's agent type, its sub-agent types and
the pooled ``"*"`` graph over its sessions). The merged set takes each agent type's graph from
one document (store documents win over files; among files, the later path in sorted order; a
type offered twice is logged) and sums the pooled graphs (AEGs are counts, so summing pooled
graphs of disjoint workflows equals the pooled graph of all their sessions). Documents whose
:class:`AEGSettings` differ from the first document's are refused (their counts are not
comparable).

Swap: when the set of (source, digest) pairs that load cleanly changes, a new
:class:`~saga.graphs.predict.AEGPredictor` is built and handed to ``apply`` (the service passes
``Engine.set_predictor``); the engine reads its predictor on each decision, so the swap is atomic
on the event loop. No documents at all → ``apply(None)`` (the engine's built-in prior).

Errors: a document that cannot be read or parsed is logged once per content (its source: file
path or ``store:<agent type>@v<N>``, and the reason naming the JSON path) and that source keeps
its last good document; if it never had one it contributes nothing. So a corrupt publish never
replaces a working predictor. docs/metrics.md has no metric for this; it is logged only.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from saga.graphs.aeg import POOLED, AgentExecutionGraph, Edge, GraphFormatError, GraphSet
from saga.graphs.api import Predictor
from saga.graphs.predict import AEGPredictor
from saga.service.config import GraphSettings
from saga.service.reload_sources import SourceDocs, poll_forever
from saga.service.state.api import StateError, StateStore

log = logging.getLogger(__name__)


@dataclass(slots=True)
class ReloadState:
    """What the reloader has applied (read by tests and operators' debugging)."""

    generation: int = 0  # predictors built so far
    sources: dict[str, str] = field(default_factory=dict)  # source → digest of the applied doc
    agent_types: list[str] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)  # source → last error (until it loads)


class GraphReloader:
    """Polls the configured sources and swaps the predictor when the graphs change."""

    def __init__(
        self,
        settings: GraphSettings,
        apply: Callable[[Predictor | None], None],
        *,
        store: StateStore | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.settings = settings
        self._apply = apply
        self._store = store if settings.from_store else None
        self._sleep = sleep
        self._store_versions: dict[str, int] = {}
        self._applied: tuple[tuple[str, str], ...] | None = None
        self.state = ReloadState()
        self._docs: SourceDocs[GraphSet] = SourceDocs(self.state.errors, self._rejected)
        self.predictor: AEGPredictor | None = None

    async def run(self) -> None:
        """Poll every ``poll_interval_s`` forever (a task of the service, started after the
        service's own first :meth:`poll`); one failed poll never stops the loop."""
        await poll_forever(self.poll, self.settings.poll_interval_s, self._sleep, log, "graph reload failed")

    async def poll(self) -> bool:
        """Read every source once; True when a new predictor was applied."""
        seen: set[str] = set()
        if self.settings.directory is not None:
            seen |= await asyncio.to_thread(
                self._docs.scan_folder,
                Path(self.settings.directory),
                (".json", ".json.gz"),
                _parse_file,
                (OSError, EOFError, UnicodeDecodeError, GraphFormatError),
            )
        if self._store is not None:
            seen |= await self._scan_store(self._store)
        self._docs.keep_only(seen)
        key = self._docs.digests()
        if key == self._applied:
            return False
        merged = self._merge()
        predictor = AEGPredictor(merged) if merged is not None else None
        self._apply(predictor)
        self.predictor = predictor
        self._applied = key
        self.state.generation += 1
        self.state.sources = dict(key)
        self.state.agent_types = merged.agent_types() if merged is not None else []
        log.info(
            "graphs reloaded (generation %d): %d documents, agent types %s",
            self.state.generation,
            len(key),
            ", ".join(self.state.agent_types) or "none",
        )
        return True

    # ------------------------------------------------------------------ sources

    async def _scan_store(self, store: StateStore) -> set[str]:
        try:
            versions = await store.graph_versions()
        except StateError as exc:
            log.warning("graph versions unavailable from the state store: %s", exc)
            return {s for s in (*self._docs.good, *self._docs.bad) if s.startswith("store:")}  # keep
        # A deleted type (StateStore.delete_graph) leaves the versions; forget its version too,
        # since a later put of it starts again at version 1.
        for gone in set(self._store_versions) - set(versions):
            del self._store_versions[gone]
        seen: set[str] = set()
        for agent_type, version in sorted(versions.items()):
            source = f"store:{agent_type}"
            seen.add(source)
            if self._store_versions.get(agent_type) == version:
                continue
            where = f"{source}@v{version}"
            try:
                doc = await store.get_graph(agent_type)
                if doc is None:
                    continue
                graphs = GraphSet.from_json(json.dumps(doc.document))
            except (StateError, GraphFormatError) as exc:
                self._docs.failed(source, f"v{version}", f"{where}: {exc}")
                self._store_versions[agent_type] = version
                continue
            self._store_versions[agent_type] = doc.version
            self._docs.loaded(source, f"v{doc.version}", graphs)
        return seen

    def _rejected(self, source: str, reason: str, kept: bool) -> None:
        what = "keeping its previous document" if kept else "ignored"
        log.error("graph document %s is invalid (%s): %s", source, what, reason)

    # ------------------------------------------------------------------ merge

    def _merge(self) -> GraphSet | None:
        good = self._docs.good
        if not good:
            return None
        # Files first (sorted by path), then store documents: later sources win per agent type.
        order = sorted(good, key=lambda s: (s.startswith("store:"), s))
        first = good[order[0]].doc
        merged = GraphSet(first.settings)
        owner: dict[str, str] = {}
        for source in order:
            gs = good[source].doc
            if gs.settings != first.settings:
                log.error("graph document %s: settings differ from %s; not used", source, order[0])
                continue
            for agent_type, g in gs.graphs.items():
                if agent_type == POOLED:
                    _add_graph(merged.pooled, g)
                    continue
                if agent_type in owner:
                    log.warning(
                        "agent type %r in %s and %s; using %s", agent_type, owner[agent_type], source, source
                    )
                owner[agent_type] = source
                merged.graphs[agent_type] = g
        return merged


def _parse_file(path: Path, raw: bytes) -> GraphSet:
    """A graph file's document: ``.json.gz`` is gunzipped first."""
    text = gzip.decompress(raw).decode() if path.name.endswith(".gz") else raw.decode()
    return GraphSet.from_json(text)


def _add_graph(dst: AgentExecutionGraph, src: AgentExecutionGraph) -> None:
    """Add ``src``'s counts into ``dst`` (same settings, so the same position buckets)."""
    dst.sessions += src.sessions
    _add_counts(dst.first_stop, src.first_stop)
    dst.first_new_tokens.add_hist(src.first_new_tokens)
    for stop, sn in src.nodes.items():
        dn = dst.node(stop)
        dn.visits = [a + b for a, b in zip(dn.visits, sn.visits, strict=True)]
        dn.ends = [a + b for a, b in zip(dn.ends, sn.ends, strict=True)]
        dn.output_tokens.add_hist(sn.output_tokens)
        dn.remaining = [
            [a + b for a, b in zip(ra, rb, strict=True)]
            for ra, rb in zip(dn.remaining, sn.remaining, strict=True)
        ]
        for name, se in src.nodes[stop].edges.items():
            de = dn.edges.get(name)
            if de is None:
                de = dn.edges[name] = Edge()
            de.count += se.count
            de.gap.add_hist(se.gap)
            de.new_tokens.add_hist(se.new_tokens)
            _add_counts(de.next_stop, se.next_stop)


def _add_counts(dst: dict[str, float], src: dict[str, float]) -> None:
    for k, v in src.items():
        dst[k] = dst.get(k, 0.0) + v
