"""Least load: the replica with the lowest engine-accounted load (ties: fewest in flight, id)."""

from __future__ import annotations

from collections.abc import Sequence

from saga.scheduler.policy import PlacementBase, PlacementRequest, ReplicaView


class LeastLoad(PlacementBase):
    name = "least_load"

    def select(self, request: PlacementRequest, replicas: Sequence[ReplicaView]) -> str | None:
        if not replicas:
            return None
        best = min(replicas, key=lambda r: (r.load, r.inflight_count, r.replica_id))
        return best.replica_id
