"""Shared machinery of the retention policies: lazy leaf heaps and per-stream online state.

Two families:

- :class:`GlobalHeapPolicy`: one heap of leaf segments ordered by a key that only changes when
  the segment is touched (LRU: last use; oracle: next use). Entries are lazy: a stamp per
  segment invalidates older entries, and an entry is only used if its segment is still a
  resident leaf.
- :class:`StreamPolicy`: leaves are grouped by their *owner* (the stream that touched them
  last); inside a stream they leave tail-first in LRU order (superseded branches before the
  live context). At eviction time every stream with resident leaves gets a score from
  :meth:`StreamPolicy.stream_score` (time-dependent: it may use how long the stream has been
  in its tool gap); the lowest score loses its leaves first. Scores are recomputed lazily:
  a stream keeps being drained while its fresh score is still the lowest.

:class:`StreamTracker` keeps what a serving system knows online about each stream: its last
call (start, end, stop reason), the tool it is in, its step count and context size, its live
path (the segments of its latest prompt) and its sub-agents.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator

import numpy as np
import numpy.typing as npt

from saga.graphs.retention.cache import CacheState
from saga.graphs.retention.workload import Workload
from saga.graphs.trace import STOP_TOOL_USE


class GlobalHeapPolicy:
    """One lazy heap of leaves; subclasses define :meth:`key` (smaller = evicted first)."""

    name = "global-heap"

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, int]] = []
        self._stamp = np.zeros(0, dtype=np.int64)

    def reset(self, wl: Workload, cache: CacheState) -> None:
        self.wl = wl
        self.cache = cache
        self._heap = []
        self._stamp = np.zeros(wl.n_segments, dtype=np.int64)

    def key(self, seg: int) -> float:
        raise NotImplementedError

    def on_request(self, r: int, t: float) -> None:
        raise NotImplementedError

    def on_leaf(self, seg: int) -> None:
        self._stamp[seg] += 1
        heapq.heappush(self._heap, (self.key(seg), seg, int(self._stamp[seg])))

    def victims(self, t: float) -> Iterator[int]:
        cache = self.cache
        stash: list[tuple[float, int, int]] = []
        current: tuple[float, int, int] | None = None
        try:
            while self._heap:
                entry = heapq.heappop(self._heap)
                _, seg, stamp = entry
                if stamp != self._stamp[seg] or not cache.is_leaf(seg):
                    continue
                if seg == cache.pinned:
                    stash.append(entry)
                    continue
                current = entry
                while cache.resident[seg] > 0:
                    yield seg
                current = None
        finally:
            if current is not None and cache.is_leaf(current[1]):
                heapq.heappush(self._heap, current)
            for e in stash:
                heapq.heappush(self._heap, e)


class StreamTracker:
    """Online per-stream state, updated at every request (nothing from the future)."""

    def __init__(self, wl: Workload) -> None:
        self.wl = wl
        n = len(wl.streams)
        self.last_start = np.full(n, -np.inf)
        self.last_end = np.full(n, -np.inf)
        self.last_req = np.full(n, -1, dtype=np.int64)
        self.steps = np.zeros(n, dtype=np.int64)
        self.stop: list[str] = [""] * n
        self.tool: list[str | None] = [None] * n
        self.context_tokens = np.zeros(n, dtype=np.int64)
        self.latest_count = np.zeros(wl.n_segments, dtype=np.int64)  # live paths through a segment
        self._tool_after: list[dict[int, str]] = [
            {t.after_call: t.name for t in s.trace.tools} for s in wl.streams
        ]
        self.children: list[list[int]] = [[] for _ in range(n)]
        for s in wl.streams:
            if s.parent >= 0:
                self.children[s.parent].append(s.index)

    def on_request(self, r: int) -> int:
        wl = self.wl
        si = int(wl.req_stream[r])
        ci = int(wl.req_call[r])
        call = wl.streams[si].trace.calls[ci]
        prev = int(self.last_req[si])
        if prev >= 0 and len(wl.req_path[prev]):
            self.latest_count[wl.req_path[prev]] -= 1
        path = wl.req_path[r]
        if len(path):
            self.latest_count[path] += 1
        t = float(wl.req_time[r])
        self.last_req[si] = r
        self.last_start[si] = t
        self.last_end[si] = t + call.duration_s
        self.steps[si] = ci + 1
        self.stop[si] = call.stop
        self.tool[si] = self._tool_after[si].get(ci)
        self.context_tokens[si] = call.prompt_tokens + call.output_tokens
        return si

    def in_tool_gap(self, si: int, t: float) -> bool:
        return self.stop[si] == STOP_TOOL_USE and t >= self.last_end[si]

    def gap_elapsed(self, si: int, t: float) -> float:
        return max(0.0, t - float(self.last_end[si]))


class StreamPolicy:
    """Leaves grouped by owner stream; the stream with the lowest score is drained first."""

    name = "stream"

    def __init__(self) -> None:
        self._heaps: list[list[tuple[int, int, int]]] = []

    def reset(self, wl: Workload, cache: CacheState) -> None:
        self.wl = wl
        self.cache = cache
        self.tracker = StreamTracker(wl)
        self.owner = np.full(wl.n_segments, -1, dtype=np.int64)
        self.last = np.full(wl.n_segments, -1, dtype=np.int64)
        self._stamp = np.zeros(wl.n_segments, dtype=np.int64)
        self._heaps = [[] for _ in wl.streams]
        self._active: set[int] = set()

    def on_request(self, r: int, t: float) -> None:
        si = self.tracker.on_request(r)
        path = self.wl.req_path[r]
        self.owner[path] = si
        self.last[path] = r

    def on_leaf(self, seg: int) -> None:
        o = int(self.owner[seg])
        self._stamp[seg] += 1
        heapq.heappush(self._heaps[o], (int(self.last[seg]), seg, int(self._stamp[seg])))
        self._active.add(o)

    def begin_round(self, t: float, streams: list[int]) -> None:
        """Called once per eviction round before scoring (e.g. to fix normalisers)."""

    def stream_score(self, si: int, top: int, t: float) -> float:
        """Lower = evicted first. ``top`` is the stream's LRU leaf."""
        raise NotImplementedError

    def on_drain(self, si: int, top: int, t: float) -> None:
        """``top`` of stream ``si`` is about to lose pages (for policies that learn from it)."""

    def _top(self, si: int, stash: list[tuple[int, tuple[int, int, int]]]) -> int:
        heap = self._heaps[si]
        cache = self.cache
        while heap:
            _, seg, stamp = heap[0]
            if stamp != self._stamp[seg] or self.owner[seg] != si or not cache.is_leaf(seg):
                heapq.heappop(heap)
                continue
            if seg == cache.pinned:
                stash.append((si, heapq.heappop(heap)))
                continue
            return seg
        return -1

    def victims(self, t: float) -> Iterator[int]:
        stash: list[tuple[int, tuple[int, int, int]]] = []
        try:
            progress = True
            while progress:  # evictions may expose leaves of streams not scored yet: rescan
                progress = False
                tops: list[tuple[int, int]] = []
                for si in list(self._active):
                    top = self._top(si, stash)
                    if top < 0:
                        self._active.discard(si)
                    else:
                        tops.append((si, top))
                self.begin_round(t, [si for si, _ in tops])
                order = [(self.stream_score(si, top, t), si) for si, top in tops]
                heapq.heapify(order)
                while order:
                    _, si = heapq.heappop(order)
                    top = self._top(si, stash)
                    if top < 0:
                        continue
                    score = self.stream_score(si, top, t)
                    if order and score > order[0][0]:
                        heapq.heappush(order, (score, si))
                        continue
                    self.on_drain(si, top, t)
                    while self.cache.resident[top] > 0:
                        progress = True
                        yield top
                    heapq.heappush(order, (score, si))
        finally:
            for si, e in stash:
                heapq.heappush(self._heaps[si], e)


def pages_of(wl: Workload, r: int) -> int:
    p: npt.NDArray[np.int64] = wl.req_path[r]
    return int(wl.seg_len[p].sum()) if len(p) else 0
