"""``saga bench e2e``: SAGA against the real sglang-router on the same live emulated cluster.

For every workload (scenario) and every system in turn, with the same seed and the same
sessions: start a fresh emulated cluster (cold caches), start the system in front of it
(:mod:`saga.bench.systems`), replay the workload closed-loop over HTTP
(:mod:`saga.bench.replay`) while sampling the replicas' ``/metrics`` and every process's CPU
(:mod:`saga.bench.procs`), stop everything, and build a
:class:`~saga.scheduler.report.RunResult` from the client-side outcomes and the replicas'
own metrics. The report (``saga.scheduler.report``) compares the systems; this module adds the
live-run sections: validity (CPU guard), peers (the router process's command line and the
requests the replicas served), replica counters, SAGA vs the best router policy and the
issue's targets, and the simulator's speedups on the same workload (agreement). Output
folder: ``report.md``, ``report.json``, ``bench.json`` and PNGs (plain), one
``<workload>-<system>.json.gz`` ``RunResult`` per run (gzipped JSON, deterministic:
``saga.scheduler.report.write_result`` / ``read_json_text``) and ``logs/``.

Time: the emulator runs ``time_scale`` model seconds per wall second; tool gaps are slept
``gap / time_scale`` wall seconds and SAGA's clock runs at the same factor. Reported times
are model seconds.

Deadlines: ``slo_factor`` of the session's tenant x its physical limit (alone on an idle
replica of the same model with an infinite cache, ``saga.scheduler.sim.limits``), as in the
simulator.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp
from tqdm import tqdm

from saga.bench.procs import BenchProcessError, CpuSampler, CpuVerdict, pid_listens_on, read_cmdline
from saga.bench.replay import ReplayConfig, Replayer, ReplicaSampler
from saga.bench.systems import (
    ROUTER_POLICIES,
    SAGA_SYSTEMS,
    EmulatorSettings,
    api_key,
    external_cluster,
    sglang_router_version,
    start_cluster,
    start_front,
)
from saga.emulator.core import ReplicaConfig
from saga.scheduler.report import RunResult, build_report, write_report, write_result
from saga.scheduler.sim.limits import physical_limits
from saga.scheduler.sim.profiles import CONTEXT_TOKENS
from saga.scheduler.workloads.model import Workload

# Live system name -> the simulator's model of it (saga.scheduler.sim.systems).
SIM_EQUIVALENT = {
    "saga": "saga",
    "saga-redis": "saga",
    "cache_aware": "cache_aware",
    "round_robin": "round_robin",
    "manual": "sticky",
}
TARGET_VS_BEST = 1.64
TARGET_VS_CACHE_AWARE = 2.0
TARGET_SLO = 0.99


@dataclass(frozen=True, slots=True)
class E2ESettings:
    systems: tuple[str, ...]
    replicas: int
    load: float
    time_scale: float
    seed: int
    out_dir: Path
    command: str
    kv_capacity_tokens: int | None = None
    page_size: int = 64  # the traces' block size: the replica caches on the same pages
    metrics_period_s: float = 1.0  # wall seconds between /metrics scrapes
    cpu_period_s: float = 0.5
    cpu_window_s: float = 5.0
    progress: bool = True
    simulate: bool = True  # also run the simulator on the same workload (agreement)
    # Replicas already running (real SGLang on a GPU machine, bench/gpu): used instead of
    # emulated ones; their caches are flushed (POST /flush_cache) before every system.
    external_replicas: tuple[str, ...] = ()


@dataclass(slots=True)
class SystemRun:
    result: RunResult
    cpu: CpuVerdict
    peer: dict[str, Any]
    replica_totals: dict[str, float]
    served: dict[str, float]
    errors: list[str] = field(default_factory=list)


def replica_config(s: E2ESettings) -> ReplicaConfig:
    """The replica model both the emulated cluster and the simulator use."""
    base = ReplicaConfig(
        page_size=s.page_size, context_length=CONTEXT_TOKENS, enable_session_radix_cache=True
    )
    if s.kv_capacity_tokens is not None:
        base = replace(base, kv_capacity_tokens=s.kv_capacity_tokens)
    return base


async def run_system(
    system: str,
    w: Workload,
    s: E2ESettings,
    deadlines: dict[str, float],
    http: aiohttp.ClientSession,
    log_dir: Path,
) -> SystemRun:
    cfg = replica_config(s)
    emu = EmulatorSettings(
        time_scale=s.time_scale,
        page_size=cfg.page_size,
        kv_capacity_tokens=s.kv_capacity_tokens,
        context_length=cfg.context_length,
    )
    tag = f"{w.name}-{system}"
    if s.external_replicas:
        cluster = await external_cluster(s.external_replicas, http)
    else:
        cluster = await start_cluster(s.replicas, emu, log_dir, http, tag)
    front = None
    try:
        front = await start_front(system, cluster, w.tenants, s.time_scale, log_dir, http)
        cpu = CpuSampler(period_s=s.cpu_period_s, window_s=s.cpu_window_s)
        cpu.watch_machine()
        cpu.watch("load-generator", os.getpid())
        for p in cluster.procs:
            cpu.watch(p.role, p.pid)
        for p in front.procs:
            cpu.watch(p.role, p.pid)
        if "redis_pid" in front.info:
            cpu.watch("redis-server", int(front.info["redis_pid"]))
        total_calls = sum(x.total_calls for x in w.sessions)
        bar = tqdm(total=total_calls, desc=f"{w.name}/{system}", unit="call", disable=not s.progress)
        rcfg = ReplayConfig(
            url=front.url, time_scale=s.time_scale, api_keys={t: api_key(t) for t in w.tenants}
        )
        replayer = Replayer(rcfg, http, deadlines=deadlines, on_call=lambda: _tick(bar))
        sampler = ReplicaSampler(dict(cluster.urls), s.time_scale, period_s=s.metrics_period_s)
        stop = asyncio.Event()
        sampler.t0 = time.monotonic()
        bg = [asyncio.create_task(sampler.run(http, stop)), asyncio.create_task(cpu.run(stop))]
        wall0 = time.monotonic()
        try:
            outcomes = await replayer.run(w.sessions)
        finally:
            stop.set()
            await asyncio.gather(*bg, return_exceptions=True)
            bar.close()
        wall = time.monotonic() - wall0
        cpu.dump(log_dir / f"{tag}-cpu.json.gz")  # raw traces: `saga bench cpu-verdict` re-checks them
        peer = dict(front.info)
        peer.pop("config", None)
        proc = front.procs[0]
        peer["cmdline_at_end"] = read_cmdline(proc.pid) or proc.cmdline
        peer["url"] = front.url
        peer["pid_listens_on_port"] = pid_listens_on(proc.pid, int(front.url.rsplit(":", 1)[1]))
        peer["calls_sent"] = replayer.calls_sent
        totals = sampler.totals()
        peer["replica_requests"] = totals["sglang:num_requests"]
        starts = [o.start_s for o in outcomes if not o.is_subagent]
        ends = [o.end_s for o in outcomes]
        duration = max(1e-6, max(ends, default=1.0) - min(starts, default=0.0))
        result = RunResult(
            system=system,
            workload=w.name,
            seed=w.seed,
            replicas=s.replicas,
            load=s.load,
            outcomes=tuple(outcomes),
            duration_s=duration,
            kv_util=sampler.kv_series(),
            cache_hit_rate=sampler.hit_series(),
            steals=0,
            wall_s=wall,
            meta={
                "live": True,
                "time_scale": s.time_scale,
                "replica_totals": totals,
                "cpu_valid": cpu.verdict().valid,
            },
        )
        return SystemRun(
            result=result,
            cpu=cpu.verdict(),
            peer=peer,
            replica_totals=totals,
            served=sampler.served_by_replica(),
            errors=replayer.errors[:20],
        )
    finally:
        if front is not None:
            front.stop()
        cluster.stop()


def simulate(
    w: Workload, s: E2ESettings, limits: dict[str, float], systems: Sequence[str]
) -> list[RunResult]:
    """The same workload through the simulator (one run per distinct simulated system)."""
    from saga.graphs.aeg import build_graphs
    from saga.graphs.predict import AEGPredictor
    from saga.scheduler.cli import TRAIN_SEED_OFFSET, TRAIN_SESSIONS
    from saga.scheduler.sim.loop import Simulator
    from saga.scheduler.sim.systems import get_system
    from saga.scheduler.workloads import get_workload

    cfg = replica_config(s)
    predictor = None
    if "saga" in systems:
        try:
            train = get_workload(
                w.name, seed=w.seed + TRAIN_SEED_OFFSET, n_sessions=min(TRAIN_SESSIONS, 60), rate=1.0
            )
            predictor = AEGPredictor(build_graphs(train.sessions))
        except Exception:  # a workload that cannot be regenerated by name (a file): no predictor
            predictor = None
    out = []
    done: dict[str, RunResult] = {}
    for live in systems:
        name = SIM_EQUIVALENT[live]
        if name not in done:
            done[name] = Simulator(
                w,
                get_system(name),
                s.replicas,
                cfg,
                seed=w.seed,
                load=s.load,
                predictor=predictor,
                limits=limits,
            ).run()
        out.append(replace(done[name], system=live))
    return out


def _speedups(
    results: Sequence[RunResult], baseline: str, limits: dict[str, float]
) -> dict[str, float | None]:
    rep = build_report(results, baseline=baseline, limits=limits)
    return dict(rep.overall_speedups)


async def run_e2e(
    workloads: Sequence[Workload], s: E2ESettings, echo: Callable[[str], None] = print
) -> dict[str, Any]:
    """Run every system on every workload; write the report; return the summary dict."""
    out = Path(s.out_dir)
    log_dir = out / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    cfg = replica_config(s)
    runs: dict[tuple[str, str], SystemRun] = {}
    limits: dict[str, float] = {}
    sim_results: list[RunResult] = []
    sim_note = ""
    failures: dict[tuple[str, str], str] = {}  # (workload, system) -> why it failed
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10)
    conn = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(timeout=timeout, connector=conn) as http:
        for w in workloads:
            lim = physical_limits(w, cfg)
            limits.update(lim)
            deadlines = {sid: w.tenants[t].slo_factor * lim[sid] for sid, t in _tenant_of(w).items()}
            for system in s.systems:
                echo(f"[{w.name}] {system}: starting {s.replicas} replicas + {system}")
                try:
                    run = await run_system(system, w, s, deadlines, http, log_dir)
                except Exception as e:  # one system's failure must not lose the others' runs
                    why = _failure(e, log_dir / f"{w.name}-{system}-failure.txt")
                    failures[(w.name, system)] = why
                    echo(f"[{w.name}] {system}: FAILED, left out of the comparison: {why}")
                    continue
                runs[(w.name, system)] = run
                write_result(run.result, out / f"{w.name}-{system}.json.gz")
                v = "valid" if run.cpu.valid else "INVALID: " + "; ".join(run.cpu.reasons)
                done = sum(1 for o in run.result.outcomes if o.completed and not o.is_subagent)
                echo(
                    f"[{w.name}] {system}: {done}/{len(w.sessions)} tasks, {run.result.wall_s:.0f} s wall, "
                    f"replica hit rate {run.replica_totals['hit_rate']:.1%}, CPU {v}"
                )
            if s.simulate:
                try:
                    sim_results += [replace(r, workload=w.name) for r in simulate(w, s, lim, s.systems)]
                except Exception as e:  # report, never hide: the live run stands on its own
                    sim_note = f"simulator failed: {type(e).__name__}: {e}"
    # Compare only systems that completed every workload (a geometric mean over the same
    # scenarios); a failed system's other runs are still written above as RunResult files.
    failed = {system for _, system in failures}
    compared = tuple(x for x in s.systems if x not in failed)
    if not compared:
        raise BenchProcessError(
            "every system failed: " + "; ".join(f"{w}/{sy}: {v}" for (w, sy), v in failures.items())
        )
    runs = {k: v for k, v in runs.items() if k[1] in compared}
    sim_results = [r for r in sim_results if r.system in compared]
    results = [r.result for r in runs.values()]
    baseline = "cache_aware" if "cache_aware" in compared else compared[0]
    report = build_report(results, baseline=baseline, limits=limits)
    write_report(report, results, out, command=s.command, title="SAGA live end-to-end benchmark")
    summary = summarize(runs, results, sim_results, limits, replace(s, systems=compared), baseline, sim_note)
    summary["settings"]["systems"] = list(s.systems)
    summary["failures"] = {f"{w}/{sy}": why for (w, sy), why in failures.items()}
    (out / "bench.json").write_text(json.dumps(summary, indent=1, default=str), encoding="utf-8")
    with open(out / "report.md", "a", encoding="utf-8") as f:
        f.write(render_bench_md(summary))
    echo(render_bench_md(summary))
    return summary


def _failure(e: Exception, trace_file: Path) -> str:
    """One line for the report (the exception's type and message); the traceback to a file."""
    trace_file.write_text("".join(traceback.format_exception(e)), encoding="utf-8")
    msg = " ".join(str(e).split()) or "(no message)"
    return f"{type(e).__name__}: {msg[:300]} (traceback: logs/{trace_file.name})"


def _tick(bar: Any) -> None:
    bar.update(1)


def _tenant_of(w: Workload) -> dict[str, str]:
    return {x.session_id: x.tenant for x in w.sessions}


def summarize(
    runs: dict[tuple[str, str], SystemRun],
    results: Sequence[RunResult],
    sim_results: Sequence[RunResult],
    limits: dict[str, float],
    s: E2ESettings,
    baseline: str,
    sim_note: str,
) -> dict[str, Any]:
    live = _speedups(results, baseline, limits)
    routers = [p for p in ROUTER_POLICIES if p in s.systems]
    best = max(routers, key=lambda p: live.get(p) or 0.0) if routers else None
    vs_best: dict[str, float | None] = {}
    if best is not None:
        vs_best = _speedups(results, best, limits)
    slo: dict[str, dict[str, float | None]] = {}
    for r in results:
        by_class: dict[str, list[bool]] = {}
        for o in r.outcomes:
            if o.is_subagent or o.deadline_s is None:
                continue
            by_class.setdefault(o.tenant, []).append(bool(o.slo_met))
        for tenant, met in by_class.items():
            slo.setdefault(r.system, {})[f"{r.workload}/{tenant}"] = sum(met) / len(met) if met else None
    sim: dict[str, float | None] = {}
    agreement: dict[str, float | None] = {}
    if sim_results:
        sim = _speedups(sim_results, baseline, limits)
        for name, v in live.items():
            sv = sim.get(name)
            agreement[name] = None if v is None or sv is None or name == baseline else v / sv - 1.0
    targets: dict[str, Any] = {}
    for sysname in (x for x in SAGA_SYSTEMS if x in s.systems):
        slos = [v for v in slo.get(sysname, {}).values() if v is not None]
        targets[sysname] = {
            "vs_best_router": vs_best.get(sysname),
            "best_router": best,
            "vs_cache_aware": live.get(sysname) if baseline == "cache_aware" else None,
            "min_tenant_slo": min(slos) if slos else None,
        }
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "command": s.command,
        "machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
        "versions": {"saga": _saga_version(), "sglang-router": sglang_router_version()},
        "settings": {
            "replicas": s.replicas,
            "load": s.load,
            "time_scale": s.time_scale,
            "seed": s.seed,
            "page_size": s.page_size,
            "kv_capacity_tokens": s.kv_capacity_tokens or ReplicaConfig().kv_capacity_tokens,
            "systems": list(s.systems),
        },
        "valid": all(r.cpu.valid for r in runs.values()),
        "cpu": {
            f"{w}/{sy}": {
                "valid": r.cpu.valid,
                "reasons": list(r.cpu.reasons),
                "peak_cores": dict(r.cpu.peak_by_role),
                "mean_cores": dict(r.cpu.mean_by_role),
                "machine_peak_cores": r.cpu.machine_peak,
                "machine_cores": r.cpu.machine_cores,
            }
            for (w, sy), r in runs.items()
        },
        "peers": {f"{w}/{sy}": r.peer for (w, sy), r in runs.items()},
        "replicas": {
            f"{w}/{sy}": {"totals": r.replica_totals, "served": r.served, "errors": r.errors}
            for (w, sy), r in runs.items()
        },
        "baseline": baseline,
        "live_speedups": live,
        "best_router": best,
        "speedups_vs_best_router": vs_best,
        "slo_per_tenant": slo,
        "simulator": {"speedups": sim, "relative_difference": agreement, "note": sim_note},
        "targets": targets,
    }


