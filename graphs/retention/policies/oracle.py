"""The offline oracle: Bélády's MIN at page granularity, respecting prefix semantics.

It evicts the leaf whose next use is farthest in the future (never used again first). A page's
next use is never later than that of any page below it in the radix trie (every prompt that
holds a page holds its whole prefix), so a farthest-next-use page can always be taken at a
leaf: restricting the choice to leaves loses nothing, and the cache stays prefix-closed.
Every page of a request must be resident while it runs (the request's own pages are not
candidates); with that rule farthest-in-future remains optimal (the classical exchange
argument carries over to requests that are sets of pages), so no online policy recomputes
fewer pages. It reads the future (``Workload.req_next``): a bound, not a policy.
"""

from __future__ import annotations

import numpy as np

from saga.graphs.retention.cache import CacheState
from saga.graphs.retention.policies.base import GlobalHeapPolicy
from saga.graphs.retention.workload import Workload


class OraclePolicy(GlobalHeapPolicy):
    name = "oracle"

    def reset(self, wl: Workload, cache: CacheState) -> None:
        super().reset(wl, cache)
        self._next = np.full(wl.n_segments, wl.n_requests, dtype=np.int64)

    def on_request(self, r: int, t: float) -> None:
        self._next[self.wl.req_path[r]] = self.wl.req_next[r]

    def key(self, seg: int) -> float:
        return -float(self._next[seg])  # farthest next use = smallest key
