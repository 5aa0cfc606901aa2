"""Physical limit (each session alone on an idle replica with an infinite cache) and load.

:func:`physical_limits` replays each session with ``workloads.demand.replay_end_s`` (the
replay rules the simulator follows) where a call takes exactly what the replica model's
iteration arithmetic gives at batch size one (:func:`alone_call_s`): its uncached prompt
(infinite cache, the agent's shared prefix warm) prefilled in chunks, each chunk attending
the prefix before it, then ``output - 1`` decode iterations whose KV read grows by a token
each. :func:`simulated_limits` obtains the same figure by running each session alone through
the simulator itself on one unbounded replica (slow; the tests check the two agree).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from saga.emulator.core import ReplicaConfig
from saga.graphs.trace import SessionTrace
from saga.scheduler.sim.loop import Simulator
from saga.scheduler.sim.systems import BASELINES
from saga.scheduler.workloads.demand import new_prefill_tokens, replay_end_s
from saga.scheduler.workloads.model import Workload

UNBOUNDED_TOKENS = 1 << 34


def prefill_s(prompt: int, new: int, config: ReplicaConfig, *, overhead: bool = True) -> float:
    """Seconds of prefilling a call's ``new`` uncached tokens in chunks: each chunk's tokens, the
    KV it attends (the prefix before it) and, with ``overhead``, the iteration's fixed cost."""
    t = config.timing
    f = t.fixed_overhead_s if overhead else 0.0
    new = max(1, min(new, prompt)) if prompt > 0 else 1
    cached = max(0, prompt - new)
    total = 0.0
    done = 0
    while done < new:
        take = min(config.chunked_prefill_size, new - done)
        total += f + t.prefill_s_per_token * take + t.kv_read_s_per_token * (cached + done)
        done += take
    return total


def alone_call_s(prompt: int, new: int, output: int, config: ReplicaConfig) -> float:
    """Seconds a call takes alone on an idle replica of ``config`` (the model's arithmetic)."""
    t = config.timing
    total = prefill_s(prompt, new, config)
    n = max(0, output - 1)
    r = t.kv_read_s_per_token
    total += n * (t.fixed_overhead_s + t.decode_s_per_seq + r * (prompt + 1)) + r * n * (n - 1) / 2
    return total


def physical_limits(
    workload: Workload, config: ReplicaConfig, progress: Callable[[int], object] | None = None
) -> dict[str, float]:
    """Session id -> physical limit in seconds, for every top-level session."""
    out: dict[str, float] = {}
    for s in workload.sessions:
        end = replay_end_s(s, lambda new, c: alone_call_s(c.prompt_tokens, new, c.output_tokens, config))
        out[s.session_id] = max(end, 1e-6)
        if progress is not None:
            progress(1)
    return out


def simulated_limits(
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
