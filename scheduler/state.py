"""The engine's bookkeeping: replicas, sessions and calls (no policy logic here).

Shared-prefix accounting (:class:`SharedTokens`): capacity is not the sum of the sessions'
contexts. Each item committed to a replica (an in-flight call's prompt + output, or a pinned
session's context) is recorded as the cumulative block hashes of its prompt, *sampled* every
``granularity`` tokens, plus a tail of tokens beyond the last sampled block. A sampled hash
identifies its whole prefix, so two sessions sharing a 20k-token system prompt share the
same leading sampled hashes, and the replica's committed KV is
``distinct sampled hashes x unit + sum of tails``: shared prefixes are counted once. Sampling
bounds memory (10k sessions x 200k tokens -> ~2M entries at 1024 tokens) at the price of
counting up to one unit per item twice.

The replica's cache view (``cached``) is either exact (fed by ``ReplicaCache`` KV events)
or, when the replica sends none, approximate: the blocks of every prompt dispatched there,
in LRU order, bounded by twice its KV capacity (what sglang-router's approximate tree does).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from saga.scheduler.api import Prompt, WorkflowHints
from saga.scheduler.batchcap import CapModel


def sample_hashes(
    block_hashes: Sequence[int], block_size: int, granularity: int
) -> tuple[tuple[int, ...], int]:
    """Every k-th cumulative hash (k = granularity // block_size) and the tokens each stands for."""
    if not block_hashes or block_size <= 0:
        return (), 0
    k = max(1, granularity // block_size)
    return tuple(block_hashes[k - 1 :: k]), k * block_size


class SharedTokens:
    """Committed KV tokens of a replica with shared prefixes counted once."""

    __slots__ = ("_items", "_refs", "_tails", "_unique")

    def __init__(self) -> None:
        self._refs: dict[int, int] = {}
        self._items: dict[str, tuple[tuple[int, ...], int, int]] = {}  # id -> (hashes, unit, tail)
        self._unique = 0
        self._tails = 0

    @property
    def total(self) -> int:
        return self._unique + self._tails

    def __contains__(self, item_id: str) -> bool:
        return item_id in self._items

    def __len__(self) -> int:
        return len(self._items)

    def tokens_of(self, item_id: str) -> int:
        it = self._items.get(item_id)
        return 0 if it is None else len(it[0]) * it[1] + it[2]

    def put(self, item_id: str, hashes: tuple[int, ...], unit: int, total_tokens: int) -> None:
        """Record (or replace) ``item_id`` covering ``total_tokens`` tokens."""
        self.remove(item_id)
        refs = self._refs
        for h in hashes:
            c = refs.get(h, 0)
            if c == 0:
                self._unique += unit
            refs[h] = c + 1
        tail = max(0, total_tokens - len(hashes) * unit)
        self._tails += tail
        self._items[item_id] = (hashes, unit, tail)

    def remove(self, item_id: str) -> None:
        it = self._items.pop(item_id, None)
        if it is None:
            return
        hashes, unit, tail = it
        refs = self._refs
        for h in hashes:
            c = refs[h] - 1
            if c == 0:
                del refs[h]
                self._unique -= unit
            else:
                refs[h] = c
        self._tails -= tail

    def extra_for(self, hashes: tuple[int, ...], unit: int, total_tokens: int) -> int:
        """Tokens that committing a new item would add (its prefix already committed is free)."""
        refs = self._refs
        lo, hi = 0, len(hashes)
        while lo < hi:  # leading sampled hashes already committed (prefix-closed)
            mid = (lo + hi) // 2
            if hashes[mid] in refs:
                lo = mid + 1
            else:
                hi = mid
        return max(0, total_tokens - lo * unit)


@dataclass(slots=True)
class PinState:
    replica_id: str
    until: float
    since: float
    extensions: int = 0
    tokens: int = 0  # context tokens counted in the replica's pinned_tokens
    score: float = 0.0  # release priority computed when pinned (higher: released first)


@dataclass(slots=True)
class ReplicaState:
    """One replica as the engine sees it (implements ``policy.ReplicaView``)."""

    replica_id: str
    kv_total: int
    max_running: int
    page_size: int = 1
    healthy: bool = True
    reported_running: int = 0
    reported_waiting: int = 0
    reported_kv_used: int = 0
    exact_cache: bool = False  # True once a ReplicaCache event arrived
    slot_slack: int = 0
    call_s: float = 6.0
    inflight: dict[str, None] = field(default_factory=dict)
    queue: list[str] = field(default_factory=list)  # call ids held by the engine for it
    committed: SharedTokens = field(default_factory=SharedTokens)
    cached: dict[int, None] = field(default_factory=dict)  # block hashes (ordered: LRU first)
    pinned: dict[str, None] = field(default_factory=dict)  # session ids pinned here
    homed: dict[str, None] = field(default_factory=dict)  # live sessions whose home is here
    pinned_tokens: int = 0
    inflight_tokens: int = 0  # prompt + max_new of the calls in flight (the KV decode reads)
    inflight_urgency: float = 0.0  # sum of the urgency of the calls in flight
    kv_watermark: float = 1.0
    # decode-batch cap (batchcap.py); None: only max_running bounds running calls
    batch_cap: CapModel | None = None
    keeps_sessions: bool = True  # ReplicaAdded.keeps_sessions: pins mean something here

    @property
    def inflight_count(self) -> int:
        return len(self.inflight)

    @property
    def queued_count(self) -> int:
        return len(self.queue)

    @property
    def committed_tokens(self) -> int:
        return self.committed.total

    @property
    def load(self) -> float:
        slots = len(self.inflight) / self.max_running
        kv = self.committed.total / self.kv_total
        return max(slots, kv) + len(self.queue) / self.max_running

    def slot_limit(self, demand: int) -> int:
        """Calls allowed to run here when ``demand`` calls (in flight + held + candidate) want to."""
        hard = self.max_running + self.slot_slack
        cap = self.batch_cap
        if cap is None:
            return hard
        n = len(self.inflight)
        return min(hard, cap.limit(demand, self.inflight_tokens / n if n else 0.0))

    def has_slot(self) -> bool:
        """One more call may start here (the head of the queue, or a new one if it is empty)."""
        n = len(self.inflight)
        if self.batch_cap is None:
            return n < self.max_running + self.slot_slack
        return n < self.slot_limit(n + max(1, len(self.queue)))

    def est_wait_s(self, need_tokens: int = 0) -> float:
        n = len(self.inflight)
        free = self.slot_limit(n + len(self.queue) + 1) - n
        ahead = len(self.queue) + max(0, self.reported_waiting - len(self.queue))
        kv_free = self.kv_watermark * self.kv_total - self.committed.total
        if free > ahead and (kv_free >= need_tokens or not self.inflight):
            return 0.0
        return (ahead + 1) * self.call_s / max(1, min(len(self.inflight), self.max_running))

    def cached_prefix_tokens(self, block_hashes: Sequence[int], block_size: int) -> int:
        if not block_hashes or block_size <= 0:
            return 0
        cached = self.cached
        if block_hashes[0] not in cached:
            return 0
        lo, hi = 1, len(block_hashes)
        while lo < hi:
            mid = (lo + hi) // 2
            if block_hashes[mid] in cached:
                lo = mid + 1
            else:
                hi = mid
        return lo * block_size

    def note_prompt(self, block_hashes: Sequence[int]) -> None:
        """Approximate cache view: the prompt's blocks are now (most recently) cached here."""
        if self.exact_cache:
            return
        cached = self.cached
        for h in block_hashes:
            cached.pop(h, None)
            cached[h] = None
        limit = max(1, 2 * self.kv_total // max(1, self.page_size))
        while len(cached) > limit:
            del cached[next(iter(cached))]


@dataclass(slots=True)
class SessionState:
    session_id: str
    tenant: str
    agent_type: str
    hints: WorkflowHints
    started_at: float
    deadline: float | None = None  # absolute
    ended: bool = False
    home: str | None = None  # replica of its last dispatched call
    # home adopted from another process (hint); its next call's prompt is noted as cached there
    home_adopted: bool = False
    context_tokens: int = 0  # prompt + output of its last call
    context_hashes: tuple[int, ...] = ()
    block_size: int = 0
    steps_done: int = 0
    current_tool: str | None = None
    tool_started_at: float = 0.0
    last_stop: str = ""
    pin: PinState | None = None
    open_on: str | None = None  # replica where the session's engine (SGLang) session is open
    active_call: str | None = None
    parent: str | None = None
    children: set[str] = field(default_factory=set)
    admitted: bool = False
    expected_s: float = 0.0  # expected completion time at start (for slowdown accounting)
    remaining_s: float = 0.0  # expected seconds of work left (refreshed at each call's end)
    remaining_calls: float = 0.0  # expected LLM calls left after the current one (same refresh)
    steals: int = 0


@dataclass(slots=True)
class CallState:
    call_id: str
    session_id: str | None
    tenant: str
    prompt: Prompt
    max_new_tokens: int
    priority: int | None
    submitted_at: float
    replica: str | None = None  # replica it is queued on or dispatched to
    inflight: bool = False
    admitted: bool = False
    first_token_at: float | None = None
    dispatched_at: float | None = None
    attempts: int = 0
    sampled: tuple[int, ...] = ()  # prompt hashes sampled for SharedTokens (computed once)
    unit: int = 0  # tokens each sampled hash stands for
    tight: bool = False  # its tenant is in the tight-deadline class (lanes.py)
    urgency: float = 1.0  # its tenant's deadline urgency (CostModel.urgency_weighting)
