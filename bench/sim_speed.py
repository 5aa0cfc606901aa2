"""Simulator speed: wall seconds to simulate one hour of a cluster (goal: 64 replicas <= 120 s).

Builds the workload for ``--replicas`` at ``--load`` (arrivals over ``--duration-s``), then
runs each system for exactly ``--horizon-s`` of virtual time (default one hour) and prints
wall seconds, simulated seconds per wall second, calls completed and events per second.

    python bench/sim_speed.py --workload claude_code --replicas 64 --load 0.8 --systems saga,cache_aware
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from saga.scheduler.cli import sim_config
from saga.scheduler.sim.limits import emulator_demand, physical_limits
from saga.scheduler.sim.loop import Simulator
from saga.scheduler.sim.profiles import DEFAULT_PROFILE
from saga.scheduler.sim.systems import get_system
from saga.scheduler.workloads import get_workload


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workload", default="claude_code")
    ap.add_argument("--replicas", type=int, default=64)
    ap.add_argument("--load", type=float, default=0.8)
    ap.add_argument("--duration-s", type=float, default=3600.0)
    ap.add_argument("--horizon-s", type=float, default=3600.0)
    ap.add_argument("--systems", default="saga,cache_aware")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--profile", default=DEFAULT_PROFILE)
    ap.add_argument("--out", default="bench/results")
    args = ap.parse_args(argv)
    cfg = sim_config(args.profile, 64)
    t0 = time.perf_counter()
    w = get_workload(
        args.workload, seed=args.seed, duration_s=args.duration_s, replicas=args.replicas, load=args.load,
        demand=emulator_demand(cfg),
    )  # fmt: skip
    limits = physical_limits(w, cfg)
    setup = time.perf_counter() - t0
    rows = []
    for name in args.systems.split(","):
        spec = get_system(name)
        sim = Simulator(
            w, spec, args.replicas, cfg, seed=args.seed, load=args.load, limits=limits,
            horizon_s=args.horizon_s, sample_period_s=60.0,
        )  # fmt: skip
        r = sim.run()
        calls = sum(o.calls for o in r.outcomes)
        wall = r.wall_s or 0.0
        rows.append({
            "system": name, "wall_s": round(wall, 2), "simulated_s": args.horizon_s,
            "speedup_vs_real_time": round(args.horizon_s / wall, 1) if wall else None,
            "sessions_started": len(r.outcomes), "calls_completed": calls,
            "calls_per_wall_s": round(calls / wall) if wall else None,
        })  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    summary = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "python bench/sim_speed.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": f"{platform.node()} {platform.machine()} python {platform.python_version()}",
        "workload": args.workload, "replicas": args.replicas, "load": args.load, "profile": args.profile,
        "sessions": len(w.sessions), "setup_s": round(setup, 1), "runs": rows,
        "goal": "one hour of a 64-replica cluster in <= 120 s wall",
    }  # fmt: skip
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%d")
    (out / f"sim_speed_{args.workload}_{args.replicas}r_{stamp}.json").write_text(
        json.dumps(summary, indent=1)
    )
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
