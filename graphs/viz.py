"""Text summary and picture of a :class:`GraphSet` (``saga graphs show``).

The picture is drawn with matplotlib's object API (no pyplot global state, no graphviz binary):
one panel per agent type (the most-observed ones first), columns ``start`` → LLM-step nodes
(one per stop reason) → gap nodes (tools, ``human``, sub-agent forks) → back to the LLM steps,
and ``end``. Arrow width and label give the transition probability; gap nodes show the
median and p90 of the time to the next call.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from saga.graphs.aeg import POOLED, AgentExecutionGraph, GraphSet
from saga.graphs.dist import TIME_SPEC, LogHistogram

_STOP_LABEL = {"tool_use": "LLM→tool_use", "end_turn": "LLM→end_turn", "": "LLM→(no stop)"}


def _fmt_s(x: float) -> str:
    if x < 1:
        return f"{x * 1000:.0f}ms"
    if x < 120:
        return f"{x:.1f}s"
    if x < 7200:
        return f"{x / 60:.1f}min"
    return f"{x / 3600:.1f}h"


def summary(gs: GraphSet, max_edges: int = 8) -> str:
    """A plain-text description of every graph (sessions, nodes, edges, gaps, termination)."""
    lines = [f"GraphSet: {len(gs.agent_types())} agent types; document {len(gs.to_json()):,} bytes"]
    for at in gs.agent_types() + ([POOLED] if POOLED in gs.graphs else []):
        g = gs.graphs[at]
        lines.append("")
        lines.append(f"agent type {at!r}: {g.sessions:.0f} sessions, {g.calls:.0f} LLM calls")
        for stop, node in sorted(g.nodes.items(), key=lambda kv: -kv[1].total_visits):
            v = node.total_visits
            p_end = node.total_ends / v if v else 0.0
            lines.append(
                f"  node {_STOP_LABEL.get(stop, stop)}: {v:.0f} visits, P(end)={p_end:.3f}, "
                f"confidence={g.confidence(stop):.2f}, "
                f"output tokens p50={node.output_tokens.quantile(0.5):.0f}"
            )
            edges = sorted(node.edges.items(), key=lambda kv: -kv[1].count)
            for name, e in edges[:max_edges]:
                q50, q90, q99 = e.gap.quantiles((0.5, 0.9, 0.99))
                lines.append(
                    f"    → {name}: P={e.count / v:.3f} (n={e.count:.0f}); next call in p50 {_fmt_s(q50)}, "
                    f"p90 {_fmt_s(q90)}, p99 {_fmt_s(q99)}; new tokens p50 {e.new_tokens.quantile(0.5):.0f}"
                )
            if len(edges) > max_edges:
                lines.append(f"    … {len(edges) - max_edges} more edges")
    return "\n".join(lines)


def draw(gs: GraphSet, path: str | Path, max_panels: int = 4) -> None:
    """Write a PNG or SVG (by suffix) picture of the most-observed agent types' graphs."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    types = sorted(gs.agent_types(), key=lambda t: -gs.graphs[t].calls)[:max_panels] or (
        [POOLED] if POOLED in gs.graphs else []
    )
    n = max(1, len(types))
    fig = Figure(figsize=(11, 4.2 * n))
    FigureCanvasAgg(fig)
    for i, at in enumerate(types):
        ax = fig.add_subplot(n, 1, i + 1)
        _panel(ax, gs.graphs[at])
    if not types:
        ax = fig.add_subplot(1, 1, 1)
        ax.text(0.5, 0.5, "empty graph set", ha="center")
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(str(path))


def _panel(a: Any, g: AgentExecutionGraph) -> None:
    stops = sorted(g.nodes, key=lambda s: -g.nodes[s].total_visits)
    gaps: dict[str, float] = {}
    for node in g.nodes.values():
        for name, e in node.edges.items():
            gaps[name] = gaps.get(name, 0.0) + e.count
    gap_names = sorted(gaps, key=lambda k: -gaps[k])[:8]
    pos: dict[str, tuple[float, float]] = {"start": (0.0, 0.5), "end": (3.0, 0.5)}
    for j, s in enumerate(stops):
        pos["L:" + s] = (1.0, (j + 1) / (len(stops) + 1))
    for j, name in enumerate(gap_names):
        pos["G:" + name] = (2.0, (j + 1) / (len(gap_names) + 1))

    def arrow(src: str, dst: str, p: float, rad: float = 0.0) -> None:
        if p < 0.005 or src not in pos or dst not in pos:
            return
        a.annotate(
            "",
            xy=pos[dst],
            xytext=pos[src],
            arrowprops={
                "arrowstyle": "-|>",
                "lw": 0.5 + 4 * p,
                "alpha": 0.6,
                "color": "tab:blue",
                "connectionstyle": f"arc3,rad={rad}",
                "shrinkA": 14,
                "shrinkB": 14,
            },
        )
        (x0, y0), (x1, y1) = pos[src], pos[dst]
        a.text((x0 + x1) / 2, (y0 + y1) / 2 + rad * 0.3, f"{p:.2f}", fontsize=7, color="tab:blue")

    total_first = sum(g.first_stop.values()) or 1.0
    for s, c in g.first_stop.items():
        arrow("start", "L:" + s, c / total_first)
    for s in stops:
        node = g.nodes[s]
        v = node.total_visits or 1.0
        arrow("L:" + s, "end", node.total_ends / v, rad=-0.3)
        for name, e in node.edges.items():
            arrow("L:" + s, "G:" + name, e.count / v)
    for name in gap_names:
        nxt: dict[str, float] = {}
        for node in g.nodes.values():
            ne = node.edges.get(name)
            if ne is not None:
                for s, c in ne.next_stop.items():
                    nxt[s] = nxt.get(s, 0.0) + c
        tot = sum(nxt.values()) or 1.0
        for s, c in nxt.items():
            arrow("G:" + name, "L:" + s, c / tot, rad=0.35)
    for key, (x, y) in pos.items():
        if key.startswith("L:"):
            node = g.nodes[key[2:]]
            label = f"{_STOP_LABEL.get(key[2:], key[2:])}\n{node.total_visits:.0f} steps"
            color = "lightyellow"
        elif key.startswith("G:"):
            name = key[2:]
            hist = LogHistogram(TIME_SPEC)
            for node in g.nodes.values():
                ge = node.edges.get(name)
                if ge is not None:
                    hist.add_hist(ge.gap)
            q50, q90 = hist.quantiles((0.5, 0.9))
            label = f"{name}\np50 {_fmt_s(q50)} p90 {_fmt_s(q90)}"
            color = "lightcyan"
        else:
            label, color = key, "lightgrey"
        a.text(x, y, label, ha="center", va="center", fontsize=8, bbox={"boxstyle": "round", "fc": color})
    a.set_xlim(-0.4, 3.4)
    a.set_ylim(0, 1)
    a.axis("off")
    a.set_title(f"{g.agent_type}: {g.sessions:.0f} sessions, {g.calls:.0f} LLM steps", fontsize=10)
