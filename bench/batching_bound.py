"""The batching bound next to every system's measured task time, per ``saga simulate`` folder.

For each result folder (``run.json`` names the ``saga simulate`` command) the workload is
rebuilt from that command, and :func:`saga.scheduler.sim.bound.batching_bound` gives the
least mean task completion time any scheduler can reach with that work on those replicas
(``scheduler/sim/bound.py`` explains the argument). The horizon is the run's measurement
window (``--warmup-s/--cooldown-s``: steady state at the offered load) or, for a run without
one, its whole arrival span; such a run's edges are lighter than steady state, so its
systems may come in under the steady-state figure (the table marks those rows).

Columns: the bound as mean T / mean physical limit; then per system its mean T / mean limit
over the same tasks and how far above the bound it is. ``--loads`` recomputes the bound
for the first folder's workload at other offered loads (no simulation).

    python bench/batching_bound.py bench/results/sim_steady_* --out bench/results/batching_bound.md
    python bench/batching_bound.py bench/results/sim_steady_swe_bench_16r --loads 0.4,0.6,0.8,0.9
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from saga.scheduler import cli
from saga.scheduler.report import (
    MEASURED_KEY,
    ReportError,
    find_json,
    folder_results,
    load_json,
    load_limits,
    measured,
)
from saga.scheduler.sim.bound import BatchingBound, BoundError, batching_bound
from saga.scheduler.sim.limits import physical_limits
from saga.scheduler.sim.loop import SimError
from saga.scheduler.workloads import WorkloadError


def _args(run: dict[str, Any], where: Path) -> argparse.Namespace:
    """The run's ``saga simulate`` arguments: run.json's ``args`` (newer runs; options added
    since take their defaults), else its command."""
    ap = argparse.ArgumentParser(prog="saga")
    cli.register(ap.add_subparsers())
    if isinstance(run.get("args"), dict):
        defaults = vars(ap.parse_args(["simulate", "--workload", "-", "--out", "-"]))
        return argparse.Namespace(**{**defaults, **run["args"]})
    words = shlex.split(str(run.get("command", "")))
    if words[:2] != ["saga", "simulate"]:
        raise SystemExit(f"{where}: run.json command is not a 'saga simulate' command")
    return ap.parse_args(words[1:])


def _bound(
    args: argparse.Namespace, window: list[float] | None, limits: dict[str, float] | None
) -> BatchingBound:
    cfg = cli.sim_config(args.replica_profile, 64)
    w = cli.build_workload(args, cfg)
    if limits is None:
        limits = physical_limits(w, cfg)
    if window is None:
        lo, hi = 0.0, float(w.params.get("duration_s") or max(s.start_s for s in w.sessions))
    else:
        lo, hi = float(window[0]), float(window[1])
    sessions = [s for s in w.sessions if lo <= s.start_s < hi]
    return batching_bound(sessions, limits, cfg, args.replicas, hi - lo)


def folder_rows(d: Path) -> tuple[list[str], dict[str, Any]]:
    run_path = find_json(d, "run")
    lim_path = find_json(d, "limits")
    if run_path is None or lim_path is None:
        raise SystemExit(f"{d}: no run.json or limits.json(.gz): not a saga simulate folder")
    run = load_json(run_path)
    args = _args(run, d)
    window = run.get(MEASURED_KEY)
    limits = load_limits(lim_path)
    b = _bound(args, window, limits)
    results = folder_results(d)
    head = f"{run.get('workload', args.workload)} {args.replicas}r load {args.load:g}"
    span = (
        f"[{float(window[0]):g}, {float(window[1]):g}) s" if window else "all arrivals (no warm-up excluded)"
    )
    rows: list[str] = []
    js: dict[str, Any] = {
        "folder": str(d),
        "command": run.get("command"),
        "window_s": window,
        "bound": {
            "tasks": b.tasks,
            "mean_limit_s": b.mean_limit_s,
            "mean_task_s": b.mean_task_s,
            "ratio": b.ratio,
            "mean_batch": b.mean_batch,
            "busy_fraction_min": b.busy_fraction_min,
            "feasible": b.feasible,
        },
        "systems": {},
    }
    bound_txt = f"{b.ratio:.3f}" if b.feasible else "over capacity"
    for r in sorted(results, key=lambda r: r.system):
        tops = [o for o in measured(r).outcomes if o.completed and not o.is_subagent]
        if not tops:
            continue
        mean_t = sum(o.completion_s for o in tops) / len(tops)
        mean_l = sum(limits[o.session_id] for o in tops) / len(tops)
        above = mean_t / b.mean_task_s if b.feasible else float("nan")
        mark = " (below: run not in steady state)" if b.feasible and above < 1 else ""
        rows.append(
            f"| {head} | {span} | {bound_txt} | {r.system} | {len(tops)} | {mean_t / mean_l:.3f} "
            f"| {above:.3f}x{mark} |"
        )
        js["systems"][r.system] = {"tasks": len(tops), "mean_task_s": mean_t, "ratio": mean_t / mean_l}
    return rows, js


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folders", nargs="+", type=Path)
    ap.add_argument(
        "--loads", default="", help="comma list: the bound of the first folder's workload at these loads"
    )
    ap.add_argument("--out", type=Path, default=None, help="write the Markdown here (and .json beside it)")
    args = ap.parse_args(argv)
    command = "python bench/batching_bound.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    try:
        text, out_js = _report(args, command)
    except (ReportError, BoundError, WorkloadError, SimError, OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(text)
    if args.out is not None:
        args.out.write_text(text, encoding="utf-8")
        args.out.with_suffix(".json").write_text(json.dumps(out_js, indent=1), encoding="utf-8")
    return 0


def _report(args: argparse.Namespace, command: str) -> tuple[str, dict[str, Any]]:
    """The Markdown and the JSON of the bound for ``args.folders`` (and ``args.loads``)."""
    lines = [
        "# Batching bound: the least mean task time any scheduler reaches at the offered load",
        "",
        f"- command: `{command}`",
        f"- date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}; machine: {platform.machine()} "
        f"{os.cpu_count()} cores, python {platform.python_version()}",
        "- argument: `scheduler/sim/bound.py`. T = task completion time; ratios are mean T / mean "
        "physical limit over the tasks measured; 'above bound' = the system's mean T / the bound's.",
        "",
        "| run | tasks arriving | bound (mean T / limit) | system | tasks | mean T / limit | above bound |",
        "|---|---|---:|---|---:|---:|---:|",
    ]
    out_js: dict[str, Any] = {"command": command, "folders": [], "loads": []}
    for d in args.folders:
        rows, js = folder_rows(d)
        lines += rows
        out_js["folders"].append(js)
    if args.loads:
        d = args.folders[0]
        run = load_json(find_json(d, "run") or d / "run.json")
        base = _args(run, d)
        window = run.get(MEASURED_KEY)
        lines += ["", f"## The bound against the offered load ({d.name}'s workload, same window)", ""]
        lines += [
            "| load | tasks | bound (mean T / limit) | mean batch at the bound |",
            "|---:|---:|---:|---:|",
        ]
        for load in (float(x) for x in args.loads.split(",") if x.strip()):
            b = _bound(argparse.Namespace(**{**vars(base), "load": load}), window, None)
            ratio = f"{b.ratio:.3f}" if b.feasible else "over capacity"
            lines.append(f"| {load:g} | {b.tasks} | {ratio} | {b.mean_batch:.1f} |")
            out_js["loads"].append({"load": load, "tasks": b.tasks, "ratio": b.ratio, "feasible": b.feasible})
    return "\n".join(lines) + "\n", out_js


if __name__ == "__main__":
    raise SystemExit(main())
