"""Render a :class:`~saga.scheduler.report.metrics.Report`: Markdown, JSON and PNG plots.

:func:`write_report` is the thin I/O shell: it writes ``report.md``, ``report.json`` and,
per scenario, ``<slug>-completion_cdf.png`` (task completion-time CDF per system, log x),
``<slug>-speedup.png`` (geometric-mean speedup over the baseline per system),
``<slug>-slo.png`` (SLO attainment per tenant and system) and ``<slug>-hit_rate.png``
(cluster cache hit rate over time per system). Every output carries the run environment
(:func:`environment`): the exact command, machine, Python and library versions, git commit
and the seeds.
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from saga.scheduler.report.metrics import ALL, MEASURED_KEY, GroupStats, Report, ScenarioReport
from saga.scheduler.report.model import RunResult


def environment(command: str, results: Sequence[RunResult]) -> dict[str, Any]:
    """Machine, versions, git commit, seeds and the command that produced the report."""
    import matplotlib
    import numpy

    commit = ""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
            check=False,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return {
        "command": command,
        "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} cores, {platform.platform()}",
        "python": sys.version.split()[0],
        "numpy": numpy.__version__,
        "matplotlib": matplotlib.__version__,
        "git_commit": commit or "unknown",
        "seeds": sorted({r.seed for r in results}),
        "systems": sorted({r.system for r in results}),
        "wall_s": {f"{r.system}@{r.workload}/{r.seed}": r.wall_s for r in results if r.wall_s is not None},
        "measured_arrivals_s": sorted(
            {tuple(r.meta[MEASURED_KEY]) for r in results if MEASURED_KEY in r.meta}
        ),
    }


def _f(v: float | None, fmt: str = "{:.2f}") -> str:
    return "–" if v is None else fmt.format(v)


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.1f}%"


def _row(g: GroupStats) -> str:
    return (
        f"| {g.system} | {g.tenant if g.tenant != ALL else 'all'} | {g.completed}/{g.tasks} "
        f"| {_f(g.mean_s, '{:.1f}')} "
        f"| {_f(g.p50_s, '{:.1f}')} | {_f(g.p99_s, '{:.1f}')} | {_pct(g.slo_attainment)} "
        f"| {g.tasks_per_min:.2f} | {g.tokens_per_s:.0f} | {_pct(g.recomputed_share)} | {g.steals} "
        f"| {_f(g.limit_ratio)} | {_f(g.jain_tasks, '{:.3f}')} |"
    )


HEADER = (
    "| system | tenant | done/tasks | mean T (s) | p50 T (s) | p99 T (s) | SLO | tasks/min | tokens/s "
    "| recomputed | steals | T/limit | Jain |\n"
    "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
)


def render_markdown(report: Report, env: Mapping[str, Any], *, title: str = "SAGA simulation report") -> str:
    lines = [f"# {title}", ""]
    lines += [
        f"- command: `{env.get('command', '')}`",
        f"- machine: {env.get('machine', '')}",
        f"- python {env.get('python', '')}, numpy {env.get('numpy', '')}, "
        f"matplotlib {env.get('matplotlib', '')}",
        f"- git commit: {env.get('git_commit', '')}; seeds: {env.get('seeds', [])}",
        f"- baseline for speedups: {report.baseline or '(none)'}",
        *[
            f"- measured: tasks arriving in [{lo:g}, {hi:g}) s (warm-up and drain excluded)"
            for lo, hi in env.get("measured_arrivals_s", [])
        ],
        "",
        "Definitions: docs/workloads.md § Report metrics. T = task completion time (top-level sessions);"
        " T/limit = geometric mean of T over the physical limit; Jain over T/limit per task.",
        "",
    ]
    if report.overall_speedups:
        lines += ["## Geometric-mean speedup over the baseline (all scenarios)", ""]
        lines += ["| system | speedup |", "|---|---:|"]
        lines += [f"| {s} | {_f(v, '{:.3f}x')} |" for s, v in report.overall_speedups.items()]
        lines.append("")
    for sr in report.scenarios:
        lines += _scenario_md(sr)
    return "\n".join(lines) + "\n"


def _scenario_md(sr: ScenarioReport) -> list[str]:
    out = [f"## {sr.scenario.label}", "", "### Per system", "", HEADER]
    alls = [g for g in sr.stats if g.tenant == ALL]
    out += [_row(g) for g in alls]
    out += [
        "",
        "### Cluster",
        "",
        "| system | KV util | cache hit rate | Jain (tenants) | TTFT p50 / p99 (s) |",
    ]
    out += ["|---|---:|---:|---:|---:|"]
    out += [
        f"| {g.system} | {_pct(g.kv_util_mean)} | {_pct(g.hit_rate_mean)} | {_f(g.jain_tenants, '{:.3f}')} "
        f"| {_f(g.ttft_p50_s, '{:.3f}')} / {_f(g.ttft_p99_s, '{:.3f}')} |"
        for g in alls
    ]
    lanes = [g for g in alls if g.lane_max]
    if lanes:
        out += ["", "### SLO lane (replicas kept for tight-deadline tenants, sampled over the whole run)", ""]
        out += ["| system | mean | most | first formed (s after the first arrival) |", "|---|---:|---:|---:|"]
        out += [
            f"| {g.system} | {_f(g.lane_mean)} | {_f(g.lane_max, '{:.0f}')} "
            f"| {_f(g.lane_first_s, '{:.0f}')} |"
            for g in lanes
        ]
    if sr.baseline is not None:
        out += ["", f"### Speedup over {sr.baseline}", "", "| system | geomean speedup | tasks compared |"]
        out += ["|---|---:|---:|"]
        out += [
            f"| {s} | {_f(v, '{:.3f}x')} | {sr.speedup_pairs.get(s, 0)} |" for s, v in sr.speedups.items()
        ]
    tenants = [g for g in sr.stats if g.tenant != ALL]
    if tenants:
        out += ["", "### Per tenant", "", HEADER]
        out += [_row(g) for g in tenants]
    out.append("")
    return out


def report_json(report: Report, env: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "environment": dict(env),
        "baseline": report.baseline,
        "overall_speedups": dict(report.overall_speedups),
        "scenarios": [
            {
                "scenario": asdict(sr.scenario),
                "systems": list(sr.systems),
                "speedups": dict(sr.speedups),
                "speedup_pairs": dict(sr.speedup_pairs),
                "stats": [asdict(g) for g in sr.stats],
            }
            for sr in report.scenarios
        ],
    }


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")


def write_plots(report: Report, results: Sequence[RunResult], out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written: list[Path] = []
    for sr in report.scenarios:
        slug = _slug(
            f"{sr.scenario.workload}-s{sr.scenario.seed}-r{sr.scenario.replicas}-l{sr.scenario.load:g}"
        )
        fig, ax = plt.subplots(figsize=(6, 4))
        for system, times in sr.completion.items():
            if times:
                n = len(times)
                ax.step(times, [(i + 1) / n for i in range(n)], where="post", label=system)
        ax.set_xscale("log")
        ax.set_xlabel("task completion time (s)")
        ax.set_ylabel("CDF")
        ax.set_title(sr.scenario.label, fontsize=9)
        ax.legend(fontsize=8)
        written.append(_save(fig, out_dir / f"{slug}-completion_cdf.png"))
        if sr.speedups:
            fig, ax = plt.subplots(figsize=(6, 4))
            names = list(sr.speedups)
            ax.bar(names, [sr.speedups[n] or 0.0 for n in names])
            ax.axhline(1.0, color="grey", linewidth=0.8)
            ax.set_ylabel(f"geomean speedup over {sr.baseline}")
            ax.tick_params(axis="x", labelrotation=30, labelsize=8)
            written.append(_save(fig, out_dir / f"{slug}-speedup.png"))
        tenant_stats = [g for g in sr.stats if g.tenant != ALL and g.slo_attainment is not None]
        if tenant_stats:
            fig, ax = plt.subplots(figsize=(7, 4))
            tenants = sorted({g.tenant for g in tenant_stats})
            width = 0.8 / max(1, len(sr.systems))
            for k, system in enumerate(sr.systems):
                vals = {g.tenant: g.slo_attainment or 0.0 for g in tenant_stats if g.system == system}
                ax.bar(
                    [i + k * width for i in range(len(tenants))],
                    [vals.get(t, 0.0) for t in tenants],
                    width,
                    label=system,
                )
            ax.set_xticks(
                [i + 0.4 - width / 2 for i in range(len(tenants))], tenants, rotation=30, fontsize=8
            )
            ax.set_ylabel("SLO attainment")
            ax.set_ylim(0, 1.05)
            ax.legend(fontsize=8)
            written.append(_save(fig, out_dir / f"{slug}-slo.png"))
        scn_results = [
            r
            for r in results
            if (r.workload, r.seed, r.replicas, r.load)
            == (sr.scenario.workload, sr.scenario.seed, sr.scenario.replicas, sr.scenario.load)
        ]
        if any(r.cache_hit_rate.t_s for r in scn_results):
            fig, ax = plt.subplots(figsize=(6, 4))
            for r in scn_results:
                if r.cache_hit_rate.t_s:
                    ax.plot(r.cache_hit_rate.t_s, r.cache_hit_rate.values, label=r.system, linewidth=1)
            ax.set_xlabel("time (s)")
            ax.set_ylabel("cluster KV cache hit rate")
            ax.set_ylim(0, 1.05)
            ax.legend(fontsize=8)
            written.append(_save(fig, out_dir / f"{slug}-hit_rate.png"))
    return written


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(
    report: Report,
    results: Sequence[RunResult],
    out_dir: str | Path,
    *,
    command: str,
    plots: bool = True,
    title: str = "SAGA simulation report",
) -> list[Path]:
    """Write ``report.md``, ``report.json`` and the plots into ``out_dir``; return the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    env = environment(command, results)
    md = out / "report.md"
    md.write_text(render_markdown(report, env, title=title), encoding="utf-8")
    js = out / "report.json"
    js.write_text(json.dumps(report_json(report, env), indent=1), encoding="utf-8")
    written = [md, js]
    if plots:
        written += write_plots(report, results, out)
    return written
