"""Headline table and ablation table from ``saga simulate`` result folders.

Reads every ``bench/results/sim_*/`` folder (``<system>.json.gz`` RunResults +
``limits.json.gz`` + ``run.json``; older folders' plain ``<system>.json`` / ``limits.json``
load the same), and writes ``bench/results/sim_summary.md``: per workload, SAGA's geometric-mean
speedup in task completion time over cache_aware and over the best sticky/affinity baseline
(sticky, affinity, thunder), its ratio to the physical limit, SLO attainment per tenant,
Jain indices and throughput relative to the best baseline; the geometric mean over the
workloads; and, for ``sim_ablation_*`` / ``sim_batchcap_*`` / ``sim_amortize_*`` / ``sim_lanes_*``
folders, each system's completion-time increase over SAGA on the same run (a mechanism removed,
or one that is off by default switched on). ``sim_steady_*`` folders (``saga simulate
--warmup-s/--cooldown-s``) get a table of their own: only their measured tasks count
(``saga.scheduler.report.measured``).
Folders named ``<name>_seed<N>`` repeat ``<name>`` with another seed: side and steady-state
ones are summed up in a table over the seeds (each system's change vs SAGA, mean and range),
and a steady-state repeat adds no row of its own.

    python bench/sim_summary.py [--results bench/results]
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from pathlib import Path

from saga.scheduler.report import (
    ALL,
    GroupStats,
    build_report,
    find_json,
    folder_results,
    load_json,
    load_limits,
    measured,
)
from saga.scheduler.report.model import RunResult

STICKY_FAMILY = ("sticky", "affinity", "thunder")


# Folders compared system by system against SAGA instead of entering the headline: ablations
# (one mechanism removed) and experiments with mechanisms that are off by default.
SIDE_PREFIXES = ("sim_ablation", "sim_batchcap", "sim_amortize", "sim_lanes")
# Folders measured in steady state (saga simulate --warmup-s/--cooldown-s): their own table.
STEADY_PREFIX = "sim_steady"
# ``<name>_seed<N>`` folders repeat ``<name>`` with another seed: their side tables are also
# summarised together (mean and range over the seeds).
SEED_SUFFIX = re.compile(r"_seed\d+$")
# folder stem -> system -> per run (seed, mean T change %, per-task geomean change %) vs SAGA
Repeats = dict[str, dict[str, list[tuple[int, float | None, float | None]]]]


def speedup(base: RunResult, sys_: RunResult) -> float | None:
    b = {o.session_id: o.completion_s for o in base.outcomes if o.completed and not o.is_subagent}
    ratios = [
        max(b[o.session_id], 1e-9) / max(o.completion_s, 1e-9)
        for o in sys_.outcomes
        if o.completed and not o.is_subagent and o.session_id in b
    ]
    return math.exp(sum(map(math.log, ratios)) / len(ratios)) if ratios else None


def gm(xs: list[float]) -> float | None:
    return math.exp(sum(map(math.log, xs)) / len(xs)) if xs else None


def f(x: float | None, fmt: str = "{:.2f}") -> str:
    return "–" if x is None else fmt.format(x)


def fx(x: float | None) -> str:
    return f(x, "{:.2f}x")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", default="bench/results")
    args = ap.parse_args(argv)
    root = Path(args.results)
    lines = ["# SAGA simulation: headline and ablation", ""]
    head = [
        "| workload | tasks | SAGA vs cache_aware | SAGA vs best sticky (which) | SAGA T/limit | "
        "SAGA SLO (worst tenant) | Jain tasks / tenants | SAGA tok/s vs best baseline |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    tables: dict[bool, tuple[list[str], list[float], list[float]]] = {
        False: (head, [], []),
        True: ([], [], []),
    }
    ablation: list[str] = []
    # side-folder stem -> system -> per run (seed, mean T change %, per-task geomean change %)
    repeats: Repeats = {}
    steady_repeats: Repeats = {}  # the same for steady-state folders
    commands: list[str] = []
    for d in sorted(root.glob("sim_*")):
        limits_path = find_json(d, "limits") if d.is_dir() else None
        if limits_path is None:
            continue
        results = [measured(r) for r in folder_results(d)]
        limits = load_limits(limits_path)
        run_path = find_json(d, "run")
        run = load_json(run_path) if run_path is not None else {}
        commands.append(f"- `{run.get('command', '?')}` ({run.get('date', '?')}, {run.get('machine', '?')})")
        by = {r.system: r for r in results}
        if "saga" not in by:
            continue
        rep = build_report(results, baseline=None, limits=limits)
        stats = {(g.system, g.tenant): g for g in rep.scenarios[0].stats}
        saga = by["saga"]
        if d.name.startswith(SIDE_PREFIXES):
            ablation.append(f"### {d.name}\n")
            ablation.append(
                "| system | mean T (s) | mean T vs SAGA | vs SAGA (per-task geomean increase) "
                "| T/limit | SLO |"
            )
            ablation.append("|---|---:|---:|---:|---:|---:|")
            changes = vs_saga(by, stats)
            record(repeats, d.name, by, changes)
            for name, (m_inc, inc) in changes.items():
                g = stats[(name, ALL)]
                cells = [name, f(g.mean_s, "{:.1f}"), f(m_inc, "{:+.1f}%"), f(inc, "{:+.1f}%")]
                cells += [f(g.limit_ratio), f(g.slo_attainment, "{:.1%}")]
                ablation.append("| " + " | ".join(cells) + " |")
            ablation.append("")
            continue
        steady_run = d.name.startswith(STEADY_PREFIX)
        if steady_run:
            record(steady_repeats, d.name, by, vs_saga(by, stats))
            if SEED_SUFFIX.search(d.name):
                continue  # a repeat with another seed: only in the table over the seeds
        sp_ca = speedup(by["cache_aware"], saga) if "cache_aware" in by else None
        st = [(n, s) for n in STICKY_FAMILY if n in by and (s := speedup(by[n], saga)) is not None]
        best_st = min(st, key=lambda t: t[1]) if st else None  # the baseline SAGA beats least
        g = stats[("saga", ALL)]
        tenant_slo = [
            x.slo_attainment
            for (s, t), x in stats.items()
            if s == "saga" and t != ALL and x.slo_attainment is not None
        ]
        tput = {n: stats[(n, ALL)].tokens_per_s for n in by if not n.startswith("saga")}  # baselines only
        best_tp = max(tput.values()) if tput else None
        rows, vs_ca, vs_st = tables[steady_run]
        if sp_ca:
            vs_ca.append(sp_ca)
        if best_st:
            vs_st.append(best_st[1])
        best_name = best_st[0] if best_st else "–"
        worst_slo = min(tenant_slo) if tenant_slo else None
        tp_ratio = g.tokens_per_s / best_tp if best_tp else None
        rows.append(
            " | ".join(
                [
                    f"| {saga.workload}" + (f" ({saga.replicas}r)" if steady_run else ""),
                    str(g.tasks),
                    fx(sp_ca),
                    f"{fx(best_st[1] if best_st else None)} ({best_name})",
                    f(g.limit_ratio),
                    f"{f(g.slo_attainment, '{:.1%}')} ({f(worst_slo, '{:.1%}')})",
                    f"{f(g.jain_tasks, '{:.3f}')} / {f(g.jain_tenants, '{:.3f}')}",
                    f"{f(tp_ratio)} |",
                ]
            )
        )
    _, vs_ca, vs_st = tables[False]
    head.append(f"| **geometric mean** | | **{fx(gm(vs_ca))}** | **{fx(gm(vs_st))}** | | | | |")
    steady = tables[True][0]
    lines += [*head, ""]
    if steady:
        lines += [
            "## Steady state (`sim_steady_*`: only tasks arriving after the warm-up and before the drain)",
            "",
            "Runs differ in replica count and in the systems run (– : not run), so no mean is taken; "
            "the batching bound for each is in `batching_bound.md`.",
            "",
            *head[:2],
            *steady,
            "",
            *over_seeds(steady_repeats),
        ]
    lines += [
        "## Ablations and experiments (each system vs SAGA on the same run)",
        "",
        *over_seeds(repeats),
        *ablation,
        "## Commands",
        "",
        *commands,
    ]
    out = root / "sim_summary.md"
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(out.read_text())
    return 0


def vs_saga(
    by: dict[str, RunResult], stats: dict[tuple[str, str], GroupStats]
) -> dict[str, tuple[float | None, float | None]]:
    """Per system: (mean-T change %, per-task geometric-mean change %) against SAGA's run."""
    base_mean = stats[("saga", ALL)].mean_s
    out: dict[str, tuple[float | None, float | None]] = {}
    for name, r in by.items():
        g = stats[(name, ALL)]
        sp = speedup(r, by["saga"])  # > 1: saga faster than this system
        inc = None if sp is None else (sp - 1) * 100
        m_inc = None if g.mean_s is None or not base_mean else (g.mean_s / base_mean - 1) * 100
        out[name] = (m_inc, inc)
    return out


