"""Benchmark: how fast the pure replica model simulates one busy replica.

Drives one ``ReplicaModel`` (Llama-3.1-8B / H100 defaults, page size 64 as for the Claude Code
traces) with an agent-like open-loop workload in virtual time for one simulated hour, the way
the cluster simulator drives it: submit at arrival times, ``advance`` to each next event. Sessions
arrive as a Poisson process; each session makes calls whose prompt is the previous prompt plus the
previous output plus a tool result (so the prefix cache matters), separated by tool gaps.
Reports wall seconds spent in the model's calls per simulated hour (goal: < 1.5 s; the
workload generator's own time is reported apart), requests, events and the mean batch size.

    python bench/emulator_model.py [--hours 1] [--seed 1] [--json PATH]
"""

from __future__ import annotations

import argparse
import heapq
import json
import os
import platform
import random
import time
from dataclasses import dataclass
from typing import TypedDict

from saga.emulator.core import Finished, ReplicaConfig, ReplicaModel, Request

PAGE = 64


@dataclass
class _Session:
    sid: int
    keys: list[int]
    tokens: int
    calls_left: int


class Scenario(TypedDict):
    session_rate: float  # new sessions per second
    first_prompt: tuple[int, int]  # tokens of a session's first prompt, uniform in [lo, hi]
    calls: tuple[int, int]  # calls per session, uniform in [lo, hi]


SCENARIOS: dict[str, Scenario] = {
    # Agent sessions: long growing prompts, 5-40 calls each, tool gaps (saturates one replica).
    "agent": {"session_rate": 0.05, "first_prompt": (4000, 16000), "calls": (5, 40)},
    # Many short independent chat calls at 12 calls/s (near this replica's capacity of about
    # 13/s for these lengths): the event-heavy case.
    "chat": {"session_rate": 12.0, "first_prompt": (200, 2000), "calls": (1, 1)},
}


def run(
    hours: float,
    session_rate: float,
    seed: int,
    first_prompt: tuple[int, int] = (4000, 16000),
    calls: tuple[int, int] = (5, 40),
) -> dict[str, float]:
    rng = random.Random(seed)
    model = ReplicaModel(ReplicaConfig(page_size=PAGE), "bench", record_kv_events=False)
    horizon = hours * 3600.0
    # (time, seq, kind, payload): kind 0 = new session, 1 = call of a session
    agenda: list[tuple[float, int, int, _Session | None]] = []
    seq = 0
    t = rng.expovariate(session_rate)
    while t < horizon:
        agenda.append((t, seq, 0, None))
        seq += 1
        t += rng.expovariate(session_rate)
    heapq.heapify(agenda)
    sessions: dict[str, tuple[_Session, int]] = {}
    n_req = n_events = 0
    next_sid = 0
    busy_batches = 0.0
    samples = 0

    def extend(s: _Session, n_tokens: int) -> None:
        # Append n_tokens of new content: chained keys for the new full pages.
        total = s.tokens + n_tokens
        while len(s.keys) < total // PAGE:
            parent = s.keys[-1] if s.keys else s.sid
            s.keys.append(hash((parent, len(s.keys), s.sid)))
        s.tokens = total

    model_s = 0.0  # wall seconds spent inside the model's own calls

    def submit(s: _Session, now: float) -> None:
        nonlocal n_req, model_s
        out = rng.randint(50, 600)
        rid = f"s{s.sid}-{s.calls_left}"
        req = Request.from_page_keys(rid, s.keys, s.tokens, out)
        t0 = time.perf_counter()
        model.submit(req, now)
        model_s += time.perf_counter() - t0
        sessions[rid] = (s, out)
        n_req += 1

    def on_event(ev: object, now: float) -> None:
        # A finished call: after a tool gap the session sends its next, longer prompt.
        nonlocal seq
        if not isinstance(ev, Finished):
            return
        s, out = sessions.pop(ev.rid)
        s.calls_left -= 1
        if s.calls_left <= 0:
            return
        extend(s, out + rng.randint(200, 3000))  # the answer + a tool result
        gap = rng.lognormvariate(0.0, 1.2)  # tool time, median 1 s
        heapq.heappush(agenda, (ev.time + gap, seq, 1, s))
        seq += 1

    wall0 = time.perf_counter()
    while True:
        t0 = time.perf_counter()
        te = model.next_event_time()
        model_s += time.perf_counter() - t0
        ta = agenda[0][0] if agenda else None
        if te is None and ta is None:
            break
        if ta is not None and (te is None or ta < te):
            if ta > horizon:
                break
            now, _, kind, payload = heapq.heappop(agenda)
            t0 = time.perf_counter()
            events = model.advance(now)
            model_s += time.perf_counter() - t0
            for ev in events:
                n_events += 1
                on_event(ev, now)
            if kind == 0:
                s = _Session(next_sid, [], 0, rng.randint(*calls))
                next_sid += 1
                extend(s, rng.randint(*first_prompt))  # system prompt + tools + task
                submit(s, now)
            else:
                assert payload is not None
                submit(payload, now)
        else:
            assert te is not None
            if te > horizon:
                break
            t0 = time.perf_counter()
            events = model.advance(te)
            running = model.load().num_running
            model_s += time.perf_counter() - t0
            for ev in events:
                n_events += 1
                on_event(ev, te)
            busy_batches += running
            samples += 1
    wall = time.perf_counter() - wall0
    c = model.counters()
    return {
        "simulated_hours": hours,
        "wall_s_total": round(wall, 3),
        "model_wall_s_per_simulated_hour": round(model_s / hours, 3),
        "total_wall_s_per_simulated_hour": round(wall / hours, 3),
        "requests_submitted": n_req,
        "requests_finished": c.requests,
        "events": n_events,
        "mean_running_requests_at_events": round(busy_batches / max(samples, 1), 1),
        "cache_hit_rate": round(c.cached_tokens / max(c.prompt_tokens, 1), 3),
        "prompt_tokens": c.prompt_tokens,
        "completion_tokens": c.completion_tokens,
        "evicted_tokens": c.evicted_tokens,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hours", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", help="write the results as JSON here")
    args = ap.parse_args()
    result: dict[str, object] = {
        "command": "python bench/emulator_model.py "
        + " ".join(f"--{k} {v}" for k, v in vars(args).items() if v),
        "machine": f"{platform.machine()} {os.cpu_count()} cpus, python {platform.python_version()}",
        "date": time.strftime("%Y-%m-%d"),
    }
    for name, sc in SCENARIOS.items():
        r = run(args.hours, sc["session_rate"], args.seed, sc["first_prompt"], sc["calls"])
        result[name] = r
        print(
            f"{name:6s} model {r['model_wall_s_per_simulated_hour']:.3f} s per simulated hour "
            f"(with workload generation {r['total_wall_s_per_simulated_hour']:.3f} s), "
            f"{r['requests_finished']} requests, {r['events']} events, "
            f"mean running {r['mean_running_requests_at_events']}, cache hit {r['cache_hit_rate']}"
        )
    print(json.dumps(result, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