def _saga_version() -> str:
    from saga import __version__

    return str(__version__)


def _x(v: float | None) -> str:
    return "–" if v is None else f"{v:.3f}x"


def _p(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.1f}%"


def render_bench_md(sm: dict[str, Any]) -> str:
    L = ["", "## Live run: validity (CPU guard)", ""]
    L.append(f"- run valid: **{'yes' if sm['valid'] else 'NO'}**; machine: {sm['machine']}")
    L.append(f"- versions: saga {sm['versions']['saga']}, sglang-router {sm['versions']['sglang-router']}")
    L.append(f"- settings: {json.dumps(sm['settings'])}")
    L += [
        "",
        "| run | valid | machine peak, all users (cores) | busiest process of ours (peak cores) | reasons |",
        "|---|---|---:|---|---|",
    ]
    for k, c in sm["cpu"].items():
        procs = {k: v for k, v in c["peak_cores"].items() if not k.startswith("@")}
        top = max(procs.items(), key=lambda kv: kv[1], default=("–", 0.0))
        L.append(
            f"| {k} | {'yes' if c['valid'] else 'NO'} | {c['machine_peak_cores']:.2f} / {c['machine_cores']} "
            f"| {top[0]} ({top[1]:.2f}) | {'; '.join(c['reasons']) or '–'} |"
        )
    if sm.get("failures"):
        L += ["", "## Failed runs (left out of every comparison)", "", "| run | why |", "|---|---|"]
        for k, why in sm["failures"].items():
            L.append(f"| {k} | {why.replace('|', '/')} |")
    L += ["", "## Live run: peers and replicas (replicas' own /metrics)", ""]
    L += [
        "| run | front-end process | owns the port | calls sent | requests replicas served "
        "| replica hit rate | evicted tokens |"
    ]
    L += ["|---|---|---|---:|---:|---:|---:|"]
    for k, p in sm["peers"].items():
        rt = sm["replicas"][k]["totals"]
        name = " ".join(str(a) for a in p.get("cmdline_at_end", []))
        argv = [str(a) for a in p.get("argv", [])]
        cmd = f"{name} <- " + " ".join(argv[1:6]) + (" ..." if len(argv) > 6 else "")
        cmd = cmd.replace("|", "\\|")
        L.append(
            f"| {k} | pid {p.get('pid')}: `{cmd[:160]}` | {'yes' if p.get('pid_listens_on_port') else 'NO'} "
            f"| {p.get('calls_sent')} "
            f"| {rt['sglang:num_requests']:.0f} | {_p(rt['hit_rate'])} | {rt['sglang:evicted_tokens']:.0f} |"
        )
    L += [
        "",
        f"## Speedups (geometric mean of per-task completion-time ratios; baseline {sm['baseline']})",
        "",
    ]
    L += ["| system | live vs baseline | live vs best router policy | simulator vs baseline | live/sim - 1 |"]
    L += ["|---|---:|---:|---:|---:|"]
    sim = sm["simulator"]
    for name, v in sm["live_speedups"].items():
        rel = sim["relative_difference"].get(name)
        L.append(
            f"| {name} | {_x(v)} | {_x(sm['speedups_vs_best_router'].get(name))} "
            f"| {_x(sim['speedups'].get(name))} | {'–' if rel is None else f'{100 * rel:+.1f}%'} |"
        )
    L.append("")
    L.append(f"Best sglang-router policy (fastest): {sm['best_router'] or '–'}.")
    if sim["note"]:
        L.append(f"Simulator: {sim['note']}")
    elif not sim["speedups"]:
        L.append("Simulator: not run (--no-simulate).")
    else:
        rels = [abs(v) for v in sim["relative_difference"].values() if v is not None]
        L.append(
            f"Simulator agreement (goal: within 10%): worst {100 * max(rels):.1f}%"
            if rels
            else "Simulator agreement: nothing to compare."
        )
    L += ["", "## Issue targets (one run)", ""]
    L += [
        "| system | vs best router (>= 1.64x) | vs cache_aware (>= 2.0x) "
        "| min SLO per tenant (>= 99%) | met |"
    ]
    L += ["|---|---:|---:|---:|---|"]
    for name, t in sm["targets"].items():
        ok = (
            sm["valid"]
            and (t["vs_best_router"] or 0) >= TARGET_VS_BEST
            and (t["vs_cache_aware"] or 0) >= TARGET_VS_CACHE_AWARE
            and (t["min_tenant_slo"] or 0) >= TARGET_SLO
        )
        L.append(
            f"| {name} | {_x(t['vs_best_router'])} | {_x(t['vs_cache_aware'])} | {_p(t['min_tenant_slo'])} "
            f"| {'yes' if ok else 'no'} |"
        )
    L += ["", "### SLO attainment per tenant", "", "| system | tenant | SLO |", "|---|---|---:|"]
    for sysname, per in sm["slo_per_tenant"].items():
        for tenant, v in sorted(per.items()):
            L.append(f"| {sysname} | {tenant} | {_p(v)} |")
    return "\n".join(L) + "\n"
