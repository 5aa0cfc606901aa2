"""``saga bench e2e``: the live end-to-end benchmark (see :mod:`saga.bench.e2e`, docs/bench.md).

    saga bench e2e --workload swe_bench [--workload webarena ...] --replicas 8 --load 0.8
                   --sessions 40 --seed 1 --time-scale 4 --out bench/results/e2e_DATE
                   [--systems saga,saga-redis,cache_aware,round_robin,manual]
                   [--size full|small|tiny] [--kv-capacity-tokens N] [--no-simulate]

``--workload`` is a registry name (``swe_bench``, ``webarena``, ``claude_code``,
``multi_tenant``) or a workload JSON-lines file (``saga.scheduler.workloads.io``); several
give several scenarios (the speedups are geometric means over them). Named workloads are
calibrated to ``--load`` x the capacity of ``--replicas`` emulated replicas with the
simulator's demand model. ``--size`` shrinks the synthetic generators (``small``: ~10-call
sessions with ~2k-token contexts, ``tiny``: 2-5 calls of a few hundred tokens, for CI);
``full`` is the generators' defaults.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shlex
import sys
from pathlib import Path
from typing import Any

from saga.scheduler.workloads.model import Workload


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("bench", help="live benchmarks against real peers")
    sub = p.add_subparsers(dest="bench_command")
    e = sub.add_parser(
        "e2e",
        help="SAGA vs the real sglang-router on one emulated cluster (live, over HTTP)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    e.add_argument("--workload", action="append", default=None, help="name or JSONL file (repeatable)")
    e.add_argument("--systems", default="saga,saga-redis,cache_aware,round_robin,manual")
    e.add_argument("--replicas", type=int, default=8)
    e.add_argument("--load", type=float, default=0.8, help="offered load, fraction of capacity")
    e.add_argument("--sessions", type=int, default=24, help="top-level sessions per workload")
    e.add_argument("--seed", type=int, default=1)
    e.add_argument("--time-scale", type=float, default=4.0, help="model seconds per wall second")
    e.add_argument("--size", choices=("full", "small", "tiny"), default="full")
    e.add_argument("--kv-capacity-tokens", type=int, default=None)
    e.add_argument("--out", required=True, help="report folder")
    e.add_argument("--no-simulate", action="store_true", help="skip the simulator agreement")
    e.add_argument(
        "--replica-url",
        action="append",
        default=[],
        help="use this running replica instead of emulated ones (repeatable; real SGLang, bench/gpu)",
    )
    e.add_argument("--no-progress", action="store_true")
    e.set_defaults(handler=run_bench_e2e)
    v = sub.add_parser(
        "cpu-verdict",
        help="recompute the CPU guard's verdicts from a run's raw traces (logs/*-cpu.json.gz)",
    )
    v.add_argument("paths", nargs="+", help="trace files or run folders (their logs/*-cpu.json.gz)")
    v.set_defaults(handler=run_cpu_verdict)
    p.set_defaults(handler=lambda args: (p.print_help(), 2)[1])


def generator_params(size: str) -> dict[str, Any]:
    from saga.scheduler.workloads.synthetic import LogNormal, SweBenchParams, WebArenaParams

    if size == "full":
        return {}
    if size == "small":
        return {
            "swe_bench_params": SweBenchParams(
                steps=LogNormal(10, 0.4, 4, 20),
                system_tokens=1024,
                issue_tokens=LogNormal(300, 0.5, 64, 1000),
                obs_tokens=LogNormal(150, 0.6, 16, 600),
                output_tokens=LogNormal(60, 0.5, 8, 200),
            ),
            "webarena_params": WebArenaParams(
                steps=LogNormal(6, 0.4, 3, 12),
                system_tokens=768,
                obs_tokens=LogNormal(600, 0.5, 100, 2000),
                output_tokens=LogNormal(50, 0.5, 8, 200),
            ),
        }
    return {
        "swe_bench_params": SweBenchParams(
            steps=LogNormal(3, 0.3, 2, 5),
            system_tokens=256,
            issue_tokens=LogNormal(64, 0.3, 16, 128),
            obs_tokens=LogNormal(32, 0.3, 8, 64),
            output_tokens=LogNormal(8, 0.3, 2, 16),
        ),
        "webarena_params": WebArenaParams(
            steps=LogNormal(3, 0.3, 2, 4),
            system_tokens=192,
            intent_tokens=LogNormal(16, 0.3, 4, 32),
            obs_tokens=LogNormal(96, 0.3, 32, 160),
            output_tokens=LogNormal(8, 0.3, 2, 16),
        ),
    }


def build_workload(name: str, args: argparse.Namespace) -> Workload:
    from saga.bench.e2e import E2ESettings, replica_config
    from saga.scheduler.sim.limits import emulator_demand
    from saga.scheduler.workloads import get_workload, load_workload

    if Path(name).suffix in (".jsonl", ".json") or Path(name).is_file():
        return load_workload(name)
    cfg = replica_config(
        E2ESettings(
            (), args.replicas, args.load, args.time_scale, args.seed, Path("."), "", args.kv_capacity_tokens
        )
    )
    params: dict[str, Any] = {
        "seed": args.seed,
        "n_sessions": args.sessions,
        "replicas": args.replicas,
        "load": args.load,
        "demand": emulator_demand(cfg),
    }
    gp = generator_params(args.size)
    if name == "swe_bench" and "swe_bench_params" in gp:
        params["swe_bench_params"] = gp["swe_bench_params"]
    elif name == "webarena" and "webarena_params" in gp:
        params["webarena_params"] = gp["webarena_params"]
    elif name == "multi_tenant":
        params.update(gp)
    return get_workload(name, **params)


def run_bench_e2e(args: argparse.Namespace) -> int:
    from saga.bench.e2e import E2ESettings, run_e2e
    from saga.bench.procs import BenchProcessError
    from saga.bench.systems import SYSTEMS
    from saga.scheduler.report import ReportError
    from saga.scheduler.workloads import WorkloadError

    command = getattr(args, "invocation", None) or "saga bench e2e " + shlex.join(sys.argv[3:])
    systems = tuple(x.strip() for x in args.systems.split(",") if x.strip())
    bad = [x for x in systems if x not in SYSTEMS]
    if bad or not systems:
        print(f"saga bench e2e: unknown system(s) {bad}; known: {', '.join(SYSTEMS)}", file=sys.stderr)
        return 2
    if args.replica_url:
        args.replicas = len(args.replica_url)
    if args.replicas < 1 or not args.time_scale > 0 or not args.load > 0 or args.sessions < 1:
        print(
            "saga bench e2e: need --replicas >= 1, --sessions >= 1, --load > 0, --time-scale > 0",
            file=sys.stderr,
        )
        return 2
    try:
        workloads = [build_workload(n, args) for n in (args.workload or ["swe_bench"])]
    except WorkloadError as e:
        print(f"saga bench e2e: {e}", file=sys.stderr)
        return 2
    settings = E2ESettings(
        systems=systems,
        replicas=args.replicas,
        load=args.load,
        time_scale=args.time_scale,
        seed=args.seed,
        out_dir=Path(args.out),
        command=command,
        kv_capacity_tokens=args.kv_capacity_tokens,
        page_size=next((s.block_size for w in workloads for s in w.sessions if s.block_size), 64),
        progress=not args.no_progress,
        simulate=not args.no_simulate,
        external_replicas=tuple(args.replica_url),
    )
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    try:
        summary = asyncio.run(run_e2e(workloads, settings))
    except (BenchProcessError, ReportError, OSError) as e:
        print(f"saga bench e2e: {e}", file=sys.stderr)
        return 1
    print(f"report: {Path(args.out) / 'report.md'}")
    if summary["failures"]:
        print(f"saga bench e2e: {len(summary['failures'])} run(s) failed; see the report", file=sys.stderr)
        return 1
    return 0 if summary["valid"] else 3


def run_cpu_verdict(args: argparse.Namespace) -> int:
    """One line per system run: valid or not, machine peak, reasons. Exit 0 when every run is
    valid, 3 when one is not (as ``saga bench e2e``), 2 on a missing or unreadable file."""
    from saga.bench.procs import CpuTraceError, reverify

    files: list[Path] = []
    for p in map(Path, args.paths):
        found = sorted(p.glob("logs/*-cpu.json.gz")) + sorted(p.glob("*-cpu.json.gz")) if p.is_dir() else [p]
        if not found or not all(f.is_file() for f in found):
            print(f"saga bench cpu-verdict: no CPU trace file at {p}", file=sys.stderr)
            return 2
        files += found
    invalid = 0
    for f in files:
        try:
            v = reverify(f)
        except CpuTraceError as e:
            print(f"saga bench cpu-verdict: {e}", file=sys.stderr)
            return 2
        invalid += not v.valid
        state = "valid" if v.valid else "INVALID: " + "; ".join(v.reasons)
        run = f.name.removesuffix("-cpu.json.gz")
        print(f"{run}: machine peak {v.machine_peak:.2f} / {v.machine_cores}, {state}")
    return 3 if invalid else 0
