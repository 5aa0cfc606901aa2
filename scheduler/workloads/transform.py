"""Session transforms used by the generators: gap compression, shared prefix, copies, placement.

- :class:`GapPolicy` / :func:`compress_gaps`: shorten tool gaps and human think time. Real
  Claude Code sessions have human gaps of minutes to hours (p50 210 s, p99 11 h): replaying
  them as recorded makes a simulated hour mostly idle sessions. A gap after an ``end_turn``
  response (or a tool named ``human``) is *human*; every other gap is a *tool* gap. The new
  gap is ``min(gap x gap_scale, cap)`` with the cap of its kind (None: no cap). LLM call
  durations are kept; the calls after a gap move earlier by the time removed; tools and
  sub-agents move with the call that spawned them, and a parent still waits for its
  sub-agents (the gap after a spawn is never shorter than the compressed sub-agents).
- :func:`apply_shared_prefix`: production Claude Code sessions all start with the same
  system prompt and tool definitions (``shared_prefix_tokens`` = ``tool_tokens +
  system_tokens`` in the traces), but the traces' block ids are session-local. The first
  ``shared_prefix_tokens // block_size`` hashes of every call are replaced by one chain per
  agent type (:func:`shared_chain`), so sessions of a type share them across the cluster.
- :func:`copy_session`: a session drawn more than once gets a distinct id (``#k`` suffix)
  and its own block-hash namespace (hashes XOR a per-copy salt; the shared chain is kept).
- :func:`place`: set the absolute ``start_s`` and the tenant of a session tree.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, replace

import numpy as np

from saga.graphs.trace import STOP_END_TURN, TOOL_HUMAN, SessionTrace, ToolCall
from saga.scheduler.workloads.model import WorkloadError

_MASK63 = (1 << 63) - 1


def stable_hash(text: str) -> int:
    """A 63-bit hash of ``text`` that is the same in every process (unlike ``hash``)."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big") & _MASK63


_CHAINS: dict[tuple[str, int], tuple[int, ...]] = {}


def shared_chain(agent_type: str, n_blocks: int) -> tuple[int, ...]:
    """The cumulative block hashes of agent type ``agent_type``'s shared prefix (first ``n_blocks``)."""
    key = (agent_type, n_blocks)
    chain = _CHAINS.get(key)
    if chain is None:
        chain = tuple(stable_hash(f"saga-shared-prefix:{agent_type}:{j}") for j in range(n_blocks))
        if len(_CHAINS) < 1024:
            _CHAINS[key] = chain
    return chain


@dataclass(frozen=True, slots=True)
class GapPolicy:
    """How to compress a session's gaps (see the module docstring). Defaults change nothing."""

    gap_scale: float = 1.0  # multiply every gap (tool and human) by this, > 0
    max_tool_gap_s: float | None = None  # cap on one tool gap, seconds (None: no cap)
    max_human_gap_s: float | None = None  # cap on one human think time, seconds (None: no cap)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.gap_scale) and self.gap_scale > 0):
            raise WorkloadError(f"gap_scale must be > 0, got {self.gap_scale}")
        for name in ("max_tool_gap_s", "max_human_gap_s"):
            v = getattr(self, name)
            if v is not None and not v >= 0:
                raise WorkloadError(f"{name} must be >= 0 or None, got {v}")

    @property
    def identity(self) -> bool:
        return self.gap_scale == 1.0 and self.max_tool_gap_s is None and self.max_human_gap_s is None

    def compress(self, gap: float, human: bool) -> float:
        g = max(0.0, gap) * self.gap_scale
        cap = self.max_human_gap_s if human else self.max_tool_gap_s
        return g if cap is None else min(g, cap)


def _human_after(s: SessionTrace, i: int) -> bool:
    if s.calls[i].stop == STOP_END_TURN:
        return True
    return any(t.after_call == i and t.name == TOOL_HUMAN for t in s.tools)


