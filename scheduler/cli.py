"""``saga simulate``: run systems on a simulated cluster and write the comparison report.

    saga simulate --workload swe_bench --replicas 64 --load 0.8 --duration-s 3600 \\
        --systems saga,cache_aware,sticky --seed 1 --out bench/results/sim_swe

Steps: build the workload (``saga.scheduler.workloads.get_workload``; the arrival rate is
calibrated so that the offered load is ``--load`` x the cluster's capacity measured with the
replica model's own iteration costs, ``sim.limits.emulator_demand``); compute every task's
physical limit (``sim.limits.physical_limits``; deadlines are the tenant's ``slo_factor`` x
that limit); train the AEG predictor on a *different* sample of the same workload (seed +
10000) for the systems that use it; run each system (``sim.loop.Simulator``); write one
``RunResult`` per system (``<system>.json.gz``), every session's physical limit
(``limits.json.gz``), ``run.json`` (command, parameters, wall times) and the report
(``report.md``, ``report.json``, PNG plots). The per-session detail is gzipped JSON,
byte-identical on a rerun with the same content (``zcat``, or
``saga.scheduler.report.read_json_text``); the summaries stay plain JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import shlex
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from tqdm import tqdm

from saga.emulator.core import ReplicaConfig
from saga.graphs.aeg import build_graphs
from saga.graphs.predict import AEGPredictor
from saga.scheduler.report import (
    MEASURED_KEY,
    ReportError,
    build_report,
    measured,
    write_json_gz,
    write_report,
    write_result,
)
from saga.scheduler.sim.limits import emulator_demand, physical_limits
from saga.scheduler.sim.loop import SimError, Simulator
from saga.scheduler.sim.profiles import DEFAULT_PROFILE, PROFILES
from saga.scheduler.sim.systems import SYSTEMS, UnknownSystem, get_system
from saga.scheduler.workloads import WORKLOADS, WorkloadError, get_workload
from saga.scheduler.workloads.model import Workload

DEFAULT_SYSTEMS = "saga,cache_aware,sticky,affinity,thunder,round_robin,least_load,power_of_two"
TRAIN_SEED_OFFSET = 10_000
TRAIN_SESSIONS = 300


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "simulate",
        help="run SAGA and baselines on a simulated cluster",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--workload", required=True, help=f"one of {', '.join(sorted(WORKLOADS))}")
    p.add_argument("--replicas", type=int, default=64, help="replica models (1..512), default 64")
    p.add_argument("--load", type=float, default=0.8, help="offered load, fraction of capacity (default 0.8)")
    p.add_argument("--systems", default=DEFAULT_SYSTEMS, help=f"comma list of: {', '.join(SYSTEMS)}")
    p.add_argument("--seed", type=int, default=0)
    size = p.add_mutually_exclusive_group()
    size.add_argument("--duration-s", type=float, default=None, help="session arrivals over this span (s)")
    size.add_argument("--sessions", type=int, default=None, help="exactly this many sessions")
    p.add_argument("--horizon-s", type=float, default=None, help="stop the simulation at this time (s)")
    p.add_argument(
        "--warmup-s",
        type=float,
        default=0.0,
        help="report only tasks arriving after this (s; the cluster is still filling up before)",
    )
    p.add_argument(
        "--cooldown-s",
        type=float,
        default=0.0,
        help="... and this long before the last arrival (s; the cluster drains after it)",
    )
    p.add_argument(
        "--workload-param",
        action="append",
        default=[],
        metavar="KEY=JSON",
        help="a workload parameter (repeatable), e.g. tenants_per_class='{\"light\": 8}' "
        "(docs/workloads.md lists each workload's parameters)",
    )
    p.add_argument("--baseline", default=None, help="speedup baseline (default cache_aware if run)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--replica-profile", default=DEFAULT_PROFILE, help=f"one of {', '.join(PROFILES)}")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(handler=run_simulate)


def sim_config(profile: str, page_size: int) -> ReplicaConfig:
    """The named replica profile (``sim/profiles.py``) with the trace's page size."""
    if profile not in PROFILES:
        raise SimError(f"unknown replica profile {profile!r}; known: {', '.join(PROFILES)}")
    return replace(PROFILES[profile], page_size=page_size)


def _progress(total: int, desc: str, quiet: bool) -> tqdm[Any]:
    return tqdm(total=total, desc=desc, unit="task", disable=quiet or not sys.stderr.isatty(), leave=False)


