"""Fixed TTL pin across tool calls (Continuum-style), LRU otherwise.

When a call ends asking for a tool (``stop == "tool_use"``), the stream's pages are pinned for
``ttl_s`` seconds after the call ends: other pages go first (LRU among them). When only pinned
pages are left, the least recently used pinned stream goes (a pin cannot make the cache
overflow). The pin is cleared when the next call arrives (it touches the pages anyway).

Tunable: ``ttl_s`` (default 60 s: about the p90 of the Claude Code tool gaps, 71 s; the brief's
Continuum-style TTL is ``min(p95_tool, 300 s)`` before memory pressure shortens it).
"""

from __future__ import annotations

from saga.graphs.retention.policies.base import StreamPolicy


class TTLPolicy(StreamPolicy):
    def __init__(self, ttl_s: float = 60.0) -> None:
        super().__init__()
        if ttl_s < 0:
            raise ValueError("ttl_s must be >= 0")
        self.ttl_s = ttl_s
        self.name = f"ttl-{ttl_s:g}s"

    def stream_score(self, si: int, top: int, t: float) -> float:
        tr = self.tracker
        pinned = tr.in_tool_gap(si, t) and t - float(tr.last_end[si]) < self.ttl_s
        running = t < float(tr.last_end[si])  # the call itself is still running
        base = float(self.wl.n_requests) if (pinned or running) else 0.0
        return base + float(self.last[top])
