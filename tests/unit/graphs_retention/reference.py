"""A brute-force page-level replay (slow, obviously correct) to check the segment-based one.

Pages are trie nodes named by their whole prefix (a tuple of hashes). Only leaves (cached pages
with no cached child) are evicted, never a page of the current request; LRU takes the least
recently used leaf, the oracle the leaf used again farthest in the future.
"""

from __future__ import annotations

from saga.graphs.retention.workload import Workload

Page = tuple[int, ...]


def reference_replay(wl: Workload, capacity: int, policy: str) -> int:
    """Recomputed pages under ``policy`` ("lru" or "oracle")."""
    reqs: list[list[Page]] = []
    for r in range(wl.n_requests):
        st = wl.streams[int(wl.req_stream[r])]
        h = st.trace.calls[int(wl.req_call[r])].block_hashes
        reqs.append([tuple(h[: i + 1]) for i in range(len(h))])
    uses: dict[Page, list[int]] = {}
    for r, pages in enumerate(reqs):
        for p in pages:
            uses.setdefault(p, []).append(r)
    cached: set[Page] = set()
    last: dict[Page, int] = {}
    recomputed = 0
    for r, pages in enumerate(reqs):
        hit = 0
        for p in pages:
            if p not in cached:
                break
            hit += 1
        recomputed += len(pages) - hit
        for p in pages:
            last[p] = r
        own = set(pages)
        for p in pages[hit:]:
            while len(cached) >= capacity:
                leaves = [q for q in cached if q not in own and not any(c[:-1] == q for c in cached)]
                if not leaves:
                    break
                if policy == "lru":
                    victim = min(leaves, key=lambda q: last[q])
                else:
                    victim = max(leaves, key=lambda q: min((u for u in uses[q] if u > r), default=len(reqs)))
                cached.discard(victim)
            if len(cached) >= capacity:
                break
            cached.add(p)
    return recomputed
