"""Engine micro-benchmark: placement decision latency with many live sessions.

Setup: ``--replicas`` replicas (KV 1.28M tokens, 1024 slots: the llama70b-h100x8 profile),
``--sessions`` live sessions, each with a context of log-normal size (median 16k tokens,
64-token blocks, sharing a 4k-token system prompt per agent type), placed and then pinned in
a tool gap; every replica's cache view is exact (ReplicaCache events with its sessions'
blocks). Measured: ``--calls`` next-call submissions of random sessions (each completed
right after, outside the timed region), timing

- ``select``: the placement policy's decision alone (``SagaPlacement.select``), and
- ``handle``: the whole ``Engine.handle(CallSubmitted)`` (admission, placement, gating,
  dispatch bookkeeping: what the service waits for),

reporting p50/p99/max in microseconds. Also for the baselines' policies (``select`` only).

    python bench/engine_bench.py --replicas 64 --sessions 10000 --calls 20000
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from saga.clock import VirtualClock
from saga.scheduler.api import (
    CallCompleted,
    CallSubmitted,
    Dispatch,
    Prompt,
    ReplicaAdded,
    ReplicaCache,
    SessionStart,
    ToolStarted,
    Usage,
)
from saga.scheduler.engine import Engine
from saga.scheduler.policies import PLACEMENT_POLICIES
from saga.scheduler.policy import PlacementRequest

BS = 64


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q / 100 * len(s)))]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--replicas", type=int, default=64)
    ap.add_argument("--sessions", type=int, default=10_000)
    ap.add_argument("--calls", type=int, default=20_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="bench/results")
    args = ap.parse_args(argv)
    rng = random.Random(args.seed)
    clock = VirtualClock()
    e = Engine(clock)
    for i in range(args.replicas):
        e.handle(ReplicaAdded(f"r{i:03d}", 1_284_505, 1024, BS))
    system = {a: tuple(hash(("sys", a, j)) for j in range(64)) for a in range(8)}
    ctx: dict[str, tuple[int, ...]] = {}
    n_calls = 0
    t_setup = time.perf_counter()
    for k in range(args.sessions):
        sid = f"s{k}"
        agent = k % 8
        e.handle(SessionStart(sid, f"t{k % 4}", f"agent{agent}"))
        blocks = max(80, int(rng.lognormvariate(5.52, 0.8)))  # median ~250 blocks = 16k tokens
        hashes = system[agent] + tuple(hash((sid, j)) for j in range(blocks - 64))
        ctx[sid] = hashes
        acts = e.handle(CallSubmitted(f"c{n_calls}", sid, Prompt(len(hashes) * BS, hashes, BS), 300))
        d = next(a for a in acts if isinstance(a, Dispatch))
        e.handle(ReplicaCache(d.replica_id, stored=hashes))
        clock.advance(0.001)
        e.handle(CallCompleted(f"c{n_calls}", Usage(len(hashes) * BS, 0, 300), "tool_use"))
        e.handle(ToolStarted(sid, "bash"))
        n_calls += 1
    t_setup = time.perf_counter() - t_setup
    handle_us: list[float] = []
    sids = list(ctx)
    placement = e.placement
    for _ in range(args.calls):
        sid = rng.choice(sids)
        grown = ctx[sid] + tuple(hash((sid, "g", n_calls, j)) for j in range(rng.randint(1, 40)))
        ctx[sid] = grown
        cid = f"c{n_calls}"
        n_calls += 1
        ev = CallSubmitted(cid, sid, Prompt(len(grown) * BS, grown, BS), 300)
        t0 = time.perf_counter_ns()
        acts = e.handle(ev)
        t1 = time.perf_counter_ns()
        handle_us.append((t1 - t0) / 1000)
        found = next((a for a in acts if isinstance(a, Dispatch)), None)
        if found is not None:
            e.handle(ReplicaCache(found.replica_id, stored=grown[-40:]))
            clock.advance(0.001)
            e.handle(CallCompleted(cid, Usage(len(grown) * BS, 0, 300), "tool_use"))
            e.handle(ToolStarted(sid, "bash"))
    # the decision alone, for every placement policy, on the same engine state
    elig = sorted(e.replicas.values(), key=lambda r: r.replica_id)
    results: dict[str, dict[str, float]] = {}
    for name, make in sorted(PLACEMENT_POLICIES.items()):
        pol = placement if name == "saga" else make(args.seed)
        times: list[float] = []
        for _ in range(min(args.calls, 5000)):
            sid = rng.choice(sids)
            h = ctx[sid]
            s = e.sessions[sid]
            req = PlacementRequest(
                call_id="x",
                session_id=sid,
                tenant=s.tenant,
                agent_type=s.agent_type,
                prompt_tokens=len(h) * BS + 640,
                max_new_tokens=300,
                block_hashes=h,
                block_size=BS,
                home=s.home,
                pinned=s.pin is not None,
                routing_key=sid,
            )
            t0 = time.perf_counter_ns()
            pol.select(req, elig)
            times.append((time.perf_counter_ns() - t0) / 1000)
        results[name] = {"p50_us": pct(times, 50), "p99_us": pct(times, 99), "max_us": max(times)}
    summary = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "python bench/engine_bench.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": f"{platform.node()} {platform.machine()} python {platform.python_version()}",
        "replicas": args.replicas,
        "live_sessions": len(e.sessions),
        "setup_s": round(t_setup, 1),
        "handle_call_submitted_us": {
            "p50": pct(handle_us, 50),
            "p99": pct(handle_us, 99),
            "max": max(handle_us),
            "mean": statistics.fmean(handle_us),
            "n": len(handle_us),
        },
        "select_us_by_policy": results,
        "goal": "placement decision p99 <= 200 us with 10k live sessions and 64 replicas",
    }
    print(json.dumps(summary, indent=1))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%d")
    (out / f"engine_bench_{stamp}.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
