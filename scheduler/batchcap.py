"""Decode-batch cap and shortest-remaining-work order: processor sharing -> SRPT-like.

Off by default (``BatchCapSettings.enabled``): measured, it never made tasks faster on the
simulated workloads (see "What was measured" below).

Why try it. A replica serving agents runs continuous batching: every decode iteration costs
``f + d x b + r x K`` (fixed overhead ``f``, ``d`` per running sequence, ``r`` per KV token
read, ``b`` sequences holding ``K`` context tokens; the replica model's arithmetic,
``saga.emulator.core.replica``). SGLang admits up to ``max_running_requests`` (1024), so a
replica is effectively *processor sharing*: each admitted call slows every other by
``d + r x context`` per token. Processor sharing is the worst order for mean completion time
when the work is memory-bound; serving the least remaining work first (SRPT) is the best.
Autellix (Luo et al., arXiv 2502.13965) applies this to agent programs: PLAS/ATLAS prioritise
programs by least attained service, with anti-starvation. This module is SAGA's version,
sized from the replica's own cost model.

The cap. ``N`` calls want to run on a replica (in flight + held for it + the candidate), each
decode token costs ``c = d + r x ctx`` (``ctx``: mean context of the calls in flight, prompt +
max new tokens). Two lower bounds on the number allowed to run, the cap is the larger, in
``[1, N]`` (re-evaluated at every dispatch decision, ``ReplicaState.slot_limit``; it never stops
a running call, held calls wait for a completion):

- throughput (``max_throughput_loss`` = ``eps``): decode throughput at batch ``b`` is
  ``b / (f + b c)``; running ``B`` of ``N`` keeps ``>= 1 - eps`` of the uncapped throughput when
  ``B >= (1 - eps) x N x f / (f + eps x N x c)`` (rises towards the knee
  ``(1 - eps) f / (eps c)`` as ``N`` grows);
- latency (``latency_rule``): ``N`` equal calls served ``B`` at a time finish on average after
  ``n (f + B c) (N + B) / (2 B)`` (``n`` tokens each) against ``n (f + N c)`` all together; the
  mean is smallest at ``B* = sqrt(f N / c)``. So a cap pays only where ``N > f / c`` (the
  per-sequence cost of the batch exceeds the overhead: memory-bound decode); below that, every
  held call costs the cluster more than it saves the others.

The order. Calls above the cap wait in the replica's engine-held queue and leave it by

    key = base / w - aging x waited_s,   base = remaining_s, or min(remaining_s, slack)

lowest first: ``remaining_s`` is the session's expected remaining work (the AEG predictor's
``remaining``, refreshed at each call's end), ``w`` the tenant weight (AFS weights), ``aging``
credits every second held (a long session's call overtakes fresh short ones after
``remaining_s / aging`` seconds). ``deadline_aware``: a session that can still meet its SLO
deadline (``slack = deadline - now - remaining >= 0``) is keyed by ``min(remaining, slack)``;
a session already late keeps its SRPT key (promoting it would make the others late too).
Starvation bound: a call held ``max_hold_s`` goes before every call that was not, oldest first.
Work stealing (``stealing.py``) acts on held calls: a replica with room under its cap takes
one when the cost model says it pays.

What was measured (16 replicas, 80% load, ``bench/results/sim_batchcap_*``, docs/scheduler.md).
On the 70B H100x8 profile ``c`` ~ 0.7 ms at 40k-token contexts against ``f`` = 8.5 ms, so the
latency rule caps only past ~12 calls per replica, which the replicas rarely reach: a no-op.
The throughput rule alone (the knee) holds ~10% of calls even while ``f`` dominates (it gives
``B ~ (1 - eps) N`` there) and makes tasks slower (swe_bench +7% mean completion time); on the
memory-bound 8B profile both rules cap and both are ~8% slower. The gap to the physical limit
there is the overhead share ``(f + b c) / (f + c)`` of sharing iterations, which no hold rule
removes at this load.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from saga.scheduler.policy import QueuedCall

OVERDUE_KEY = -1e12  # key offset of a call held past max_hold_s (before every other call)


@dataclass(frozen=True, slots=True)
class CapModel:
    """What a replica needs to size its cap: the cost model and the cap's settings."""

    overhead_s: float  # f: fixed cost of one iteration
    decode_s_per_seq: float  # d: per running sequence per iteration
    kv_read_s_per_token: float  # r: per context token read per iteration
    max_throughput_loss: float  # eps
    latency_rule: bool
    min_batch: int  # never cap below this

    def limit(self, demand: int, mean_ctx: float) -> int:
        """Calls allowed to run when ``demand`` want to (at least ``min_batch``)."""
        cap = decode_cap(
            demand,
            mean_ctx,
            self.overhead_s,
            self.decode_s_per_seq,
            self.kv_read_s_per_token,
            self.max_throughput_loss,
            self.latency_rule,
        )
        return max(self.min_batch, cap)


def decode_cap(
    demand: int, mean_ctx: float, f: float, d: float, r: float, eps: float, latency_rule: bool = True
) -> int:
    """Running calls allowed on a replica where ``demand`` calls want to run (module docstring).

    ``f``, ``d``, ``r``: iteration overhead (s), seconds per sequence, seconds per KV token read;
    ``mean_ctx``: mean context tokens of a running call; ``eps``: allowed throughput loss."""
    if demand <= 1 or eps <= 0.0:
        return max(1, demand)
    c = d + r * mean_ctx
    if c <= 0.0:
        return demand
    n = demand
    b = (1.0 - eps) * n * f / (f + eps * n * c)
    if latency_rule:
        b = max(b, math.sqrt(f * n / c))
    return max(1, min(n, math.ceil(b - 1e-9)))


def srpt_key(
    call: QueuedCall,
    now: float,
    weight: float,
    aging: float,
    max_hold_s: float,
    deadline_aware: bool,
) -> float:
    """Order of a held call: lowest first (module docstring)."""
    waited = max(0.0, now - call.submitted_at)
    if waited >= max_hold_s:
        return OVERDUE_KEY + call.submitted_at
    base = max(0.0, call.remaining_s)
    if deadline_aware and call.deadline is not None:
        slack = call.deadline - now - base
        if slack >= 0.0:
            base = min(base, slack)
    return base / weight - aging * waited
