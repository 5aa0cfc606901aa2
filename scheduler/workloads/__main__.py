"""``python -m saga.scheduler.workloads NAME [--seed S] [--duration-s D | --n-sessions N] ...``.

Builds a workload, prints its statistics (sessions, calls, tokens, arrival rate, offered
load, mean demand and physical limit under the iteration-cost model, generation wall time)
as Markdown, and optionally writes it as JSON lines (``--out``) for an exact replay.
"""

from __future__ import annotations

import argparse
import platform
import shlex
import statistics
import sys
import time
from datetime import UTC, datetime

from saga.scheduler.workloads.arrivals import ArrivalProcess
from saga.scheduler.workloads.demand import (
    IterationCostModel,
    offered_load,
    physical_limit_s,
    session_demand_s,
)
from saga.scheduler.workloads.io import save_workload
from saga.scheduler.workloads.model import WorkloadError
from saga.scheduler.workloads.registry import WORKLOADS, get_workload


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m saga.scheduler.workloads", description=__doc__)
    ap.add_argument("name", choices=sorted(WORKLOADS))
    ap.add_argument("--seed", type=int, default=0)
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--duration-s", type=float)
    g.add_argument("--n-sessions", type=int)
    ap.add_argument("--rate", type=float, help="sessions/s (else --replicas and --load)")
    ap.add_argument("--replicas", type=int)
    ap.add_argument("--load", type=float)
    ap.add_argument("--arrival", default="poisson", choices=["poisson", "gamma", "weibull"])
    ap.add_argument("--cv", type=float, default=1.0)
    ap.add_argument("--out", help="write the workload as JSON lines here")
    args = ap.parse_args(argv)
    cost = IterationCostModel()
    try:
        t0 = time.perf_counter()
        w = get_workload(
            args.name,
            seed=args.seed,
            duration_s=args.duration_s,
            n_sessions=args.n_sessions,
            rate=args.rate,
            replicas=args.replicas,
            load=args.load,
            arrival=ArrivalProcess(args.arrival, args.cv),
        )
        gen_s = time.perf_counter() - t0
        demands = [session_demand_s(s, cost) for s in w.sessions]
        limits = [physical_limit_s(s, cost) for s in w.sessions]
        if args.out:
            save_workload(w, args.out)
    except WorkloadError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    calls = [s.total_calls for s in w.sessions]
    prompt = sum(c.prompt_tokens for s in w.sessions for x in s.walk() for c in x.calls)
    horizon = args.duration_s or (w.sessions[-1].start_s if len(w.sessions) > 1 else 0.0)
    cmd = "python -m saga.scheduler.workloads " + shlex.join(argv if argv is not None else sys.argv[1:])
    now = datetime.now(UTC).isoformat(timespec="seconds")
    print(f"# workload {w.name}\n\n- command: `{cmd}`\n- date: {now}")
    print(f"- machine: {platform.machine()} {platform.processor() or ''}, python {platform.python_version()}")
    print(f"- cost model: {cost}\n")
    print("| metric | value |\n|---|---:|")
    rows: list[tuple[str, str]] = [
        ("sessions", f"{len(w.sessions)}"),
        ("tenants", f"{len(w.tenants)}"),
        ("arrival rate (sessions/s)", f"{w.params.get('rate_per_s', 0.0):.4f}"),
        (
            "LLM calls per session mean / p50",
            f"{statistics.fmean(calls):.1f} / {statistics.median(calls):.0f}",
        ),
        ("prompt tokens per call (mean)", f"{prompt / max(1, sum(calls)):.0f}"),
        ("demand per session mean (replica-s)", f"{statistics.fmean(demands):.2f}"),
        (
            "physical limit per session mean / p50 (s)",
            f"{statistics.fmean(limits):.1f} / {statistics.median(limits):.1f}",
        ),
        ("generation wall time (s)", f"{gen_s:.2f}"),
    ]
    if args.replicas and horizon > 0:
        load = offered_load(w.sessions, args.replicas, lambda s: session_demand_s(s, cost), horizon)
        rows.append(("offered load (measured)", f"{load:.3f}"))
    for k, v in rows:
        print(f"| {k} | {v} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
