"""A replay workload: sessions placed on one timeline and their prompts compressed into segments.

**Timeline.** Every top-level :class:`~saga.graphs.trace.SessionTrace` gets an absolute start:

- ``arrivals="poisson"``: sessions (in a seeded random order) start as a Poisson process whose
  rate makes ``sessions_alive`` of them alive on average (Little's law: rate = alive / mean
  session duration). Used for traces without absolute times (the Claude Code traces).
- ``arrivals="trace"``: the sessions' own ``start_s`` (the Mooncake traces).
- ``arrivals="auto"`` (default): ``trace`` when any session has a non-zero ``start_s``.

Each session then replays its own call times, tool gaps and sub-agents (a sub-agent starts at
``parent start + SubAgent.start_s``). Every (sub-)agent is a *stream*: one chain of LLM calls.
A request is one LLM call; it happens at its start time and touches all pages of its prompt.

**Pages and segments.** A page is one prefix block (``block_hashes[i]``): a node of the radix
trie of all prompts (keyed by parent node and hash, so a page names its whole prefix). Pages
are compressed into *segments*: maximal trie chains with no branching and where no request
ends inside. Every page of a segment is touched by exactly the same requests, so it has the
same last use and the same next use; a policy ranks segments, and the cache evicts a segment's
pages from its tail, exactly as a page-level tail-first cache would. A request is the path of
segments from the root to its last page.

**Working set W.** A segment counts from its first use until the end of the last stream that
uses it (stream end = start of its last call); W is the peak over time of the pages counted.
It is the capacity at which a cache that drops the pages of finished streams never evicts a
live stream's page, and capacities are given as fractions of it.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from saga.graphs.trace import SessionTrace

IntArray = npt.NDArray[np.int64]
ARRIVALS = ("auto", "poisson", "trace")


class WorkloadError(ValueError):
    """The sessions cannot be replayed (no prefix hashes, mixed block sizes, bad settings)."""


@dataclass(frozen=True, slots=True)
class ReplaySettings:
    """How sessions are placed on the timeline."""

    # "poisson", "trace" or "auto" (see the module docstring).
    arrivals: str = "auto"
    # Mean number of sessions alive at once under Poisson arrivals (the orientation: ~40
    # concurrent agent sessions per cache, a busy replica).
    sessions_alive: float = 40.0
    # Seed of the session order and inter-arrival draws: the same seed gives the same timeline.
    seed: int = 0
    # Number of folds for held-out predictions: a stream's predictor is trained on the sessions
    # of the other folds (fold = hash of the top-level session id). 2 keeps half the data.
    folds: int = 2


@dataclass(slots=True)
class Stream:
    """One (sub-)agent's chain of calls on the absolute timeline."""

    index: int
    trace: SessionTrace
    top: int  # index of the top-level session
    parent: int  # stream index of the parent (-1 for a top-level session)
    start_s: float  # absolute start
    fold: int
    requests: list[int] = field(default_factory=list)  # request indices, in call order

    @property
    def end_s(self) -> float:
        """Absolute time of the stream's last call (when its pages stop being needed)."""
        return self.start_s + self.trace.calls[-1].start_s


@dataclass(slots=True)
class Workload:
    """Requests in time order, each as a path of segments, plus what policies may need."""

    block_size: int  # tokens per page
    streams: list[Stream]
    sessions: list[SessionTrace]  # the top-level sessions, in input order
    # per request (index = order of replay)
    req_time: npt.NDArray[np.float64]
    req_stream: IntArray
    req_call: IntArray  # call index inside the stream's trace
    req_path: list[IntArray]  # segment ids, root first
    req_next: list[IntArray]  # per path segment: index of the next request touching it (n = never)
    # per segment
    seg_len: IntArray  # pages
    seg_parent: IntArray  # -1 for a root segment
    working_set_pages: int  # W
    settings: ReplaySettings

    @property
    def n_requests(self) -> int:
        return len(self.req_stream)

    @property
    def n_segments(self) -> int:
        return len(self.seg_len)

    def total_pages(self) -> int:
        """Pages requested over the whole replay (hits and misses)."""
        return int(sum(int(self.seg_len[p].sum()) for p in self.req_path))

    def compulsory_pages(self) -> int:
        """Pages every policy recomputes: the first use of each page."""
        return int(self.seg_len.sum())


