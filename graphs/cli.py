"""``saga graphs``: build Agent Execution Graphs from traces and show them.

- ``saga graphs build TRACES... -o graph.json [--skip-bad] [--format F]``: read the traces
  (format detected per file: WEKA Claude Code, Mooncake, OTLP JSON, SAGA event log), build one
  graph per agent type and write the versioned JSON document.
- ``saga graphs show graph.json [--png out.png | --svg out.svg]``: text summary, and a picture.

Extension point: after creating its own sub-commands, :func:`register` calls
``saga.graphs.retention.cli.register_eval(graph_subparsers)`` when that module exists, so the
retention evaluator adds ``saga graphs eval`` to the same ``graphs`` parser. ``graph_subparsers``
is the ``argparse`` sub-parsers object of ``saga graphs``; ``register_eval`` should call
``graph_subparsers.add_parser("eval", ...)`` and ``set_defaults(handler=fn)``.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any

from tqdm import tqdm

from saga.graphs.aeg import GraphFormatError, GraphSet, build_graphs
from saga.graphs.ingest import FORMATS, read_traces
from saga.graphs.trace import TraceError

RETENTION_CLI = "saga.graphs.retention.cli"  # module whose register_eval(graph_subparsers) adds `eval`


def register(subparsers: Any) -> None:
    """Add ``graphs`` with ``build`` and ``show`` (and ``eval`` from the retention module)."""
    p = subparsers.add_parser("graphs", help="build, show and evaluate Agent Execution Graphs")
    p.set_defaults(handler=lambda _args: (p.print_help(), 2)[1])
    sub = p.add_subparsers(dest="graphs_command", metavar="SUBCOMMAND")

    b = sub.add_parser("build", help="build graphs from traces and write graph.json")
    b.add_argument("traces", nargs="+", type=Path, help="trace files (.jsonl, .json, optionally .xz/.gz)")
    b.add_argument("-o", "--output", type=Path, required=True, help="where to write the graph document")
    b.add_argument(
        "--skip-bad", action="store_true", help="skip corrupt records (counted) instead of failing"
    )
    b.add_argument("--format", choices=sorted(FORMATS), help="force a format instead of detecting it")
    b.set_defaults(handler=cmd_build)

    s = sub.add_parser("show", help="summarise a graph document and draw it")
    s.add_argument("graph", type=Path)
    g = s.add_mutually_exclusive_group()
    g.add_argument("--png", type=Path, metavar="OUT.png", help="write a PNG picture")
    g.add_argument("--svg", type=Path, metavar="OUT.svg", help="write an SVG picture")
    s.set_defaults(handler=cmd_show)

    if _available(RETENTION_CLI):
        importlib.import_module(RETENTION_CLI).register_eval(sub)


def _available(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


def cmd_build(args: argparse.Namespace) -> int:
    paths: list[Path] = args.traces
    try:
        with tqdm(total=len(paths), desc="reading traces", unit="file", disable=None) as bar:

            def step_file(_path: str) -> None:
                bar.update()

            res = read_traces(paths, args.skip_bad, fmt=args.format, progress=step_file)
        with tqdm(total=len(res.sessions), desc="building graphs", unit="session", disable=None) as bar:

            def step_session() -> None:
                bar.update()

            gs = build_graphs(res.sessions, progress=step_session)
    except TraceError as e:
        print(f"error: {e}", file=sys.stderr)
        print("hint: --skip-bad skips corrupt records and reports how many", file=sys.stderr)
        return 1
    doc = gs.to_json()
    args.output.write_text(doc)
    calls = sum(s.total_calls for s in res.sessions)
    print(
        f"read {len(res.sessions)} sessions ({calls} LLM calls) from {len(paths)} file(s); "
        f"skipped {res.skipped} bad record(s)"
    )
    for err in res.errors[:5]:
        print(f"  skipped: {err}")
    if res.skipped > 5:
        print(f"  … and {res.skipped - 5} more")
    print(f"wrote {args.output} ({len(doc):,} bytes; agent types: {', '.join(gs.agent_types())})")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from saga.graphs.viz import draw, summary

    try:
        gs = GraphSet.from_json(Path(args.graph).read_text())
    except (OSError, GraphFormatError) as e:
        print(f"error: {args.graph}: {e}", file=sys.stderr)
        return 1
    print(summary(gs))
    out = args.png or args.svg
    if out is not None:
        draw(gs, out)
        print(f"wrote {out}")
    return 0