def workload_params(pairs: list[str]) -> dict[str, Any]:
    """``--workload-param KEY=JSON`` values as keyword arguments (JSON lists become tuples)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.isidentifier():
            raise SimError(f"--workload-param {pair!r}: expected KEY=JSON with a parameter name as KEY")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise SimError(f"--workload-param {key}: not JSON ({exc.msg}): {raw!r}") from None
        out[key] = _tuples(value)
    return out


def _tuples(v: Any) -> Any:
    if isinstance(v, list):
        return tuple(_tuples(x) for x in v)
    if isinstance(v, dict):
        return {k: _tuples(x) for k, x in v.items()}
    return v


def build_workload(args: argparse.Namespace, cfg: ReplicaConfig) -> Workload:
    params: dict[str, Any] = workload_params(args.workload_param)
    params.update(seed=args.seed, replicas=args.replicas, load=args.load)
    if args.sessions is not None:
        params["n_sessions"] = args.sessions
    else:
        params["duration_s"] = args.duration_s if args.duration_s is not None else 3600.0
    params["demand"] = emulator_demand(cfg)
    return get_workload(args.workload, **params)


def measure_window(w: Workload, warmup_s: float, cooldown_s: float) -> tuple[float, float] | None:
    """Arrival window ``[warmup, span - cooldown)`` the report counts (None: every task).

    ``span`` is the arrival horizon (``duration_s`` of the workload, else its last arrival).
    """
    for name, v in (("--warmup-s", warmup_s), ("--cooldown-s", cooldown_s)):
        if not (math.isfinite(v) and v >= 0):
            raise SimError(f"{name} must be >= 0 seconds, got {v}")
    if warmup_s == 0 and cooldown_s == 0:
        return None
    span = float(w.params.get("duration_s") or max((s.start_s for s in w.sessions), default=0.0))
    lo, hi = warmup_s, span - cooldown_s
    if not hi > lo:
        raise SimError(
            f"--warmup-s {warmup_s:g} and --cooldown-s {cooldown_s:g} leave no arrivals to measure "
            f"(arrivals span {span:g} s)"
        )
    if not any(lo <= s.start_s < hi for s in w.sessions):
        raise SimError(f"no task arrives in the measured window [{lo:g}, {hi:g}) s")
    return lo, hi


def run_simulate(args: argparse.Namespace) -> int:
    command = getattr(args, "invocation", None) or "saga simulate " + shlex.join(sys.argv[2:])
    try:
        names = [n.strip() for n in args.systems.split(",") if n.strip()]
        specs = [get_system(n) for n in names]
        if not 1 <= args.replicas <= 512:
            raise SimError(f"--replicas must be in 1..512, got {args.replicas}")
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        cfg = sim_config(args.replica_profile, 64)
        w = build_workload(args, cfg)
        bs = next((s.block_size for s in w.sessions if s.block_size), 64)
        if bs != cfg.page_size:
            cfg = sim_config(args.replica_profile, bs)
        t_wl = time.perf_counter() - t0
        with _progress(len(w.sessions), "physical limits", args.no_progress) as bar:
            limits = physical_limits(w, cfg, progress=bar.update)
        write_json_gz(out / "limits.json.gz", json.dumps(limits))
        predictor = None
        if any(s.use_predictor for s in specs):
            train = get_workload(  # same workload parameters, other sessions
                args.workload,
                **workload_params(args.workload_param),
                seed=args.seed + TRAIN_SEED_OFFSET,
                n_sessions=TRAIN_SESSIONS,
                rate=1.0,
            )
            predictor = AEGPredictor(build_graphs(train.sessions))
        window = measure_window(w, args.warmup_s, args.cooldown_s)
        results = []
        walls: dict[str, float] = {}
        for spec in specs:
            with _progress(len(w.sessions), spec.name, args.no_progress) as bar:
                sim = Simulator(
                    w,
                    spec,
                    args.replicas,
                    cfg,
                    seed=args.seed,
                    load=args.load,
                    predictor=predictor,
                    limits=limits,
                    horizon_s=args.horizon_s,
                    progress=bar.update,
                )
                r = sim.run()
            if window is not None:
                r = replace(r, meta={**r.meta, MEASURED_KEY: list(window)})
            walls[spec.name] = r.wall_s or 0.0
            write_result(r, out / f"{spec.name}.json.gz")
            results.append(r)
            done = sum(1 for o in r.outcomes if o.completed)
            print(f"{spec.name}: {r.wall_s:.1f} s wall, {done} sessions done", file=sys.stderr)
        baseline = args.baseline or ("cache_aware" if "cache_aware" in names else names[0])
        report = build_report(results, baseline=baseline, limits=limits)
        run_info = {
            "command": command,
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "machine": f"{platform.node()} {platform.machine()} python {platform.python_version()}",
            "workload": w.name,
            "workload_params": dict(w.params),
            "sessions": len(w.sessions),
            "workload_build_s": t_wl,
            "wall_s": walls,
            "replica_config": results[0].meta.get("replica_config") if results else None,
            MEASURED_KEY: None if window is None else list(window),
            "args": {k: v for k, v in vars(args).items() if k != "handler"},
        }
        (out / "run.json").write_text(json.dumps(run_info, indent=1, default=str), encoding="utf-8")
        shown = [measured(r) for r in results]
        for p in write_report(report, shown, out, command=command, plots=not args.no_plots):
            print(p)
    except (UnknownSystem, SimError, WorkloadError, ReportError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
