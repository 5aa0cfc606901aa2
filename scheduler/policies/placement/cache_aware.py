"""sglang-router's ``cache_aware`` policy, with its default thresholds.

Per replica the router keeps an *approximate* radix tree of what it routed there (it never
sees evictions): here an LRU-ordered set of the prompts' cumulative block hashes, bounded by
``max_tree_tokens`` per replica (sglang-router's ``max_tree_size`` 2^26 characters at ~4
characters per token; the router trims its trees every 60 s, we trim on insert). Load is the
router's own count of requests in flight per replica. Then, per request:

1. imbalanced if ``max_load - min_load > balance_abs_threshold`` (64) and
   ``max_load > balance_rel_threshold x min_load`` (1.5): shortest queue (min load);
2. else the replica with the longest prefix match if ``matched / prompt > cache_threshold``
   (0.3, the gateway's default);
3. else the replica with the smallest tree.

The chosen replica's tree then gets the prompt's blocks.
"""

from __future__ import annotations

from collections.abc import Sequence

from saga.scheduler.policy import PlacementBase, PlacementRequest, ReplicaView


class CacheAware(PlacementBase):
    name = "cache_aware"

    def __init__(
        self,
        cache_threshold: float = 0.3,
        balance_abs_threshold: int = 64,
        balance_rel_threshold: float = 1.5,
        max_tree_tokens: int = 2**26 // 4,
    ) -> None:
        self.cache_threshold = cache_threshold
        self.balance_abs_threshold = balance_abs_threshold
        self.balance_rel_threshold = balance_rel_threshold
        self.max_tree_tokens = max_tree_tokens
        self._trees: dict[str, dict[int, None]] = {}
        self._tree_bs: dict[str, int] = {}

    def _match(self, tree: dict[int, None], hashes: tuple[int, ...]) -> int:
        if not hashes or hashes[0] not in tree:
            return 0
        lo, hi = 1, len(hashes)
        while lo < hi:
            mid = (lo + hi) // 2
            if hashes[mid] in tree:
                lo = mid + 1
            else:
                hi = mid
        return lo

    def select(self, request: PlacementRequest, replicas: Sequence[ReplicaView]) -> str | None:
        if not replicas:
            return None
        loads = [r.inflight_count + r.queued_count for r in replicas]
        mx, mn = max(loads), min(loads)
        if mx - mn > self.balance_abs_threshold and mx > self.balance_rel_threshold * mn:
            i = loads.index(mn)
            return replicas[i].replica_id
        hashes = request.block_hashes
        best_r: ReplicaView | None = None
        best_m = 0
        for r in replicas:
            tree = self._trees.get(r.replica_id)
            if tree is None:
                continue
            m = self._match(tree, hashes)
            if m > best_m:
                best_m, best_r = m, r
        total = max(1, len(hashes))
        if best_r is not None and best_m / total > self.cache_threshold:
            return best_r.replica_id
        smallest = min(replicas, key=lambda r: (len(self._trees.get(r.replica_id, ())), r.replica_id))
        return smallest.replica_id

    def on_dispatch(self, request: PlacementRequest, replica_id: str) -> None:
        tree = self._trees.setdefault(replica_id, {})
        for h in request.block_hashes:
            tree.pop(h, None)
            tree[h] = None
        if request.block_size > 0:
            limit = max(1, self.max_tree_tokens // request.block_size)
            while len(tree) > limit:
                del tree[next(iter(tree))]

    def on_replica_removed(self, replica_id: str) -> None:
        self._trees.pop(replica_id, None)
