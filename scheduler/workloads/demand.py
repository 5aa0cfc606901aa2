"""What a session costs a replica, its physical limit, and load calibration.

Iteration-time model (:class:`IterationCostModel`), the simplest model that separates the
costs that matter for agents: a forward pass ("iteration") costs a fixed ``overhead_s``
plus ``prefill_s_per_token`` per prompt token it prefills plus ``decode_s_per_token`` per
sequence it decodes. The simulator can pass the emulator's timing parameters straight in
(plain floats: this module does not import the emulator).

Uncached prompt tokens with an **infinite cache** (:func:`new_prefill_tokens`): a call's
prompt is cached up to the longest leading run of its cumulative block hashes seen earlier
in the session (its parent's blocks included for a sub-agent), and the agent type's shared
prefix (``SessionTrace.shared_prefix_tokens``: system prompt + tool definitions, warm on
every replica in steady state) is always cached. Without block hashes the prompt is assumed
to extend the previous call's prompt plus output (agents append to their context).

Replay semantics (:func:`replay_end_s`), shared by the physical limit and by the simulator
(it should replay the same way): call 0 starts at the session start; after call ``i``
completes, call ``i+1`` starts after the recorded gap ``calls[i+1].start_s - calls[i].end_s``
(tool or human time; overlapping recorded calls keep their recorded start offset). When
sub-agents were spawned after call ``i``, the parent waits for the last of them: each starts
its recorded offset after call ``i`` ends, runs its own replay, and the parent resumes after
the recorded gap between that sub-agent's end and the parent's next call. A session
completes when its last call (or last sub-agent) completes.

Physical limit (:func:`physical_limit_s`): the session replayed alone on an idle replica
with an infinite cache: each call takes ``prefill + (output - 1) decode iterations`` at
batch size one. No scheduler can beat it; the report divides completion times by it.

Demand (:func:`session_demand_s`): replica-seconds the session consumes under batching:
``new_tokens x prefill_s_per_token + output x decode_s_per_token + overhead_s x (prefill
chunks + output / decode_batch)`` summed over every call of the session and its
sub-agents: the overhead of a decode iteration is shared by the ``decode_batch`` sequences
decoding together. :func:`calibrate_rate` sets the session arrival rate so that
``rate x mean demand = load x replicas``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from saga.graphs.trace import LLMCall, SessionTrace
from saga.scheduler.workloads.model import WorkloadError

DemandFn = Callable[[SessionTrace], float]


@dataclass(frozen=True, slots=True)
class IterationCostModel:
    """Forward-pass cost of one replica. Defaults: order of magnitude of a 70B model on 4 GPUs.

    Override them with the emulator's timing parameters; the defaults only exist so that
    workloads can be calibrated without an emulator.
    """

    # Fixed cost of one forward pass (kernel launches, scheduling, sampling), seconds. 20 ms:
    # a decode step of a 70B model at small batch on 4 A100s is 20-30 ms.
    overhead_s: float = 0.020
    # Seconds per prefilled prompt token. 1e-4 s = 10k tokens/s of prefill per replica.
    prefill_s_per_token: float = 1.0e-4
    # Marginal seconds per decoding sequence per iteration. 0.3 ms: decode is memory-bound,
    # so each extra sequence in the batch adds little.
    decode_s_per_token: float = 3.0e-4
    # Prompt tokens per prefill chunk (chunked prefill), tokens: SGLang's default order.
    chunk_tokens: int = 8192
    # Typical number of sequences sharing a decode iteration at the target load; the fixed
    # overhead of a decode step is divided among them in the demand. 16: a busy replica.
    decode_batch: float = 16.0

    def __post_init__(self) -> None:
        for name in ("overhead_s", "prefill_s_per_token", "decode_s_per_token"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise WorkloadError(f"IterationCostModel.{name} must be >= 0, got {v}")
        if self.chunk_tokens < 1:
            raise WorkloadError(f"IterationCostModel.chunk_tokens must be >= 1, got {self.chunk_tokens}")
        if not self.decode_batch >= 1:
            raise WorkloadError(f"IterationCostModel.decode_batch must be >= 1, got {self.decode_batch}")
        if self.overhead_s + self.prefill_s_per_token + self.decode_s_per_token <= 0:
            raise WorkloadError("IterationCostModel: every cost is 0")

    def prefill_s(self, new_tokens: int) -> float:
        """Time to prefill ``new_tokens`` alone (at least one iteration: the first token)."""
        chunks = max(1, math.ceil(new_tokens / self.chunk_tokens))
        return chunks * self.overhead_s + new_tokens * self.prefill_s_per_token

    def call_alone_s(self, new_tokens: int, output_tokens: int) -> float:
        """Latency of a call alone on an idle replica (batch size one)."""
        steps = max(0, output_tokens - 1)
        return self.prefill_s(new_tokens) + steps * (self.overhead_s + self.decode_s_per_token)

    def call_demand_s(self, new_tokens: int, output_tokens: int) -> float:
        """Replica-seconds a call consumes when decode iterations are shared."""
        chunks = max(1, math.ceil(new_tokens / self.chunk_tokens))
        return (
            new_tokens * self.prefill_s_per_token
            + output_tokens * self.decode_s_per_token
            + self.overhead_s * (chunks + output_tokens / self.decode_batch)
        )


def _matched_blocks(hashes: Sequence[int], seen: set[int], warm: int) -> int:
    n = 0
    for j, h in enumerate(hashes):
        if j < warm or h in seen:
            n += 1
        else:
            break
    return n


def new_prefill_tokens(session: SessionTrace, inherited: Iterable[int] = ()) -> list[int]:
    """Uncached prompt tokens of each call of ``session`` (not its sub-agents), infinite cache.

    ``inherited``: block hashes cached before the session started (a sub-agent inherits its
    parent's). See the module docstring for the rule.
    """
    out: list[int] = []
    bs = session.block_size
    seen = set(inherited)
    shared = session.shared_prefix_tokens
    prev: LLMCall | None = None
    for c in session.calls:
        if bs > 0 and c.block_hashes:
            matched = _matched_blocks(c.block_hashes, seen, shared // bs)
            reuse = min(c.prompt_tokens, matched * bs)
            seen.update(c.block_hashes)
        elif prev is None:
            reuse = min(c.prompt_tokens, shared)
        else:
            reuse = min(c.prompt_tokens, max(shared, prev.prompt_tokens + prev.output_tokens))
        out.append(c.prompt_tokens - reuse)
        prev = c
    return out


def _blocks_until(session: SessionTrace, call_index: int) -> set[int]:
    seen: set[int] = set()
    for c in session.calls[: call_index + 1]:
        seen.update(c.block_hashes)
    return seen


def replay_end_s(
    session: SessionTrace,
    call_s: Callable[[int, LLMCall], float],
    *,
    inherited: Iterable[int] = (),
) -> float:
    """Completion time (from the session start) of a replay where call ``i`` takes ``call_s(new, call)``.

    ``call_s`` gets the call's uncached prompt tokens (infinite cache) and the call. The
    replay semantics are in the module docstring.
    """
    news = new_prefill_tokens(session, inherited)
    inherited_set = set(inherited)
    subs_after: dict[int, list[int]] = {}
    for j, sub in enumerate(session.subagents):
        subs_after.setdefault(sub.after_call, []).append(j)
    calls = session.calls

    def run_subs(k: int, at: float, orig_at: float, next_orig: float | None) -> tuple[float, float]:
        """Sub-agents spawned after call k (ending at ``at``): (latest end, parent resume time)."""
        latest_end, resume = at, at
        parent_blocks = inherited_set | (_blocks_until(session, k) if k >= 0 else set())
        for j in subs_after.get(k, ()):
            sub = session.subagents[j]
            offset = max(0.0, sub.start_s - orig_at)
            end = at + offset + replay_end_s(sub.session, call_s, inherited=parent_blocks)
            latest_end = max(latest_end, end)
            post = 0.0 if next_orig is None else max(0.0, next_orig - (sub.start_s + sub.session.duration_s))
            resume = max(resume, end + post)
        return latest_end, resume

    t = 0.0
    end = 0.0
    if -1 in subs_after:
        sub_end, t = run_subs(-1, 0.0, 0.0, calls[0].start_s)
        end = max(end, sub_end)
    for i, c in enumerate(calls):
        c_end = t + call_s(news[i], c)
        end = max(end, c_end)
        nxt = calls[i + 1] if i + 1 < len(calls) else None
        if i in subs_after:
            sub_end, resume = run_subs(i, c_end, c.end_s, None if nxt is None else nxt.start_s)
            end = max(end, sub_end)
            t = resume
            continue
        if nxt is not None:
            gap = nxt.start_s - c.end_s
            t = c_end + gap if gap >= 0 else t + (nxt.start_s - c.start_s)
    return end


def physical_limit_s(session: SessionTrace, model: IterationCostModel) -> float:
    """The session's completion time alone on an idle replica with an infinite cache."""
    return replay_end_s(session, lambda new, c: model.call_alone_s(new, c.output_tokens))


def session_demand_s(session: SessionTrace, model: IterationCostModel) -> float:
    """Replica-seconds the session (sub-agents included) needs under batching."""
    total = 0.0

    def visit(s: SessionTrace, inherited: set[int]) -> None:
        nonlocal total
        news = new_prefill_tokens(s, inherited)
        total += sum(model.call_demand_s(n, c.output_tokens) for n, c in zip(news, s.calls, strict=True))
        for sub in s.subagents:
            visit(
                sub.session, inherited | (_blocks_until(s, sub.after_call) if sub.after_call >= 0 else set())
            )

    visit(session, set())
    return total


def demand_fn(model: IterationCostModel) -> DemandFn:
    """The default per-session demand function for :func:`calibrate_rate`."""
    return lambda s: session_demand_s(s, model)


def calibrate_rate(pool: Sequence[SessionTrace], replicas: int, load: float, demand: DemandFn) -> float:
    """Session arrival rate (sessions/s) at which the offered load is ``load`` x capacity.

    Capacity is ``replicas`` replica-seconds per second; a session needs ``demand(s)``
    replica-seconds; sessions are drawn uniformly from ``pool``, so the offered load is
    ``rate x mean(demand) / replicas``.
    """
    if replicas < 1:
        raise WorkloadError(f"replicas must be >= 1, got {replicas}")
    if not (math.isfinite(load) and load > 0):
        raise WorkloadError(f"load must be > 0, got {load}")
    if not pool:
        raise WorkloadError("cannot calibrate the load on an empty session pool")
    mean = sum(demand(s) for s in pool) / len(pool)
    if not mean > 0:
        raise WorkloadError("sessions in the pool have zero demand: cannot calibrate the load")
    return load * replicas / mean


def offered_load(
    sessions: Sequence[SessionTrace], replicas: int, demand: DemandFn, horizon_s: float
) -> float:
    """Demand of the sessions arriving in ``[0, horizon_s)`` over the capacity in that window."""
    if replicas < 1 or not horizon_s > 0:
        raise WorkloadError(f"need replicas >= 1 and horizon_s > 0, got {replicas}, {horizon_s}")
    total = sum(demand(s) for s in sessions if 0 <= s.start_s < horizon_s)
    return total / (replicas * horizon_s)
