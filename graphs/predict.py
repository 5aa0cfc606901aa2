"""The AEG-backed :class:`~saga.graphs.api.Predictor`: table lookups, microseconds per call.

Per (agent type, last stop reason) the predictor precomputes, from a :class:`GraphSet`:

- for every edge (gap kind) and for the mixture of all edges (used when the scheduler does not
  know which tool is running): the gap's survival ``S(edge(k))`` at every time-bin edge, its
  quantile function tabulated at tail probabilities ``10^(-j/40)`` down to 1e-6, and the mean
  new prompt tokens of the next call;
- per position bucket: the probability that the session **ends** after this step, and the
  expected remaining calls, new prompt tokens, output tokens and wall time.

``next_call(pos, elapsed)`` then is: find the table and the position bucket, interpolate
``S(elapsed)`` (one ``log10``), and read each requested quantile of the *remaining* gap from
the tail table: the p-quantile of ``G | G >= e`` is the unconditional quantile at tail
probability ``(1−p)·S(e)``, minus ``e``. The continuation probability uses Bayes on the gap: a
session that ended never calls again, so after ``elapsed`` seconds of silence
``P(continue) = (1−p_end)·S(e) / ((1−p_end)·S(e) + p_end)``: long silences make continuation
less likely exactly as the heavy tail says.

Back-off (cold start): each quantity is the agent's own counts plus ``backoff_weight``
pseudo-observations of its parent: pooled graph (``"*"``) → per-tool-type prior
(:mod:`saga.graphs.priors`) → request-level behaviour. ``confidence`` is the agent's own
observations of the node, ``n/(n + confidence_half)``: 0 for an unseen agent type.

Tables are built lazily per (agent type, stop) and dropped when the graph set changes
(:meth:`observe` or another :meth:`GraphSet.update`), so a query after an update pays one
rebuild (about a millisecond); steady-state queries are dictionary lookups.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from saga.graphs.aeg import POOLED, REM_FIELDS, AgentExecutionGraph, GraphSet, Node
from saga.graphs.api import QUANTILE_LEVELS, NextCallPrediction, RemainingWork, SessionPosition
from saga.graphs.dist import TIME_SPEC, TOKEN_SPEC, LogHistogram
from saga.graphs.priors import AEGSettings, tool_prior
from saga.graphs.trace import STOP_END_TURN, TOOL_HUMAN, TOOL_UNKNOWN, SessionTrace

_MAX_TABLES = 4096  # (agent type, stop) tables kept; beyond it the cache is reset
_LOG_LO = math.log10(TIME_SPEC.lo)
_BPD = TIME_SPEC.bins_per_decade
_NB = TIME_SPEC.n_bins
# Unconditional gap quantiles are tabulated at tail probabilities 10^(-j/_TQ_RES), j = 0.._TQ_N
# (down to 1e-6): fine enough that interpolating between them is far below the bin resolution.
_TQ_RES = 40
_TQ_N = 6 * _TQ_RES
_TQ_LEVELS = tuple(1.0 - 10.0 ** (-j / _TQ_RES) for j in range(_TQ_N + 1))
_LOG_TAILS = tuple(math.log10(1.0 - p) for p in QUANTILE_LEVELS)


@dataclass(slots=True)
class _EdgeTable:
    tq: list[float]  # gap quantiles at the levels _TQ_LEVELS (tail probabilities 10^(-j/_TQ_RES))
    surv: list[float]  # per time bin k: P(gap >= edge(k)); one extra 0.0 at the end
    new_tokens: float
    confidence: float


@dataclass(slots=True)
class _NodeTable:
    p_end: list[float]  # per position bucket
    edges: dict[str, _EdgeTable]
    mix: _EdgeTable
    remaining: list[RemainingWork]  # per position bucket
    default_tool: str
    agent: str
    stop: str


class AEGPredictor:
    """Predictions at tool boundaries from Agent Execution Graphs (implements ``Predictor``)."""

    def __init__(self, graphs: GraphSet) -> None:
        self.graphs = graphs
        self.settings: AEGSettings = graphs.settings
        self._tables: dict[tuple[str, str], _NodeTable] = {}
        self._seen_version = graphs.version

    # ------------------------------------------------------------------ Predictor protocol
    def next_call(self, pos: SessionPosition, tool_elapsed_s: float) -> NextCallPrediction:
        nt = self._table(pos.agent_type, pos.last_stop)
        tool = pos.current_tool
        et = nt.mix if tool is None else nt.edges.get(tool) or self._edge_for_unseen(nt, tool)
        p_end = nt.p_end[self.settings.bucket(pos.steps_done)]
        e = tool_elapsed_s
        surv = et.surv
        if e < TIME_SPEC.lo:
            sv = 1.0 if e <= 0 else surv[0] + (e / TIME_SPEC.lo) * (surv[1] - surv[0])
        else:
            x = (math.log10(e) - _LOG_LO) * _BPD
            i = int(x)
            if i + 1 < _NB:
                sv = surv[i + 1] + (x - i) * (surv[i + 2] - surv[i + 1])
            else:
                sv = 0.0
        cont = (1.0 - p_end) * sv
        denom = cont + p_end
        p_cont = cont / denom if denom > 0 else 0.0
        # quantile p of G | G >= e is the unconditional quantile at tail probability (1-p)·S(e)
        tq = et.tq
        ls = math.log10(sv) if sv > 1e-300 else -300.0
        out = []
        for lt in _LOG_TAILS:
            y = -(lt + ls) * _TQ_RES
            if y >= _TQ_N:
                v = tq[_TQ_N]
            else:
                j = int(y)
                v = tq[j] + (y - j) * (tq[j + 1] - tq[j])
            out.append(v - e if v > e else 0.0)
        q = tuple(out)
        return NextCallPrediction(p_cont, q, et.new_tokens, et.confidence)

    def remaining(self, pos: SessionPosition) -> RemainingWork:
        return self._table(pos.agent_type, pos.last_stop).remaining[self.settings.bucket(pos.steps_done)]

    def observe(self, session: SessionTrace) -> None:
        self.graphs.update(session)

    # ------------------------------------------------------------------ tables
    def _table(self, agent: str, stop: str) -> _NodeTable:
        if self.graphs.version != self._seen_version:
            self._tables.clear()
            self._seen_version = self.graphs.version
        nt = self._tables.get((agent, stop))
        if nt is None:
            if len(self._tables) >= _MAX_TABLES:
                self._tables.clear()
            nt = self._tables[(agent, stop)] = self._build(agent, stop)
        return nt

    def _build(self, agent: str, stop: str) -> _NodeTable:
        st = self.settings
        w = st.backoff_weight
        nb = st.position_buckets
        pooled_g = self.graphs.get(POOLED)
        own_g = self.graphs.get(agent) if agent != POOLED else None
        pooled = pooled_g.nodes.get(stop) if pooled_g else None
        own = own_g.nodes.get(stop) if own_g else None
        own_v = own.total_visits if own else 0.0
        conf = own_v / (own_v + st.confidence_half)

        # termination per bucket: bucket -> node -> pooled node -> prior
        p0 = 1.0 - st.prior_p_continue
        p_pool = _rate(pooled.total_ends, pooled.total_visits, p0, w) if pooled else p0
        p_pool_b = [
            _rate(pooled.ends[b], pooled.visits[b], p_pool, w) if pooled else p_pool for b in range(nb)
        ]
        if own is not None:
            p_node = _rate(own.total_ends, own_v, p_pool, w)
            p_end = [_rate(own.ends[b], own.visits[b], 0.5 * (p_node + p_pool_b[b]), w) for b in range(nb)]
        else:
            p_end = p_pool_b

        default_tool = TOOL_HUMAN if stop == STOP_END_TURN else TOOL_UNKNOWN
        names = set(own.edges if own else ()) | set(pooled.edges if pooled else ())
        edges = {name: self._edge(own, pooled, name, conf) for name in names}
        mix = self._mix(own, pooled, default_tool, conf)
        remaining = self._remaining(own, pooled, conf)
        return _NodeTable(p_end, edges, mix, remaining, default_tool, agent, stop)

    def _edge(self, own: Node | None, pooled: Node | None, name: str, conf: float) -> _EdgeTable:
        w = self.settings.backoff_weight
        gap = tool_prior(name, w)
        tok = LogHistogram(TOKEN_SPEC)
        pe = pooled.edges.get(name) if pooled else None
        if pe is not None:
            gap = _backoff(pe.gap, gap, w)
            tok = pe.new_tokens
        oe = own.edges.get(name) if own else None
        if oe is not None:
            gap = _backoff(oe.gap, gap, w)
            tok = _backoff(oe.new_tokens, tok, w) if tok.total > 0 else oe.new_tokens
        return _edge_table(gap, tok, conf if oe is not None else 0.0)

    def _mix(self, own: Node | None, pooled: Node | None, default_tool: str, conf: float) -> _EdgeTable:
        w = self.settings.backoff_weight
        gap = tool_prior(default_tool, w)
        tok = LogHistogram(TOKEN_SPEC)
        for node in (pooled, own):
            if node is None or not node.edges:
                continue
            g = LogHistogram(TIME_SPEC)
            t = LogHistogram(TOKEN_SPEC)
            for e in node.edges.values():
                g.add_hist(e.gap)
                t.add_hist(e.new_tokens)
            gap = _backoff(g, gap, w)
            tok = _backoff(t, tok, w) if tok.total > 0 else t
        return _edge_table(gap, tok, conf)

    def _edge_for_unseen(self, nt: _NodeTable, tool: str) -> _EdgeTable:
        """A tool this node never saw: the per-tool-type prior blended with the node's mixture."""
        w = self.settings.backoff_weight
        et = _edge_table(tool_prior(tool, w), LogHistogram(TOKEN_SPEC), 0.0)
        et.new_tokens = nt.mix.new_tokens
        if len(nt.edges) < 256:  # remember it (bounded: tool names come from clients)
            nt.edges[tool] = et
        return et

    def _remaining(self, own: Node | None, pooled: Node | None, conf: float) -> list[RemainingWork]:
        w = self.settings.backoff_weight
        nb = self.settings.position_buckets
        zero = [0.0] * (len(REM_FIELDS) - 1)

        def means(rows: list[list[float]], parent: list[float]) -> list[float]:
            n = sum(r[0] for r in rows)
            tot = [sum(r[i] for r in rows) for i in range(1, len(REM_FIELDS))]
            return [(tot[i] + w * parent[i]) / (n + w) for i in range(len(tot))]

        pool_node = means(pooled.remaining, zero) if pooled else zero
        pool_b = [means([pooled.remaining[b]], pool_node) if pooled else pool_node for b in range(nb)]
        out = []
        own_node = means(own.remaining, pool_node) if own else pool_node
        for b in range(nb):
            parent = [0.5 * (x + y) for x, y in zip(own_node, pool_b[b], strict=True)]
            m = means([own.remaining[b]], parent) if own else pool_b[b]
            out.append(RemainingWork(m[0], m[1], m[2], m[3], conf))
        return out


def _rate(events: float, n: float, parent: float, w: float) -> float:
    return (events + w * parent) / (n + w)


def _backoff(own: LogHistogram, parent: LogHistogram, w: float) -> LogHistogram:
    h = LogHistogram(own.spec, own.counts)
    h.add_hist(parent.normalized(w))
    return h


def _edge_table(gap: LogHistogram, tok: LogHistogram, conf: float) -> _EdgeTable:
    tq = list(gap.quantiles(_TQ_LEVELS))
    surv = [gap.survival_at_bin(k) for k in range(_NB)] + [0.0]
    return _EdgeTable(tq, surv, tok.mean(), conf)


def graph_predictor(graphs: GraphSet | None = None) -> AEGPredictor:
    """An :class:`AEGPredictor` over ``graphs`` (an empty set: priors and request-level only)."""
    return AEGPredictor(graphs if graphs is not None else GraphSet())


__all__ = ["AEGPredictor", "AgentExecutionGraph", "graph_predictor"]
