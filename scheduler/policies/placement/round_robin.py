"""Round robin: the next eligible replica in id order, whatever its load or cache."""

from __future__ import annotations

from collections.abc import Sequence

from saga.scheduler.policy import PlacementBase, PlacementRequest, ReplicaView


class RoundRobin(PlacementBase):
    name = "round_robin"

    def __init__(self) -> None:
        self._next = 0

    def select(self, request: PlacementRequest, replicas: Sequence[ReplicaView]) -> str | None:
        if not replicas:
            return None
        r = replicas[self._next % len(replicas)]
        self._next += 1
        return r.replica_id
