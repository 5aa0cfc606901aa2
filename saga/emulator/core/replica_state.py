"""The replica model's per-request and per-session state, and its public counters.

Split from :mod:`saga.emulator.core.replica` (the model itself); nothing here has behaviour
beyond holding state. A request moves ``WAITING -> PREFILL -> DECODE -> DONE``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from saga.emulator.core.radix import RadixNode
from saga.emulator.core.request import Request

WAITING, PREFILL, DECODE, DONE = 0, 1, 2, 3


class ReqState:
    __slots__ = (
        "abort_requested",
        "arrival",
        "cached",
        "done_prefill",
        "finish_iter",
        "first_token_time",
        "full_pages",
        "node",
        "req",
        "reserved",
        "seq",
        "start_iter",
        "state",
    )

    def __init__(self, req: Request, seq: int, arrival: float) -> None:
        self.req = req
        self.seq = seq
        self.arrival = arrival
        self.state = WAITING
        self.cached = 0
        self.node: RadixNode | None = None
        self.done_prefill = 0
        self.reserved = 0
        self.full_pages = 0
        self.start_iter = 0
        self.finish_iter = 0
        self.first_token_time: float | None = None
        self.abort_requested = False


@dataclass(slots=True)
class Segment:
    decode: bool
    start: float
    end: float
    chunks: list[tuple[ReqState, int]] = field(default_factory=list)
    n_iters: int = 0
    c: float = 0.0  # first decode iteration's duration
    a: float = 0.0  # half the growth of the iteration duration per iteration


@dataclass(slots=True)
class SessionState:
    session_id: str
    opened_at: float
    node: RadixNode | None = None


@dataclass(frozen=True, slots=True)
class Counters:
    """Cumulative counters since the replica started (tokens unless named otherwise)."""

    requests: int
    """Requests finished (any reason)."""
    aborted_requests: int
    prompt_tokens: int
    """Prompt tokens of prefilled requests."""
    cached_tokens: int
    """Of those, served from the prefix cache."""
    completion_tokens: int
    evicted_tokens: int
