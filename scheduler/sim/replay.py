"""Closed-loop replay of one session (and its sub-agents) inside the simulator.

The rules are those of ``saga.scheduler.workloads.demand.replay_end_s`` (so simulated
completion times compare with the physical limit): call 0 is sent when the session
arrives; after call ``i`` completes, call ``i+1`` is sent after the recorded gap
``calls[i+1].start_s - calls[i].end_s`` (a negative gap, i.e. recorded overlap, sends it at
once); when sub-agents were spawned after call ``i`` each starts its recorded offset after
call ``i`` completes, and the parent resumes after the last of them plus the recorded gap
between that sub-agent's end and the parent's next call. The session ends when its last
call (and last sub-agent) completes.

:class:`SessionRun` only computes *what happens next* as a step (``("call", (at, plan))``,
``("fork", [(at, sub_trace), ...])``, ``("wait", None)``, ``("end", None)``); the simulator
loop carries it out. It also accumulates the session's outcome.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from saga.graphs.trace import STOP_END_TURN, TOOL_HUMAN, TOOL_UNKNOWN, SessionTrace, SubAgent
from saga.scheduler.report.model import SessionOutcome, slo_met_for
from saga.scheduler.workloads.demand import new_prefill_tokens

Step = tuple[str, Any]


@dataclass(slots=True, eq=False)
class CallPlan:
    run: SessionRun
    index: int
    call_id: str = ""
    attempt: int = 0
    submitted_at: float = 0.0
    ttft_s: float | None = None
    replica: str | None = None
    deferred: bool = False


class SessionRun:
    def __init__(
        self, trace: SessionTrace, start: float, parent: SessionRun | None, deadline_s: float | None
    ) -> None:
        self.trace = trace
        self.start_s = start
        self.parent = parent
        self.deadline_s = deadline_s
        self.end_s: float | None = None
        self.failed = False
        self.fork_index = -1  # call index whose response spawned the current sub-agents
        self.subs_after: dict[int, list[SubAgent]] = {}
        for sub in trace.subagents:
            self.subs_after.setdefault(sub.after_call, []).append(sub)
        inherited: set[int] = set()
        if parent is not None:
            k = parent.fork_index
            for c in parent.trace.calls[: k + 1]:
                inherited.update(c.block_hashes)
        self.news = new_prefill_tokens(trace, inherited)
        self.current_tool_open = ""
        self._pending_subs = 0
        self._resume_at = start
        self._join_next: int | None = None
        self._posts: dict[str, float] = {}
        # outcome accumulators
        self.calls = 0
        self.ttfts: list[float] = []
        self.prompt_tokens = 0
        self.cached_tokens = 0
        self.output_tokens = 0
        self.recomputed_tokens = 0
        self.steals = 0
        self.rejected = 0
        self.deferred = 0

    def begin(self, now: float) -> Step:
        calls = self.trace.calls
        if -1 in self.subs_after:
            return self._fork(-1, now, 0.0, calls[0].start_s, 0)
        return ("call", (now, CallPlan(self, 0)))

    def after_call(self, i: int, now: float) -> Step:
        calls = self.trace.calls
        c = calls[i]
        nxt = calls[i + 1] if i + 1 < len(calls) else None
        if i in self.subs_after:
            return self._fork(
                i, now, c.end_s, None if nxt is None else nxt.start_s, None if nxt is None else i + 1
            )
        if nxt is None:
            return ("end", None)
        gap = nxt.start_s - c.end_s
        return ("call", (now + max(0.0, gap), CallPlan(self, i + 1)))

    def _fork(
        self, k: int, now: float, orig_at: float, next_orig: float | None, next_index: int | None
    ) -> Step:
        self.fork_index = k
        items = []
        for sub in self.subs_after[k]:
            offset = max(0.0, sub.start_s - orig_at)
            post = 0.0 if next_orig is None else max(0.0, next_orig - (sub.start_s + sub.session.duration_s))
            self._posts[sub.session.session_id] = post
            items.append((now + offset, sub.session))
        self._pending_subs = len(items)
        self._resume_at = now
        self._join_next = next_index
        return ("fork", items)

    def join(self, child: SessionRun, now: float) -> Step:
        self._pending_subs -= 1
        self._resume_at = max(self._resume_at, now + self._posts.get(child.trace.session_id, 0.0))
        if self._pending_subs > 0:
            return ("wait", None)
        if self._join_next is None:
            return ("end", None)
        return ("call", (max(now, self._resume_at), CallPlan(self, self._join_next)))

    def tool_before(self, index: int) -> str:
        """Name of the gap before call ``index`` (the recorded tool, or human/tool)."""
        for t in self.trace.tools:
            if t.after_call == index - 1:
                return t.name
        if index - 1 in self.subs_after:
            return "agent"
        return TOOL_HUMAN if self.trace.calls[index - 1].stop == STOP_END_TURN else TOOL_UNKNOWN

    def record_call(self, plan: CallPlan, prompt: int, cached: int, output: int) -> None:
        self.calls += 1
        if plan.ttft_s is not None:
            self.ttfts.append(max(0.0, plan.ttft_s))
        self.prompt_tokens += prompt
        self.cached_tokens += min(cached, prompt)
        self.output_tokens += output
        warm = max(0, prompt - self.news[plan.index])  # cached with an infinite cache
        self.recomputed_tokens += max(0, min(prompt, warm) - cached)

    def outcome(self, end_all: float) -> SessionOutcome:
        completed = self.end_s is not None and not self.failed
        end = self.end_s if self.end_s is not None else max(end_all, self.start_s)
        return SessionOutcome(
            session_id=self.trace.session_id,
            tenant=self.trace.tenant,
            agent_type=self.trace.agent_type,
            start_s=self.start_s,
            end_s=end,
            calls=self.calls,
            ttft_s=tuple(self.ttfts),
            prompt_tokens=self.prompt_tokens,
            cached_tokens=self.cached_tokens,
            output_tokens=self.output_tokens,
            recomputed_tokens=min(self.recomputed_tokens, self.prompt_tokens),
            deadline_s=self.deadline_s,
            slo_met=slo_met_for(end - self.start_s, self.deadline_s, completed),
            steals=self.steals,
            rejected=self.rejected,
            deferred=self.deferred,
            is_subagent=self.parent is not None,
            completed=completed,
        )
