"""Calibration of AEG predictions on held-out sessions (issue 3, item 3).

For each trace file: split sessions 75/25 by session-id hash, build graphs on the training
part, and score predictions at every tool boundary of the held-out part (see
``saga.graphs.calibration``) for three predictors side by side:

- ``aeg``: the AEG predictor (agent type, stop reason, tool, position);
- ``structure-free``: the same machinery trained with agent type, stop reason and tool names
  erased (one pooled gap distribution, one termination curve by position);
- ``priors-only``: no training data (per-tool-type priors, then request-level behaviour).

Also reports the graph document size when built from *all* sessions of each file.

    python bench/graphs_calibration.py                       # the public traces in ../shared/traces
    python bench/graphs_calibration.py --traces FILE [FILE...] --out-prefix bench/results/graphs_calibration

Writes ``<out-prefix>.json`` and ``<out-prefix>.md`` with the date, command and machine.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from saga.graphs.aeg import GraphSet, build_graphs
from saga.graphs.calibration import continuation_base_rate, erase, evaluate, split
from saga.graphs.ingest import read_traces
from saga.graphs.predict import AEGPredictor

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_TRACES = [
    ROOT.parent / "shared/traces/weka_cc_traces.dev.jsonl.xz",
    ROOT.parent / "shared/traces/mooncake_conversation_trace.jsonl",
]


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, {platform.system()}"


def run_file(path: Path, test_fraction: float) -> dict[str, object]:
    t0 = time.perf_counter()
    res = read_traces([path])
    sessions = res.sessions
    train, test = split(sessions, test_fraction)
    base = continuation_base_rate(train)
    predictors = {
        "aeg": (AEGPredictor(build_graphs(train)), False),
        "structure-free": (AEGPredictor(build_graphs([erase(s) for s in train])), True),
        "priors-only": (AEGPredictor(GraphSet()), False),
    }
    rows = {
        name: [asdict(r) for r in evaluate(p, test, base_rate=base, erase_structure=er)]
        for name, (p, er) in predictors.items()
    }
    full_doc = build_graphs(sessions).to_json()
    return {
        "file": path.name,
        "sessions": len(sessions),
        "train_sessions": len(train),
        "test_sessions": len(test),
        "skipped_records": res.skipped,
        "train_continuation_base_rate": base,
        "graph_document_bytes_all_sessions": len(full_doc.encode()),
        "seconds": round(time.perf_counter() - t0, 1),
        "predictors": rows,
    }


def to_markdown(report: dict[str, Any]) -> str:
    out = [
        "# AEG prediction calibration on held-out sessions",
        "",
        f"- date: {report['date']}",
        f"- command: `{report['command']}`",
        f"- machine: {report['machine']}",
        f"- split: sessions whose BLAKE2b(id) mod 1000 < {round(1000 * float(report['test_fraction']))}"
        " are held out; graphs are built on the rest",
        "- intervals: nominal coverage 0.50 for [q25, q75] and 0.90 for [q05, q95] of the remaining time",
        "  to the next call; pinball = mean quantile loss over the 8 levels (lower is better);",
        "  Brier skill = 1 − Brier / Brier(training base rate) (higher is better).",
        "",
    ]
    for f in report["files"]:
        out += [
            f"## {f['file']}",
            "",
            f"{f['sessions']} sessions ({f['train_sessions']} train / {f['test_sessions']} held out), "
            f"{f['skipped_records']} records skipped; graph document built from all sessions: "
            f"{f['graph_document_bytes_all_sessions']:,} bytes.",
            "",
            "| predictor | elapsed s | events | Brier | Brier skill | gaps | cover 50% | cover 90% "
            "| pinball s | pinball log10(1+s) |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for name, rows in f["predictors"].items():
            for r in rows:
                out.append(
                    f"| {name} | {r['elapsed_s']:g} | {r['events']} | {r['brier']:.4f} "
                    f"| {r['brier_skill']:.3f} "
                    f"| {r['gaps']} | {r['coverage_50']:.3f} | {r['coverage_90']:.3f} | {r['pinball_s']:.1f} "
                    f"| {r['pinball_log10']:.4f} |"
                )
        aeg0 = f["predictors"]["aeg"][0]
        out += ["", "Reliability of `aeg` p_continue at elapsed 0 (mean predicted → observed, count):", ""]
        out.append(", ".join(f"{p:.2f}→{o:.2f} ({n})" for p, o, n in aeg0["reliability"]))
        out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--traces", nargs="+", type=Path, default=DEFAULT_TRACES)
    ap.add_argument("--test-fraction", type=float, default=0.25)
    ap.add_argument("--out-prefix", type=Path, default=ROOT / "bench/results/graphs_calibration")
    args = ap.parse_args(argv)
    missing = [p for p in args.traces if not p.exists()]
    if missing:
        print(f"missing trace files: {missing}", file=sys.stderr)
        return 2
    report: dict[str, Any] = {
        "date": datetime.date.today().isoformat(),
        "command": "python bench/graphs_calibration.py" + (" " + " ".join(argv) if argv else ""),
        "machine": machine(),
        "test_fraction": args.test_fraction,
        "files": [run_file(p, args.test_fraction) for p in args.traces],
    }
    if argv is None and len(sys.argv) > 1:
        report["command"] = "python bench/graphs_calibration.py " + " ".join(sys.argv[1:])
    md = to_markdown(report)
    args.out_prefix.parent.mkdir(parents=True, exist_ok=True)
    args.out_prefix.with_suffix(".json").write_text(json.dumps(report, indent=1))
    args.out_prefix.with_suffix(".md").write_text(md + "\n")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
