"""Load-bounded session affinity as in the paper authors' code (a sticky/affinity baseline).

Go to the session's replica (the one that served its last call) if its load is below
``load_bound`` (0.8); otherwise the least-loaded replica, and the session rebinds there. Load
is the engine-accounted ``ReplicaView.load``. No retention, no stealing: the baseline
"vLLM with prefix caching and affinity routing" the paper compares with.
"""

from __future__ import annotations

from collections.abc import Sequence

from saga.scheduler.policy import PlacementBase, PlacementRequest, ReplicaView


class SoftAffinity(PlacementBase):
    name = "affinity"

    def __init__(self, load_bound: float = 0.8) -> None:
        self.load_bound = load_bound

    def select(self, request: PlacementRequest, replicas: Sequence[ReplicaView]) -> str | None:
        if not replicas:
            return None
        if request.home is not None:
            for r in replicas:
                if r.replica_id == request.home and r.load < self.load_bound:
                    return r.replica_id
        return min(replicas, key=lambda r: (r.load, r.replica_id)).replica_id