def compress_gaps(s: SessionTrace, policy: GapPolicy) -> SessionTrace:
    """``s`` with its gaps compressed by ``policy`` (recursively in sub-agents)."""
    if policy.identity:
        return s
    subs_new = [replace(sub, session=compress_gaps(sub.session, policy)) for sub in s.subagents]
    subs_after: dict[int, list[int]] = {}
    for j, sub in enumerate(s.subagents):
        subs_after.setdefault(sub.after_call, []).append(j)
    calls = s.calls

    def spawn_wait(k: int, end_k: float, next_start: float | None) -> float:
        """Time the parent must leave after ``end_k`` for the sub-agents spawned after call k."""
        wait = 0.0
        for j in subs_after.get(k, ()):
            sub = s.subagents[j]
            off = policy.compress(sub.start_s - end_k, False)
            post = 0.0 if next_start is None else next_start - (sub.start_s + sub.session.duration_s)
            wait = max(wait, off + subs_new[j].session.duration_s + policy.compress(post, False))
        return wait

    new_start = [0.0] * len(calls)
    first = calls[0].start_s
    new_start[0] = max(policy.compress(first, False), spawn_wait(-1, 0.0, first)) if first > 0 else 0.0
    for i in range(len(calls) - 1):
        c, nxt = calls[i], calls[i + 1]
        gap = nxt.start_s - c.end_s
        new_end = new_start[i] + c.duration_s
        if gap < 0 and i not in subs_after:  # overlapping calls keep their start offset
            new_start[i + 1] = new_start[i] + (nxt.start_s - c.start_s)
            continue
        g = policy.compress(gap, _human_after(s, i))
        if i in subs_after:
            g = max(g, spawn_wait(i, c.end_s, nxt.start_s))
        new_start[i + 1] = new_end + g
    new_calls = tuple(replace(c, start_s=new_start[i]) for i, c in enumerate(calls))

    def new_end_of(k: int) -> float:
        return 0.0 if k < 0 else new_calls[k].end_s

    def orig_end_of(k: int) -> float:
        return 0.0 if k < 0 else calls[k].end_s

    tools = []
    for t in s.tools:
        human = t.name == TOOL_HUMAN or (t.after_call >= 0 and calls[t.after_call].stop == STOP_END_TURN)
        start = new_end_of(t.after_call) + policy.compress(t.start_s - orig_end_of(t.after_call), human)
        end = start + policy.compress(t.duration_s, human)
        if t.after_call + 1 < len(calls):
            limit = new_calls[t.after_call + 1].start_s
            start, end = min(start, limit), min(end, limit)
        tools.append(replace(t, start_s=start, end_s=max(start, end)))
    subs = tuple(
        replace(
            sub_new,
            start_s=new_end_of(sub.after_call)
            + policy.compress(sub.start_s - orig_end_of(sub.after_call), False),
        )
        for sub, sub_new in zip(s.subagents, subs_new, strict=True)
    )
    return replace(s, calls=new_calls, tools=tuple(tools), subagents=subs)


def apply_shared_prefix(s: SessionTrace) -> SessionTrace:
    """Replace the leading shared-prefix hashes of every call by the agent type's chain."""
    subs = tuple(replace(sub, session=apply_shared_prefix(sub.session)) for sub in s.subagents)
    bs = s.block_size
    if bs <= 0 or s.shared_prefix_tokens < bs:
        return replace(s, subagents=subs)
    n = s.shared_prefix_tokens // bs
    chain = shared_chain(s.agent_type, n)
    calls = tuple(
        replace(c, block_hashes=chain[: min(n, len(c.block_hashes))] + c.block_hashes[n:])
        if c.block_hashes
        else c
        for c in s.calls
    )
    return replace(s, calls=calls, subagents=subs)


def copy_session(s: SessionTrace, copy: int) -> SessionTrace:
    """Copy number ``copy`` (>= 1) of ``s``: ids suffixed ``#copy``, own hash namespace."""
    if copy < 1:
        raise WorkloadError(f"copy number must be >= 1, got {copy}")
    salt = np.int64(stable_hash(f"saga-copy:{copy}"))
    seen: dict[int, int] = {}  # one int object per distinct new hash: the calls' tuples share them

    def remap(t: SessionTrace) -> SessionTrace:
        bs = t.block_size
        keep = t.shared_prefix_tokens // bs if bs > 0 else 0
        calls = []
        for c in t.calls:
            if len(c.block_hashes) > keep:
                tail = np.asarray(c.block_hashes[keep:], dtype=np.int64) ^ salt
                new = tuple(seen.setdefault(x, x) for x in tail.tolist())
                c = replace(c, block_hashes=c.block_hashes[:keep] + new)
            calls.append(c)
        return replace(
            t,
            session_id=f"{t.session_id}#{copy}",
            parent_id=None if t.parent_id is None else f"{t.parent_id}#{copy}",
            calls=tuple(calls),
            subagents=tuple(replace(sub, session=remap(sub.session)) for sub in t.subagents),
        )

    return remap(s)


def place(s: SessionTrace, start_s: float, tenant: str) -> SessionTrace:
    """``s`` arriving at ``start_s`` for ``tenant`` (sub-agents get the tenant too)."""

    def walk(t: SessionTrace) -> SessionTrace:
        return replace(
            t, tenant=tenant, subagents=tuple(replace(x, session=walk(x.session)) for x in t.subagents)
        )

    return replace(walk(s), start_s=start_s)


def human_tools(s: SessionTrace) -> list[ToolCall]:
    """The human gaps of ``s`` (for tests and statistics)."""
    return [t for t in s.tools if t.name == TOOL_HUMAN]


__all__ = [
    "GapPolicy",
    "apply_shared_prefix",
    "compress_gaps",
    "copy_session",
    "human_tools",
    "place",
    "shared_chain",
    "stable_hash",
]