def fold_of(session_id: str, folds: int) -> int:
    """Stable fold of a session id (hash-based, so held-out splits do not depend on order)."""
    digest = hashlib.blake2b(session_id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % max(1, folds)


def _start_times(sessions: list[SessionTrace], settings: ReplaySettings) -> list[float]:
    mode = settings.arrivals
    if mode not in ARRIVALS:
        raise WorkloadError(f"arrivals must be one of {ARRIVALS}, got {mode!r}")
    if mode == "auto":
        mode = "trace" if any(s.start_s != 0.0 for s in sessions) else "poisson"
    if mode == "trace":
        return [s.start_s for s in sessions]
    if settings.sessions_alive <= 0:
        raise WorkloadError("sessions_alive must be > 0")
    rng = np.random.default_rng(settings.seed)
    durations = [max(s.calls[-1].start_s, 1.0) for s in sessions]
    rate = settings.sessions_alive / (sum(durations) / len(durations))
    order = rng.permutation(len(sessions))
    gaps = rng.exponential(1.0 / rate, size=len(sessions))
    starts = [0.0] * len(sessions)
    t = 0.0
    for k, i in enumerate(order):
        starts[int(i)] = t
        t += float(gaps[k])
    return starts


def build_workload(sessions: list[SessionTrace], settings: ReplaySettings | None = None) -> Workload:
    """Place ``sessions`` on a timeline and compress their prompts into segments."""
    settings = settings or ReplaySettings()
    if not sessions:
        raise WorkloadError("no sessions to replay")
    sizes = {s.block_size for top in sessions for s in top.walk() if any(c.block_hashes for c in s.calls)}
    if not sizes or 0 in sizes:
        raise WorkloadError("the sessions carry no prefix-block hashes: nothing to cache")
    if len(sizes) > 1:
        raise WorkloadError(f"sessions mix block sizes {sorted(sizes)}: replay one trace family at a time")
    starts = _start_times(sessions, settings)

    streams: list[Stream] = []
    raw: list[tuple[float, int, int]] = []  # (time, stream, call)

    def add(trace: SessionTrace, top: int, parent: int, start: float, fold: int) -> None:
        st = Stream(len(streams), trace, top, parent, start, fold)
        streams.append(st)
        raw.extend((start + c.start_s, st.index, i) for i, c in enumerate(trace.calls))
        for sub in trace.subagents:
            add(sub.session, top, st.index, start + sub.start_s, fold)

    for i, s in enumerate(sessions):
        add(s, i, -1, starts[i], fold_of(s.session_id, settings.folds))
    raw.sort(key=lambda x: (x[0], streams[x[1]].top, x[1], x[2]))
    n = len(raw)
    req_time = np.array([x[0] for x in raw], dtype=np.float64)
    req_stream = np.array([x[1] for x in raw], dtype=np.int64)
    req_call = np.array([x[2] for x in raw], dtype=np.int64)
    for r, (_, si, _) in enumerate(raw):
        streams[si].requests.append(r)

    # 1. Radix trie of pages; a request is its end node (-1: no pages).
    node_parent: list[int] = []
    children: dict[tuple[int, int], int] = {}
    req_end = np.full(n, -1, dtype=np.int64)
    prev_hashes: dict[int, npt.NDArray[np.int64]] = {}
    prev_nodes: dict[int, list[int]] = {}
    for r in range(n):
        si = int(req_stream[r])
        hashes = streams[si].trace.calls[int(req_call[r])].block_hashes
        if not hashes:
            continue
        h = np.asarray(hashes, dtype=np.int64)
        ph = prev_hashes.get(si)
        lcp = 0
        if ph is not None:
            m = min(len(ph), len(h))
            neq = np.flatnonzero(ph[:m] != h[:m])
            lcp = int(neq[0]) if len(neq) else m
        nodes = prev_nodes[si][:lcp] if lcp else []
        parent = nodes[-1] if nodes else -1
        for hv in hashes[lcp:]:
            key = (parent, hv)
            node = children.get(key)
            if node is None:
                node = len(node_parent)
                children[key] = node
                node_parent.append(parent)
            nodes.append(node)
            parent = node
        prev_hashes[si] = h
        prev_nodes[si] = nodes
        req_end[r] = parent
    del children, prev_nodes, prev_hashes

    # 2. Segments: a node starts a new segment unless its parent has exactly one child and no
    # request ends at the parent.
    npar = np.array(node_parent, dtype=np.int64)
    n_nodes = len(npar)
    nchild = np.bincount(npar[npar >= 0], minlength=n_nodes)
    is_end = np.zeros(n_nodes, dtype=bool)
    is_end[req_end[req_end >= 0]] = True
    head = np.ones(n_nodes, dtype=bool)
    has_p = npar >= 0
    head[has_p] = (nchild[npar[has_p]] != 1) | is_end[npar[has_p]]
    seg_of = np.empty(n_nodes, dtype=np.int64)
    seg_ids = np.cumsum(head) - 1
    heads = np.flatnonzero(head)
    seg_of[heads] = seg_ids[heads]
    par_list = npar.tolist()
    so = seg_of.tolist()
    head_list = head.tolist()
    for v in range(n_nodes):  # parents precede children: one pass propagates segment ids
        if not head_list[v]:
            so[v] = so[par_list[v]]
    seg_of = np.array(so, dtype=np.int64)
    n_seg = len(heads)
    seg_len = np.bincount(seg_of, minlength=n_seg).astype(np.int64)
    seg_parent = np.full(n_seg, -1, dtype=np.int64)
    hp = npar[heads]
    seg_parent[hp >= 0] = seg_of[hp[hp >= 0]]

    # 3. Per request: segment path (root first) and, per segment, the next request touching it.
    sp = seg_parent.tolist()
    req_path: list[IntArray] = []
    empty = np.zeros(0, dtype=np.int64)
    for r in range(n):
        e = int(req_end[r])
        if e < 0:
            req_path.append(empty)
            continue
        path: list[int] = []
        g = so[e]
        while g >= 0:
            path.append(g)
            g = sp[g]
        path.reverse()
        req_path.append(np.array(path, dtype=np.int64))
    next_use = np.full(n_seg, n, dtype=np.int64)
    req_next: list[IntArray] = [empty] * n
    for r in range(n - 1, -1, -1):
        p = req_path[r]
        if len(p):
            req_next[r] = next_use[p].copy()
            next_use[p] = r

    w = _working_set(streams, req_time, req_stream, req_path, seg_len, n_seg)
    return Workload(
        block_size=sizes.pop(),
        streams=streams,
        sessions=list(sessions),
        req_time=req_time,
        req_stream=req_stream,
        req_call=req_call,
        req_path=req_path,
        req_next=req_next,
        seg_len=seg_len,
        seg_parent=seg_parent,
        working_set_pages=w,
        settings=settings,
    )


def _working_set(
    streams: list[Stream],
    req_time: npt.NDArray[np.float64],
    req_stream: IntArray,
    req_path: list[IntArray],
    seg_len: IntArray,
    n_seg: int,
) -> int:
    first = np.full(n_seg, math.inf)
    last_end = np.full(n_seg, -math.inf)
    ends = np.array([s.end_s for s in streams], dtype=np.float64)
    for r, p in enumerate(req_path):
        if len(p):
            t = req_time[r]
            first[p] = np.minimum(first[p], t)
            last_end[p] = np.maximum(last_end[p], ends[int(req_stream[r])])
    times = np.concatenate([first, last_end])
    deltas = np.concatenate([seg_len, -seg_len])
    # at equal times, additions come before removals (a page is alive at its last instant)
    order = np.lexsort((-deltas, times))
    return int(np.cumsum(deltas[order]).max(initial=0))
