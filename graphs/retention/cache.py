"""The page-level KV cache replay: radix prefix semantics, leaf-only (tail-first) eviction.

For each request of a :class:`~saga.graphs.retention.workload.Workload`, in time order:

1. **Hit.** The request reuses the longest cached prefix of its pages: the cached set is always
   closed under prefixes (only leaves are evicted), so the hit is the run of fully resident
   segments from the root plus the resident head of the first partial one. Every page after
   the first missing one is recomputed: ``recomputed += (pages − hit) · block_size``, also
   counted per held-out fold of the request's session (``recomputed_by_fold``).
2. **Touch.** The policy sees the request (``on_request``).
3. **Insert.** The missing pages are cached. When the cache is full, the policy names victim
   leaf segments (``victims``) and the cache evicts their pages from the tail until there is
   room. The request's own deepest resident segment is *pinned* (never a victim). A prompt
   larger than the whole cache keeps only its first ``capacity`` pages.
4. The deepest resident segment of the request becomes (or stays) a leaf: ``on_leaf``.

Whenever an eviction empties a segment and its parent is left with no resident child, the
parent becomes a leaf (``on_leaf``): a policy keeps its own candidate heaps from these calls.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from saga.graphs.retention.workload import Workload


class CacheState:
    """What a policy may read: residency and leaf status of every segment."""

    def __init__(self, wl: Workload, capacity_pages: int) -> None:
        self.wl = wl
        self.capacity = int(capacity_pages)
        self.resident = np.zeros(wl.n_segments, dtype=np.int64)
        # resident children per segment; index n_segments counts the root's (unused)
        self.nres_children = np.zeros(wl.n_segments + 1, dtype=np.int64)
        self.used = 0
        self.pinned = -1  # the segment that must not be evicted now (-1: none)

    def is_leaf(self, seg: int) -> bool:
        return bool(self.resident[seg] > 0 and self.nres_children[seg] == 0)


class Policy(Protocol):
    """A retention policy: ranks leaf segments for eviction."""

    name: str

    def reset(self, wl: Workload, cache: CacheState) -> None:
        """Start a replay (forget all state)."""
        ...

    def on_request(self, r: int, t: float) -> None:
        """Request ``r`` arrives at ``t`` (its path is being touched)."""
        ...

    def on_leaf(self, seg: int) -> None:
        """``seg`` is (again) a resident leaf: a new eviction candidate or a touched one."""
        ...

    def victims(self, t: float) -> Iterator[int]:
        """Leaf segments to evict from, best victim first, never ``cache.pinned``.

        The cache evicts pages from the tail of each yielded segment; it may yield the same
        segment again while it still has resident pages. Closed when there is room.
        """
        ...


@dataclass(frozen=True, slots=True)
class ReplayResult:
    policy: str
    capacity_pages: int
    recomputed_pages: int
    requested_pages: int
    evicted_pages: int
    block_size: int
    # recomputed pages of the requests of each held-out fold (Workload.settings.folds entries)
    recomputed_by_fold: tuple[int, ...] = ()

    @property
    def recomputed_tokens(self) -> int:
        return self.recomputed_pages * self.block_size

    @property
    def hit_rate(self) -> float:
        return 1.0 - self.recomputed_pages / self.requested_pages if self.requested_pages else 0.0


def replay(wl: Workload, capacity_pages: int, policy: Policy) -> ReplayResult:
    """Replay the whole workload through a cache of ``capacity_pages`` under ``policy``."""
    if capacity_pages < 1:
        raise ValueError("capacity must be at least one page")
    cache = CacheState(wl, capacity_pages)
    policy.reset(wl, cache)
    resident = cache.resident
    nres = cache.nres_children
    seg_len = wl.seg_len
    seg_parent = wl.seg_parent
    root = wl.n_segments
    cap = cache.capacity
    recomputed = requested = evicted = 0
    times = wl.req_time.tolist()
    stream_fold = [s.fold for s in wl.streams]
    req_fold = [stream_fold[si] for si in wl.req_stream.tolist()]
    by_fold = [0] * max(1, wl.settings.folds)
    for r in range(wl.n_requests):
        path = wl.req_path[r]
        if not len(path):
            continue
        t = times[r]
        lens = seg_len[path]
        res = resident[path]
        full = res == lens
        total = int(lens.sum())
        if full.all():
            k = len(path)
            hit = total
        else:
            k = int(np.argmin(full))
            hit = int(lens[:k].sum()) + int(res[k])
        requested += total
        recomputed += total - hit
        by_fold[req_fold[r]] += total - hit
        policy.on_request(r, t)
        if k == len(path):
            if nres[path[-1]] == 0:
                policy.on_leaf(int(path[-1]))
            continue
        # the deepest resident segment of the path is the only leaf on it: pin it
        cache.pinned = int(path[k]) if res[k] > 0 else (int(path[k - 1]) if k > 0 else -1)
        missing = total - hit
        need = missing - (cap - cache.used)
        if need > 0:
            gen = policy.victims(t)
            for seg in gen:
                if seg == cache.pinned or resident[seg] <= 0 or nres[seg] != 0:
                    raise RuntimeError(f"policy {policy.name} chose a non-evictable segment {seg}")
                take = min(int(resident[seg]), need)
                resident[seg] -= take
                cache.used -= take
                evicted += take
                need -= take
                if resident[seg] == 0:
                    p = int(seg_parent[seg])
                    p_idx = p if p >= 0 else root
                    nres[p_idx] -= 1
                    if p >= 0 and nres[p] == 0 and resident[p] > 0:
                        policy.on_leaf(p)
                if need <= 0:
                    break
            if isinstance(gen, Generator):
                gen.close()
        room = cap - cache.used
        _insert(cache, path, lens, res, k, room, seg_parent, root)
        cache.pinned = -1
        deepest = _deepest_resident(resident, path, k)
        if deepest >= 0:
            policy.on_leaf(deepest)
    return ReplayResult(
        policy=policy.name,
        capacity_pages=cap,
        recomputed_pages=recomputed,
        requested_pages=requested,
        evicted_pages=evicted,
        block_size=wl.block_size,
        recomputed_by_fold=tuple(by_fold),
    )


def _insert(
    cache: CacheState,
    path: npt.NDArray[np.int64],
    lens: npt.NDArray[np.int64],
    res: npt.NDArray[np.int64],
    k: int,
    room: int,
    seg_parent: npt.NDArray[np.int64],
    root: int,
) -> None:
    """Make ``path[k:]`` resident, as far as ``room`` pages allow (root side first)."""
    resident = cache.resident
    for j in range(k, len(path)):
        if room <= 0:
            break
        s = int(path[j])
        add = min(int(lens[j] - res[j]), room)
        if res[j] == 0:
            p = int(seg_parent[s])
            cache.nres_children[p if p >= 0 else root] += 1
        resident[s] += add
        cache.used += add
        room -= add
        if resident[s] < lens[j]:
            break


def _deepest_resident(resident: npt.NDArray[np.int64], path: npt.NDArray[np.int64], k: int) -> int:
    j = len(path) - 1
    while j >= 0 and resident[path[j]] == 0:
        j -= 1
    return int(path[j]) if j >= 0 else -1
