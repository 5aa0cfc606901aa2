"""Tail-first LRU: what radix-cache engines do (SGLang's ``--radix-eviction-policy lru``).

Every request touches all pages of its prompt; the leaf whose last use is oldest is evicted
first, from its tail, so a prefix shrinks from its end and shared prefixes (touched by every
request that shares them) leave last. No tunables.
"""

from __future__ import annotations

import numpy as np

from saga.graphs.retention.cache import CacheState
from saga.graphs.retention.policies.base import GlobalHeapPolicy
from saga.graphs.retention.workload import Workload


class LRUPolicy(GlobalHeapPolicy):
    name = "lru"

    def reset(self, wl: Workload, cache: CacheState) -> None:
        super().reset(wl, cache)
        self._last = np.full(wl.n_segments, -1, dtype=np.int64)

    def on_request(self, r: int, t: float) -> None:
        self._last[self.wl.req_path[r]] = r

    def key(self, seg: int) -> float:
        return float(self._last[seg])
