"""The one session-trace model every trace format is ingested into.

A :class:`SessionTrace` is one agent task: an ordered chain of LLM calls, the tool calls
between them, and the sub-agent sessions it spawned. All times inside a session are seconds
relative to the session's own start (``start_s`` places the session on an absolute timeline
when the source has one). Token counts are integers >= 0.

Prefix structure: ``LLMCall.block_hashes`` are *cumulative* prefix-block hashes of the whole
prompt (block ``i`` identifies tokens ``[0, (i+1)·block_size)``), so two prompts share a
cached prefix exactly as long as their leading hashes agree. Hashes are integers, already
namespaced by the ingester so that equal ids mean equal content across the whole workload
(e.g. the Claude Code traces' session-local ids are mixed with the trace id).

The model is frozen (hashable, safe to share between the simulator, the graphs and the
benchmarks) and validated on construction by :func:`validate_session`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

TRACE_MODEL_VERSION = 1

# Stop reasons of an LLM call, as the traces record them.
STOP_TOOL_USE = "tool_use"  # the response asked for a tool: a tool gap follows
STOP_END_TURN = "end_turn"  # the response ended the agent's turn: a human gap (or the end) follows
STOP_NONE = ""  # unknown

# Tool names used when the source does not name the tool.
TOOL_UNKNOWN = "tool"
TOOL_HUMAN = "human"  # the gap after an ``end_turn`` response (a person reading and replying)


class TraceError(ValueError):
    """Invalid trace data. ``where`` names the file, line and field when known."""

    def __init__(
        self, message: str, *, file: str | None = None, line: int | None = None, field_name: str | None = None
    ) -> None:
        self.file = file
        self.line = line
        self.field_name = field_name
        parts = [
            p
            for p in (
                file,
                f"line {line}" if line is not None else None,
                f"field {field_name!r}" if field_name else None,
            )
            if p
        ]
        self.where = ", ".join(parts)
        super().__init__(f"{self.where}: {message}" if self.where else message)


@dataclass(frozen=True, slots=True)
class LLMCall:
    """One LLM request of a session."""

    start_s: float  # when the call was sent, seconds since the session start
    duration_s: float  # how long the original call took end to end (0 when unknown)
    prompt_tokens: int
    output_tokens: int
    cached_tokens: int | None = None  # as reported by the original serving system, if known
    block_hashes: tuple[int, ...] = ()  # cumulative prefix-block hashes of the prompt
    stop: str = STOP_NONE
    model: str = ""
    ttft_s: float | None = None

    @property
    def end_s(self) -> float:
        return self.start_s + self.duration_s


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One tool execution (or human gap) between two LLM calls."""

    name: str
    start_s: float
    end_s: float
    after_call: int  # index (in ``SessionTrace.calls``) of the call whose response requested it
    status: str = "ok"

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


@dataclass(frozen=True, slots=True)
class SubAgent:
    """A sub-agent session spawned by its parent; the parent waits for it (fork/join)."""

    after_call: int  # parent call index whose response spawned it
    start_s: float  # seconds since the *parent's* start
    session: SessionTrace


@dataclass(frozen=True, slots=True)
class SessionTrace:
    session_id: str
    agent_type: str
    calls: tuple[LLMCall, ...]
    tools: tuple[ToolCall, ...] = ()
    subagents: tuple[SubAgent, ...] = ()
    tenant: str = "default"
    start_s: float = 0.0  # absolute start on the workload's timeline (0 when the source has none)
    block_size: int = 0  # tokens per block hash; 0 when the source has no hashes
    parent_id: str | None = None
    # Tokens at the start of every prompt that are shared by all sessions of this agent type
    # (system prompt + tool definitions), when the source states it.
    shared_prefix_tokens: int = 0
    source: str = ""  # where it was read from (file:line), for error messages and reports
    attributes: dict[str, str] = field(default_factory=dict, compare=False, hash=False)

    def walk(self) -> Iterator[SessionTrace]:
        """This session and every sub-agent session below it, depth first."""
        yield self
        for sub in self.subagents:
            yield from sub.session.walk()

    @property
    def duration_s(self) -> float:
        ends = [c.end_s for c in self.calls] + [t.end_s for t in self.tools]
        ends += [s.start_s + s.session.duration_s for s in self.subagents]
        return max(ends, default=0.0)

    @property
    def total_calls(self) -> int:
        return sum(len(s.calls) for s in self.walk())


def validate_session(s: SessionTrace) -> None:
    """Raise :class:`TraceError` when ``s`` breaks the model's invariants.

    Invariants: at least one call; call start times never go backwards; token counts are
    non-negative; cached <= prompt; tools and sub-agents reference existing calls and have
    ``end >= start``; every block hash list is no longer than the prompt allows.
    """
    where = s.source or s.session_id
    if not s.session_id:
        raise TraceError("empty session id", file=where, field_name="session_id")
    if not s.calls:
        raise TraceError("session has no LLM calls", file=where, field_name="calls")
    prev = float("-inf")
    for i, c in enumerate(s.calls):
        f = f"calls[{i}]"
        if c.start_s < prev:
            raise TraceError(
                f"time goes backwards ({c.start_s} < {prev})", file=where, field_name=f"{f}.start_s"
            )
        prev = c.start_s
        for name in ("prompt_tokens", "output_tokens"):
            if getattr(c, name) < 0:
                raise TraceError("negative token count", file=where, field_name=f"{f}.{name}")
        if c.duration_s < 0:
            raise TraceError("negative duration", file=where, field_name=f"{f}.duration_s")
        if c.cached_tokens is not None and not 0 <= c.cached_tokens <= c.prompt_tokens:
            raise TraceError("cached tokens outside [0, prompt]", file=where, field_name=f"{f}.cached_tokens")
        if s.block_size and len(c.block_hashes) * s.block_size > c.prompt_tokens + s.block_size:
            raise TraceError(
                "more prefix blocks than the prompt holds", file=where, field_name=f"{f}.block_hashes"
            )
    for i, t in enumerate(s.tools):
        if t.end_s < t.start_s:
            raise TraceError("tool ends before it starts", file=where, field_name=f"tools[{i}].end_s")
        if not -1 <= t.after_call < len(s.calls):
            raise TraceError("tool refers to a missing call", file=where, field_name=f"tools[{i}].after_call")
    for i, sub in enumerate(s.subagents):
        if not -1 <= sub.after_call < len(s.calls):
            raise TraceError(
                "sub-agent refers to a missing call", file=where, field_name=f"subagents[{i}].after_call"
            )
        validate_session(sub.session)
