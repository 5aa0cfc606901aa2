"""Agent Execution Graphs (AEG): per agent type, a Markov graph of LLM steps and tool gaps.

Model. An agent session alternates LLM calls and gaps (tool executions, a person replying,
sub-agents running). One :class:`AgentExecutionGraph` per agent type has:

- **LLM-step nodes**, one per stop reason of the response (``tool_use``, ``end_turn``, ``""``):
  what the scheduler sees when a response finishes. Each node counts, per *position bucket*
  (steps 1, 2, 3-4, 5-8, ...), how often the session made another call and how often it
  ended there: the **termination probability depends on position and last stop reason**.
- **Edges** from a node to the gap that followed, named by tool (``"bash"``; ``"tool"`` when
  the source does not name it; ``"human"`` after ``end_turn``; ``"agent:<type>"`` when the
  response spawned a sub-agent, i.e. a **fork** whose gap ends at the **join**, the parent's
  next call). An edge has a transition count (→ transition probability), the distribution of
  the **time to the next call** measured from the start of the gap (log histogram, heavy tail
  kept), the distribution of **new (uncached) prompt tokens** of that next call, and the stop
  reasons the next call ended with (the edge back to a node).
- **Remaining work** per node and position bucket: sums of calls, new prompt tokens, output
  tokens and wall time still to come (own calls plus the sub-agents spawned from there on).

New prompt tokens of call ``j``: when both calls carry block hashes, the prompt minus the
longest common hashed prefix with call ``j-1`` (hashes are cumulative, so it is found by binary
search); otherwise the prompt minus the previous call's prompt and output; the first call
counts its prompt minus the agent type's ``shared_prefix_tokens``.

A :class:`GraphSet` holds one graph per agent type plus a pooled graph (key ``"*"``) over all
types, which is the first fallback for sparse edges and unseen agent types (see
:mod:`saga.graphs.priors` for the rest of the cold-start chain). Everything is counts and
sums, so :meth:`GraphSet.update` with a finished session (online learning) gives exactly the
graphs that building from scratch with that session included would give.

Serialised by :meth:`GraphSet.to_json` as a versioned JSON document (``kind``
``saga.graphs/GraphSet``, ``version`` 1) with sparse histograms and counts rounded to 5
significant digits; for the 471 development Claude Code sessions it is 13.6 KB and for the
Mooncake conversation trace 3 KB (``bench/results/graphs_calibration.md``), far below a
ConfigMap's 1 MiB: the size grows with agent types and tool names, not with sessions.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from saga.graphs.dist import TIME_SPEC, TOKEN_SPEC, BinSpec, LogHistogram, _sig
from saga.graphs.priors import SUBAGENT_PREFIX, AEGSettings
from saga.graphs.trace import STOP_END_TURN, TOOL_HUMAN, TOOL_UNKNOWN, SessionTrace, ToolCall

GRAPH_DOC_KIND = "saga.graphs/GraphSet"
GRAPH_DOC_VERSION = 1
POOLED = "*"  # key of the graph pooled over all agent types
REM_FIELDS = ("n", "calls", "prefill_tokens", "output_tokens", "time_s")


class GraphFormatError(ValueError):
    """A graph document that cannot be loaded; the message names the JSON path."""


@dataclass(slots=True)
class Edge:
    """Transition from an LLM-step node into one kind of gap, and back to the next call."""

    count: float = 0.0
    gap: LogHistogram = field(default_factory=lambda: LogHistogram(TIME_SPEC))  # s from gap start
    new_tokens: LogHistogram = field(default_factory=lambda: LogHistogram(TOKEN_SPEC))  # of the next call
    next_stop: dict[str, float] = field(default_factory=dict)


@dataclass(slots=True)
class Node:
    """An LLM step whose response ended with a given stop reason."""

    visits: list[float]  # per position bucket
    ends: list[float]  # per position bucket: the session ended after this step
    edges: dict[str, Edge] = field(default_factory=dict)
    output_tokens: LogHistogram = field(default_factory=lambda: LogHistogram(TOKEN_SPEC))
    remaining: list[list[float]] = field(default_factory=list)  # per bucket: REM_FIELDS sums

    @classmethod
    def empty(cls, buckets: int) -> Node:
        return cls(
            [0.0] * buckets, [0.0] * buckets, remaining=[[0.0] * len(REM_FIELDS) for _ in range(buckets)]
        )

    @property
    def total_visits(self) -> float:
        return sum(self.visits)

    @property
    def total_ends(self) -> float:
        return sum(self.ends)


class AgentExecutionGraph:
    """The graph of one agent type (see the module docstring)."""

    def __init__(self, agent_type: str, settings: AEGSettings) -> None:
        self.agent_type = agent_type
        self.settings = settings
        self.sessions = 0.0
        self.first_stop: dict[str, float] = {}
        self.first_new_tokens = LogHistogram(TOKEN_SPEC)
        self.nodes: dict[str, Node] = {}

    def node(self, stop: str) -> Node:
        n = self.nodes.get(stop)
        if n is None:
            n = self.nodes[stop] = Node.empty(self.settings.position_buckets)
        return n

    @property
    def calls(self) -> float:
        return sum(n.total_visits for n in self.nodes.values())

    def confidence(self, stop: str) -> float:
        n = self.nodes.get(stop)
        v = n.total_visits if n else 0.0
        return v / (v + self.settings.confidence_half)

    def add_session(self, s: SessionTrace) -> None:
        """Count one finished session (its own calls; sub-agents belong to their own types)."""
        calls = s.calls
        n = len(calls)
        new = new_tokens(s)
        sub_by_call: dict[int, list[SessionTrace]] = {}
        for sub in s.subagents:
            sub_by_call.setdefault(sub.after_call, []).append(sub.session)
        gaps = step_gaps(s)
        # work still to come after call k: own calls k+1.. plus sub-agents forked at k or later
        sub_work = [[0.0, 0.0, 0.0] for _ in range(n)]  # (calls, new tokens, output) forked at k
        for k, subs in sub_by_call.items():
            for sub_s in subs:
                for x in sub_s.walk():
                    w = sub_work[max(0, k)]
                    w[0] += len(x.calls)
                    w[1] += sum(new_tokens(x))
                    w[2] += sum(cc.output_tokens for cc in x.calls)
        suf = [[0.0, 0.0, 0.0] for _ in range(n + 1)]  # own + forked work from call k on
        for k in range(n - 1, -1, -1):
            own = (1.0, float(new[k]), float(calls[k].output_tokens))
            suf[k] = [suf[k + 1][i] + own[i] + sub_work[k][i] for i in range(3)]
        duration = s.duration_s
        self.sessions += 1
        self.first_stop[calls[0].stop] = self.first_stop.get(calls[0].stop, 0.0) + 1
        self.first_new_tokens.add(new[0])
        for k, c in enumerate(calls):
            b = self.settings.bucket(k + 1)
            node = self.node(c.stop)
            node.visits[b] += 1
            node.output_tokens.add(c.output_tokens)
            rem = node.remaining[b]
            rem[0] += 1
            for i in range(3):
                rem[1 + i] += suf[k + 1][i] + sub_work[k][i]
            rem[4] += max(0.0, duration - c.end_s)
            if k == n - 1:
                node.ends[b] += 1
                continue
            nxt = calls[k + 1]
            name, gap = gaps[k]
            e = node.edges.get(name)
            if e is None:
                e = node.edges[name] = Edge()
            e.count += 1
            e.gap.add(gap)
            e.new_tokens.add(new[k + 1])
            e.next_stop[nxt.stop] = e.next_stop.get(nxt.stop, 0.0) + 1

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        return {
            "agent_type": self.agent_type,
            "sessions": self.sessions,
            "first_stop": {k: _sig(v, 5) for k, v in self.first_stop.items()},
            "first_new_tokens": self.first_new_tokens.to_sparse(),
            "nodes": {
                stop: {
                    "visits": [_sig(v, 5) for v in n.visits],
                    "ends": [_sig(v, 5) for v in n.ends],
                    "output_tokens": n.output_tokens.to_sparse(),
                    "remaining": [[_sig(v, 5) for v in r] for r in n.remaining],
                    "edges": {
                        name: {
                            "count": _sig(e.count, 5),
                            "gap_s": e.gap.to_sparse(),
                            "new_tokens": e.new_tokens.to_sparse(),
                            "next_stop": {k: _sig(v, 5) for k, v in e.next_stop.items()},
                        }
                        for name, e in sorted(n.edges.items())
                    },
                }
                for stop, n in sorted(self.nodes.items())
            },
        }

    @classmethod
    def from_dict(cls, d: Any, settings: AEGSettings, where: str) -> AgentExecutionGraph:
        r = _Reader(where)
        d = r.obj(d, "")
        g = cls(r.string(d, "agent_type"), settings)
        g.sessions = r.num(d, "sessions")
        g.first_stop = r.counts(d, "first_stop")
        g.first_new_tokens = r.hist(d, "first_new_tokens", TOKEN_SPEC)
        nb = settings.position_buckets
        for stop, nd in r.obj(d.get("nodes"), "nodes").items():
            p = f"nodes.{stop}"
            nd = r.obj(nd, p)
            node = Node(
                visits=r.vector(nd, "visits", nb, p),
                ends=r.vector(nd, "ends", nb, p),
                output_tokens=r.hist(nd, "output_tokens", TOKEN_SPEC, p),
                remaining=[
                    r.vector({"row": row}, "row", len(REM_FIELDS), f"{p}.remaining[{i}]")
                    for i, row in enumerate(r.list_of(nd, "remaining", nb, p))
                ],
            )
            for name, ed in r.obj(nd.get("edges"), f"{p}.edges").items():
                q = f"{p}.edges.{name}"
                ed = r.obj(ed, q)
                node.edges[name] = Edge(
                    count=r.num(ed, "count", q),
                    gap=r.hist(ed, "gap_s", TIME_SPEC, q),
                    new_tokens=r.hist(ed, "new_tokens", TOKEN_SPEC, q),
                    next_stop=r.counts(ed, "next_stop", q),
                )
            g.nodes[stop] = node
        return g


class GraphSet:
    """One :class:`AgentExecutionGraph` per agent type, plus the pooled graph ``"*"``."""

    def __init__(self, settings: AEGSettings | None = None) -> None:
        self.settings = settings or AEGSettings()
        self.graphs: dict[str, AgentExecutionGraph] = {}
        self.version = 0  # bumped by every update (predictors use it to refresh their tables)

    def get(self, agent_type: str) -> AgentExecutionGraph | None:
        return self.graphs.get(agent_type)

    @property
    def pooled(self) -> AgentExecutionGraph:
        return self._graph(POOLED)

    def _graph(self, agent_type: str) -> AgentExecutionGraph:
        g = self.graphs.get(agent_type)
        if g is None:
            g = self.graphs[agent_type] = AgentExecutionGraph(agent_type, self.settings)
        return g

    def update(self, session: SessionTrace) -> None:
        """Online update with one finished session (and its sub-agents, under their own types)."""
        for s in session.walk():
            self._graph(s.agent_type).add_session(s)
            self._graph(POOLED).add_session(s)
        self.version += 1

    def agent_types(self) -> list[str]:
        return sorted(k for k in self.graphs if k != POOLED)

    # ------------------------------------------------------------------ serialisation
    def to_json(self) -> str:
        doc = {
            "kind": GRAPH_DOC_KIND,
            "version": GRAPH_DOC_VERSION,
            "bins": {"time_s": _spec_list(TIME_SPEC), "tokens": _spec_list(TOKEN_SPEC)},
            "settings": {
                "backoff_weight": self.settings.backoff_weight,
                "confidence_half": self.settings.confidence_half,
                "position_buckets": self.settings.position_buckets,
                "prior_p_continue": self.settings.prior_p_continue,
            },
            "graphs": {k: g.to_dict() for k, g in sorted(self.graphs.items())},
        }
        return json.dumps(doc, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> GraphSet:
        """Load a document written by :meth:`to_json`; errors name the JSON path."""
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as e:
            raise GraphFormatError(f"not JSON: {e}") from e
        r = _Reader("")
        doc = r.obj(doc, "")
        if doc.get("kind") != GRAPH_DOC_KIND:
            raise GraphFormatError(f"kind: expected {GRAPH_DOC_KIND!r}, got {doc.get('kind')!r}")
        if doc.get("version") != GRAPH_DOC_VERSION:
            raise GraphFormatError(
                f"version: this reader knows {GRAPH_DOC_VERSION}, got {doc.get('version')!r}"
            )
        bins = r.obj(doc.get("bins"), "bins")
        for key, spec in (("time_s", TIME_SPEC), ("tokens", TOKEN_SPEC)):
            if bins.get(key) != _spec_list(spec):
                raise GraphFormatError(f"bins.{key}: expected {_spec_list(spec)}, got {bins.get(key)!r}")
        st = r.obj(doc.get("settings"), "settings")
        try:
            settings = AEGSettings(
                backoff_weight=float(st["backoff_weight"]),
                confidence_half=float(st["confidence_half"]),
                position_buckets=int(st["position_buckets"]),
                prior_p_continue=float(st["prior_p_continue"]),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise GraphFormatError(f"settings: {e!r}") from e
        gs = cls(settings)
        for k, gd in r.obj(doc.get("graphs"), "graphs").items():
            gs.graphs[k] = AgentExecutionGraph.from_dict(gd, settings, f"graphs.{k}")
        return gs


def build_graphs(
    sessions: Iterable[SessionTrace],
    settings: AEGSettings | None = None,
    progress: Callable[[], None] | None = None,
) -> GraphSet:
    """Build a :class:`GraphSet` from finished sessions (``progress`` is called per session)."""
    gs = GraphSet(settings)
    for s in sessions:
        gs.update(s)
        if progress is not None:
            progress()
    return gs


def step_gaps(s: SessionTrace) -> list[tuple[str, float]]:
    """For each call but the last: the label of the gap that follows it and the time from the gap's
    start (the tool's start, else the call's end) to the next call, in seconds (>= 0).

    Label: ``agent:<type>`` when the response forked a sub-agent, else the first tool requested by
    the call, else ``human`` after ``end_turn`` and ``tool`` otherwise.
    """
    forks: dict[int, str] = {}
    for sub in s.subagents:
        forks.setdefault(sub.after_call, SUBAGENT_PREFIX + sub.session.agent_type)
    tools: dict[int, ToolCall] = {}
    for t in s.tools:
        tools.setdefault(t.after_call, t)
    out: list[tuple[str, float]] = []
    calls = s.calls
    for k in range(len(calls) - 1):
        c = calls[k]
        tool = tools.get(k)
        start = tool.start_s if tool is not None else c.end_s
        if k in forks:
            name = forks[k]
        elif tool is not None:
            name = tool.name
        else:
            name = TOOL_HUMAN if c.stop == STOP_END_TURN else TOOL_UNKNOWN
        out.append((name, max(0.0, calls[k + 1].start_s - start)))
    return out


def new_tokens(s: SessionTrace) -> list[int]:
    """Uncached new prompt tokens of each call of ``s`` (see the module docstring)."""
    out: list[int] = []
    prev = None
    bs = s.block_size
    for c in s.calls:
        if prev is None:
            out.append(max(0, c.prompt_tokens - s.shared_prefix_tokens))
        elif bs and c.block_hashes and prev.block_hashes:
            out.append(max(0, c.prompt_tokens - common_prefix_blocks(prev.block_hashes, c.block_hashes) * bs))
        else:
            out.append(max(0, c.prompt_tokens - prev.prompt_tokens - prev.output_tokens))
        prev = c
    return out


def common_prefix_blocks(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    """Length of the common prefix of two cumulative hash lists (binary search: a match at i
    implies matches before i)."""
    lo, hi = 0, min(len(a), len(b))
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[mid - 1] == b[mid - 1]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _spec_list(spec: BinSpec) -> list[float]:
    return [spec.lo, spec.decades, spec.bins_per_decade]


class _Reader:
    """Path-qualified checks for :meth:`GraphSet.from_json`."""

    def __init__(self, root: str) -> None:
        self.root = root

    def _p(self, path: str, key: str = "") -> str:
        parts = [x for x in (self.root, path, key) if x]
        return ".".join(parts) or "<document>"

    def obj(self, v: Any, path: str) -> dict[str, Any]:
        if not isinstance(v, dict):
            raise GraphFormatError(f"{self._p(path)}: expected an object")
        return v

    def num(self, d: dict[str, Any], key: str, path: str = "") -> float:
        v = d.get(key)
        if isinstance(v, bool) or not isinstance(v, int | float) or v < 0:
            raise GraphFormatError(f"{self._p(path, key)}: expected a number >= 0, got {v!r}")
        return float(v)

    def string(self, d: dict[str, Any], key: str) -> str:
        v = d.get(key)
        if not isinstance(v, str):
            raise GraphFormatError(f"{self._p('', key)}: expected a string")
        return v

    def counts(self, d: dict[str, Any], key: str, path: str = "") -> dict[str, float]:
        m = self.obj(d.get(key), f"{path}.{key}" if path else key)
        return {k: self.num(m, k, f"{path}.{key}" if path else key) for k in m}

    def list_of(self, d: dict[str, Any], key: str, n: int, path: str) -> list[Any]:
        v = d.get(key)
        if not isinstance(v, list) or len(v) != n:
            raise GraphFormatError(f"{self._p(path, key)}: expected a list of {n}")
        return v

    def vector(self, d: dict[str, Any], key: str, n: int, path: str) -> list[float]:
        v = self.list_of(d, key, n, path)
        if not all(isinstance(x, int | float) and not isinstance(x, bool) and x >= 0 for x in v):
            raise GraphFormatError(f"{self._p(path, key)}: expected numbers >= 0")
        return [float(x) for x in v]

    def hist(self, d: dict[str, Any], key: str, spec: BinSpec, path: str = "") -> LogHistogram:
        try:
            return LogHistogram.from_sparse(spec, d.get(key), self._p(path, key))
        except ValueError as e:
            raise GraphFormatError(str(e)) from e
