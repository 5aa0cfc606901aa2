"""Parametric SWE-bench-like and WebArena-like agent sessions.

Every draw comes from a ``numpy`` generator seeded by ``(seed, session index)``, so session
``i`` of a workload is the same whatever the number of sessions drawn. Lengths are
log-normal (``median``, ``sigma`` of the log), clipped to ``[min, max]``; tool latencies are
log-normal per tool type from BRIEF.md §2 (``sigma = ln(p95/p50)/1.645``).

**SWE-bench-like** (:class:`SweBenchParams`, agent type ``swe_bench``): a coding agent
(SWE-agent / OpenHands CodeAct style) in a loop of *think + act* steps on one repository.
The prompt is append-only: ``[system prompt + tool docs + demonstration (shared by every
session)] [issue text] [out_1 obs_1] [out_2 obs_2] ...``; every step adds the model's output
and a tool observation (file view, search result, test output). When the context passes
``max_context_tokens`` the history is truncated to its last half (the prefix after the issue
is then new content: a context reset). Tools: ``code_execution`` (run tests / scripts,
p50/p95 180/2400 ms) and ``file_op`` (view / edit / search, 45/320 ms).
Shapes: SWE-agent (Yang et al., NeurIPS 2024, arXiv 2405.15793) runs tens of steps per
instance under a cost budget; a public analysis of 2,920 SWE-agent trajectories on SWE-Bench
Pro (nilenso, "SWE-Bench Pro cost/token/time analysis") reports median trajectory lengths of
53-78 steps by model; Raju et al. (arXiv 2602.16069) find successful mini-SWE-agent runs on
SWE-bench Verified mostly stay under 20k tokens while failing ones keep growing ("token
snowball", also SWE-Effi, arXiv 2509.09853). Defaults: median 40 steps (sigma 0.6, 5-150),
observations median 600 tokens (sigma 1.0), outputs median 250 tokens, system block 5,000
tokens, issue median 800 tokens.

**WebArena-like** (:class:`WebArenaParams`, agent type ``webarena``): a browser agent on the
WebArena sites (Zhou et al., ICLR 2024, arXiv 2307.13854): each step's prompt is the
few-shot system prompt (shared), then the *current* accessibility-tree observation, URL,
objective and previous action (WebArena's prompt template); observations are replaced, not
accumulated, so only the shared system block is reused between steps. The paper caps an
episode at 30 actions. Tool: ``web_api`` (click / type / navigate and page load,
850/4500 ms). Defaults: median 12 steps (sigma 0.6, 3-30), observation median 2,500 tokens
(sigma 0.6, up to 12k), output median 150 tokens, system block 2,000 tokens.

Call durations in the traces are nominal (``nominal_ttft_s + output / nominal_tokens_per_s``);
the simulator recomputes them, they only lay out the recorded timeline.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from saga.graphs.trace import STOP_END_TURN, STOP_TOOL_USE, LLMCall, SessionTrace, ToolCall
from saga.scheduler.workloads.model import WorkloadError
from saga.scheduler.workloads.transform import shared_chain, stable_hash

_MASK63 = (1 << 63) - 1
_K1 = 0x9E3779B97F4A7C15
_K2 = 0xBF58476D1CE4E5B9


@dataclass(frozen=True, slots=True)
class LogNormal:
    """A log-normal length or latency: ``median``, ``sigma`` (of the log), clipped to [lo, hi]."""

    median: float
    sigma: float
    lo: float = 0.0
    hi: float = math.inf

    def __post_init__(self) -> None:
        if not (self.median > 0 and self.sigma >= 0 and self.lo <= self.hi):
            raise WorkloadError(f"bad LogNormal({self.median}, {self.sigma}, {self.lo}, {self.hi})")

    @staticmethod
    def from_p50_p95(p50: float, p95: float) -> LogNormal:
        return LogNormal(p50, math.log(p95 / p50) / 1.645)

    def draw(self, rng: np.random.Generator) -> float:
        v = self.median * math.exp(self.sigma * float(rng.standard_normal()))
        return min(self.hi, max(self.lo, v))

    def draw_int(self, rng: np.random.Generator) -> int:
        return round(self.draw(rng))


# BRIEF.md §2 cold-start tool latencies, seconds.
TOOL_LATENCY: dict[str, LogNormal] = {
    "code_execution": LogNormal.from_p50_p95(0.180, 2.400),
    "file_op": LogNormal.from_p50_p95(0.045, 0.320),
    "web_api": LogNormal.from_p50_p95(0.850, 4.500),
    "db_query": LogNormal.from_p50_p95(0.120, 0.890),
}


@dataclass(frozen=True, slots=True)
class SweBenchParams:
    steps: LogNormal = LogNormal(40, 0.6, 5, 150)  # LLM calls per task
    system_tokens: int = 5000  # shared system prompt + tool docs + demonstration
    issue_tokens: LogNormal = LogNormal(800, 0.8, 100, 8000)
    obs_tokens: LogNormal = LogNormal(600, 1.0, 20, 8000)  # tool observation per step
    output_tokens: LogNormal = LogNormal(250, 0.6, 20, 2000)  # thought + action per step
    tool_mix: dict[str, float] = field(default_factory=lambda: {"code_execution": 0.55, "file_op": 0.45})
    max_context_tokens: int = 128_000  # history truncated to its last half past this
    block_size: int = 64  # tokens per prefix-block hash (the Claude Code traces' size)
    nominal_ttft_s: float = 0.5
    nominal_tokens_per_s: float = 30.0
    agent_type: str = "swe_bench"


@dataclass(frozen=True, slots=True)
class WebArenaParams:
    steps: LogNormal = LogNormal(12, 0.6, 3, 30)
    system_tokens: int = 2000  # few-shot system prompt, shared
    intent_tokens: LogNormal = LogNormal(60, 0.5, 10, 400)  # objective + URL + previous action
    obs_tokens: LogNormal = LogNormal(2500, 0.6, 200, 12_000)  # accessibility tree, replaced per step
    output_tokens: LogNormal = LogNormal(150, 0.5, 10, 1000)
    tool_mix: dict[str, float] = field(default_factory=lambda: {"web_api": 1.0})
    block_size: int = 64
    nominal_ttft_s: float = 0.5
    nominal_tokens_per_s: float = 30.0
    agent_type: str = "webarena"


def _chain(base: int, start: int, stop: int) -> tuple[int, ...]:
    """Cumulative block hashes ``start..stop-1`` of a content stream identified by ``base``.

    ``((base * K1) ^ (j * K2 + 1)) mod 2^63`` in wrapping uint64 arithmetic (vectorised).
    """
    if stop <= start:
        return ()
    j = np.arange(start, stop, dtype=np.uint64)
    head = np.uint64((base * _K1) & 0xFFFFFFFFFFFFFFFF)
    with np.errstate(over="ignore"):
        h = (head ^ (j * np.uint64(_K2) + np.uint64(1))) & np.uint64(_MASK63)
    return tuple(h.tolist())


class _Stream:
    """One session's content stream, grown as its prompt grows: each call's hashes are a prefix
    of one tuple, so the calls share their int objects (the values are :func:`_chain`'s; a
    session holding 40 calls of ~750 blocks keeps ~30k ints instead of one per block per call)."""

    def __init__(self) -> None:
        self.key: tuple[int, int] | None = None
        self.hashes: tuple[int, ...] = ()

    def upto(self, base: int, start: int, stop: int) -> tuple[int, ...]:
        """``_chain(base, start, stop)``, sharing the int objects of earlier calls."""
        if self.key != (base, start):
            self.key, self.hashes = (base, start), ()
        have = start + len(self.hashes)
        if stop > have:
            self.hashes += _chain(base, have, stop)
        return self.hashes[: max(0, stop - start)]


def _tools(mix: dict[str, float]) -> tuple[list[str], np.ndarray]:
    if not mix or any(w < 0 for w in mix.values()) or sum(mix.values()) <= 0:
        raise WorkloadError(f"tool_mix needs non-negative weights with a positive sum, got {mix}")
    unknown = set(mix) - set(TOOL_LATENCY)
    if unknown:
        raise WorkloadError(f"tool_mix names unknown tools {sorted(unknown)}; known: {sorted(TOOL_LATENCY)}")
    names = sorted(mix)
    w = np.array([mix[n] for n in names], dtype=float)
    return names, w / w.sum()


def _session_rng(seed: int, index: int, kind: str) -> np.random.Generator:
    return np.random.default_rng([seed, index, stable_hash(kind) & 0xFFFFFFFF])


def _build(
    sid: str,
    agent_type: str,
    prompts: list[tuple[int, tuple[int, ...]]],
    outputs: list[int],
    tools: list[tuple[str, float]],
    shared: int,
    block_size: int,
    ttft: float,
    tps: float,
) -> SessionTrace:
    calls: list[LLMCall] = []
    tcs: list[ToolCall] = []
    t = 0.0
    n = len(prompts)
    for i, ((prompt, hashes), out) in enumerate(zip(prompts, outputs, strict=True)):
        dur = ttft + out / tps
        last = i == n - 1
        calls.append(
            LLMCall(
                start_s=t,
                duration_s=dur,
                prompt_tokens=prompt,
                output_tokens=out,
                block_hashes=hashes,
                stop=STOP_END_TURN if last else STOP_TOOL_USE,
                ttft_s=ttft,
            )
        )
        t += dur
        if not last:
            name, lat = tools[i]
            tcs.append(ToolCall(name=name, start_s=t, end_s=t + lat, after_call=i))
            t += lat
    return SessionTrace(
        session_id=sid,
        agent_type=agent_type,
        calls=tuple(calls),
        tools=tuple(tcs),
        block_size=block_size,
        shared_prefix_tokens=shared,
        source=f"synthetic:{agent_type}",
    )


def swe_bench_session(seed: int, index: int, p: SweBenchParams = SweBenchParams()) -> SessionTrace:
    """Session ``index`` of the SWE-bench-like generator with ``seed``."""
    rng = _session_rng(seed, index, "swe_bench")
    names, probs = _tools(p.tool_mix)
    sid = f"swe-{seed}-{index}"
    bs = p.block_size
    n = max(1, p.steps.draw_int(rng))
    head = p.system_tokens + p.issue_tokens.draw_int(rng)
    shared_blocks = p.system_tokens // bs
    epoch = 0
    base = stable_hash(f"{sid}:{epoch}")
    stream = _Stream()
    history = 0
    prompts, outputs, tools = [], [], []
    for _ in range(n):
        prompt = head + history
        if prompt > p.max_context_tokens:  # context reset: keep the last half of the history
            history //= 2
            prompt = head + history
            epoch += 1
            base = stable_hash(f"{sid}:{epoch}")
        nb = prompt // bs
        hashes = shared_chain(p.agent_type, min(shared_blocks, nb)) + stream.upto(base, shared_blocks, nb)
        prompts.append((prompt, hashes))
        out = p.output_tokens.draw_int(rng)
        outputs.append(out)
        tool = names[int(rng.choice(len(names), p=probs))]
        tools.append((tool, TOOL_LATENCY[tool].draw(rng)))
        history += out + p.obs_tokens.draw_int(rng)
    return _build(
        sid,
        p.agent_type,
        prompts,
        outputs,
        tools,
        p.system_tokens,
        bs,
        p.nominal_ttft_s,
        p.nominal_tokens_per_s,
    )


def webarena_session(seed: int, index: int, p: WebArenaParams = WebArenaParams()) -> SessionTrace:
    """Session ``index`` of the WebArena-like generator with ``seed``."""
    rng = _session_rng(seed, index, "webarena")
    names, probs = _tools(p.tool_mix)
    sid = f"web-{seed}-{index}"
    bs = p.block_size
    n = max(1, p.steps.draw_int(rng))
    shared_blocks = p.system_tokens // bs
    prompts, outputs, tools = [], [], []
    for i in range(n):
        prompt = p.system_tokens + p.obs_tokens.draw_int(rng) + p.intent_tokens.draw_int(rng)
        nb = prompt // bs
        base = stable_hash(f"{sid}:{i}")  # the observation replaces the last one: new content
        hashes = shared_chain(p.agent_type, min(shared_blocks, nb)) + _chain(base, shared_blocks, nb)
        prompts.append((prompt, hashes))
        outputs.append(p.output_tokens.draw_int(rng))
        tool = names[int(rng.choice(len(names), p=probs))]
        tools.append((tool, TOOL_LATENCY[tool].draw(rng)))
    return _build(
        sid,
        p.agent_type,
        prompts,
        outputs,
        tools,
        p.system_tokens,
        bs,
        p.nominal_ttft_s,
        p.nominal_tokens_per_s,
    )
