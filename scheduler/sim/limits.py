"""Physical limit: each session replayed alone on an idle replica with an infinite cache.

The session (with its sub-agents) runs through the very same simulator loop and replica
model as every system, on one replica whose KV pool and context length are unbounded
(2^34 tokens), with round-robin placement and nothing else; no other session exists. So the
limit uses the replica model's exact iteration-time arithmetic (prefill, decode and KV-read
costs) and the same replay rules as the runs it is compared with. Its only pessimism: the
first call computes the agent's shared system prompt, which a warm cluster would hold.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from saga.emulator.core import ReplicaConfig
from saga.graphs.trace import SessionTrace
from saga.scheduler.sim.loop import Simulator
from saga.scheduler.sim.systems import BASELINES
from saga.scheduler.workloads.demand import new_prefill_tokens
from saga.scheduler.workloads.model import Workload

UNBOUNDED_TOKENS = 1 << 34


def physical_limits(
    workload: Workload, config: ReplicaConfig, progress: Callable[[int], object] | None = None
) -> dict[str, float]:
    """Session id -> physical limit in seconds, for every top-level session."""
    big = replace(config, kv_capacity_tokens=UNBOUNDED_TOKENS, context_length=UNBOUNDED_TOKENS)
    system = BASELINES["round_robin"]
    out: dict[str, float] = {}
    for s in workload.sessions:
        alone = replace(workload, sessions=(replace(s, start_s=0.0),))
        r = Simulator(alone, system, 1, big, sample_period_s=0.0).run()
        top = next(o for o in r.outcomes if o.session_id == s.session_id)
        out[s.session_id] = max(top.completion_s, 1e-6)
        if progress is not None:
            progress(1)
    return out


def emulator_demand(config: ReplicaConfig, decode_batch: float = 16.0) -> Callable[[SessionTrace], float]:
    """Replica-seconds a session needs on ``config``'s replica model (load calibration).

    Per call: ``new x prefill_s + output x (decode_s_per_seq + kv_read_s x context) + overhead x
    (prefill chunks + output / decode_batch)``, where ``new`` are the uncached prompt tokens
    with an infinite cache (``workloads.demand.new_prefill_tokens``) and ``context`` the call's
    mean KV length while decoding (prompt + output / 2): the replica model's own iteration
    arithmetic with the fixed cost of a decode step shared by ``decode_batch`` sequences
    (the workloads module's convention). Sub-agents are included.
    """
    t = config.timing
    chunk = config.chunked_prefill_size

    def demand(session: SessionTrace) -> float:
        total = 0.0

        def visit(s: SessionTrace, inherited: set[int]) -> None:
            nonlocal total
            news = new_prefill_tokens(s, inherited)
            for new, c in zip(news, s.calls, strict=True):
                ctx = c.prompt_tokens + c.output_tokens / 2
                chunks = max(1, -(-new // chunk))
                total += new * t.prefill_s_per_token
                total += c.output_tokens * (t.decode_s_per_seq + t.kv_read_s_per_token * ctx)
                total += t.fixed_overhead_s * (chunks + c.output_tokens / decode_batch)
            for sub in s.subagents:
                seen = set(inherited)
                for c in s.calls[: sub.after_call + 1]:
                    seen.update(c.block_hashes)
                visit(sub.session, seen)

        visit(session, set())
        return total

    return demand