def record(
    repeats: Repeats,
    folder: str,
    by: dict[str, RunResult],
    changes: dict[str, tuple[float | None, float | None]],
) -> None:
    runs = repeats.setdefault(SEED_SUFFIX.sub("", folder), {})
    for name, (m_inc, inc) in changes.items():
        runs.setdefault(name, []).append((by[name].seed, m_inc, inc))


def spread(xs: list[float | None]) -> str:
    v = [x for x in xs if x is not None]
    if not v:
        return "–"
    return f"{sum(v) / len(v):+.1f}% ({min(v):+.1f} to {max(v):+.1f})"


def over_seeds(repeats: Repeats) -> list[str]:
    """One table per side experiment run with several seeds: each system's change vs SAGA,
    mean over the runs with the range (a single seed's difference can be run-to-run noise)."""
    out: list[str] = []
    for stem, systems in sorted(repeats.items()):
        seeds = sorted({seed for runs in systems.values() for seed, _, _ in runs})
        if len(seeds) < 2:
            continue
        out.append(f"### {stem}, over seeds {', '.join(map(str, seeds))}\n")
        out.append(
            "| system | runs | mean T vs SAGA: mean (range) | per-task geomean vs SAGA: mean (range) |"
        )
        out.append("|---|---:|---:|---:|")
        for name, runs in systems.items():
            if name == "saga":
                continue
            m, g = spread([x[1] for x in runs]), spread([x[2] for x in runs])
            out.append(f"| {name} | {len(runs)} | {m} | {g} |")
        out.append("")
    return out


if __name__ == "__main__":
    sys.exit(main())
