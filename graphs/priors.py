"""Cold-start knowledge: settings of the AEG model and per-tool-type latency priors.

When an agent type or an edge has few observations, predictions lean on, in order:

1. the same edge pooled over all agent types (the ``"*"`` graph of a :class:`GraphSet`);
2. a **per-tool-type prior**: a log-normal from the tool's class, guessed from its name.
   The four classes and their cold-start (p50, p95) come from the SAGA paper authors' code
   (BRIEF.md §2): code execution 180/2400 ms, file operation 45/320 ms, web API 850/4500 ms,
   database query 120/890 ms;
3. **request-level behaviour**: what a scheduler that knows nothing about workflows must assume.
   For tool gaps that is a deliberately wide log-normal (p50 10 s, p95 10 min: from sub-second
   tools to long builds), for a person replying after ``end_turn`` one of p50 2 min, p95 1 h,
   and a continuation probability of 0.5 (no information either way).

These request-level figures are order-of-magnitude assumptions, not fitted to any trace; they
carry little weight (``prior_weight`` pseudo-observations) and are overridden by data.
"""

from __future__ import annotations

from dataclasses import dataclass

from saga.graphs.dist import TIME_SPEC, LogHistogram
from saga.graphs.trace import TOOL_HUMAN

# (p50 s, p95 s) per tool class; see the module docstring for the sources.
TOOL_CLASS_PRIORS: dict[str, tuple[float, float]] = {
    "code": (0.180, 2.400),
    "file": (0.045, 0.320),
    "web": (0.850, 4.500),
    "db": (0.120, 0.890),
    "human": (120.0, 3600.0),
    "request": (10.0, 600.0),
}
# Substrings of a tool name that select its class (first match wins, checked in this order).
_CLASS_KEYWORDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("db", ("sql", "database", "db_", "query")),
    ("web", ("web", "http", "fetch", "browse", "search", "url", "api")),
    ("file", ("file", "read", "write", "edit", "glob", "grep", "ls", "cat", "open")),
    ("code", ("bash", "shell", "exec", "run", "python", "code", "test", "build", "compile")),
)
SUBAGENT_PREFIX = "agent:"  # edge name of a fork into a sub-agent: "agent:<agent type>"


def tool_class(name: str) -> str:
    """The latency class of a tool name (``request`` when nothing matches)."""
    if name == TOOL_HUMAN:
        return "human"
    low = name.lower()
    if low.startswith(SUBAGENT_PREFIX):
        return "request"
    for cls, words in _CLASS_KEYWORDS:
        if any(w in low for w in words):
            return cls
    return "request"


def tool_prior(name: str, mass: float) -> LogHistogram:
    """The cold-start gap distribution of ``name`` as ``mass`` pseudo-observations."""
    p50, p95 = TOOL_CLASS_PRIORS[tool_class(name)]
    return LogHistogram.lognormal(TIME_SPEC, p50, p95, mass)


@dataclass(frozen=True, slots=True)
class AEGSettings:
    """Tunables of graph building and prediction."""

    # Pseudo-observations a parent distribution (pooled graph, then prior) adds to an edge's own
    # counts: with n own observations the edge is n/(n+backoff_weight) its own data. 5 keeps a
    # single odd gap from dominating while 50 observations are ~90% the edge's own.
    backoff_weight: float = 5.0
    # Observations at which a node's confidence reaches 0.5 (confidence = n/(n+half)). The
    # paper's code serves an agent type request-by-request until ~30 sessions; 30 steps of a
    # node is a comparable amount of evidence.
    confidence_half: float = 30.0
    # Position buckets for termination and remaining work: steps 1, 2, 3-4, 5-8, ... (powers
    # of two), the last one open. 10 buckets reach 257+ steps (the p99 session has ~340 calls).
    position_buckets: int = 10
    # Request-level continuation probability (no evidence either way).
    prior_p_continue: float = 0.5

    def bucket(self, steps_done: int) -> int:
        """Position bucket of a session that has completed ``steps_done`` LLM calls."""
        b = max(0, steps_done - 1).bit_length()
        return b if b < self.position_buckets else self.position_buckets - 1
