"""Test placement policies shared by the engine's unit suites (importable as
``placement_fakes``, like ``service_fakes``)."""

from __future__ import annotations

from collections.abc import Sequence

from saga.scheduler.policy import PlacementBase, PlacementRequest, ReplicaView


class FirstReplica(PlacementBase):
    """Always the first replica offered (imbalance on purpose; shows which replicas are allowed)."""

    name = "first"

    def select(self, request: PlacementRequest, replicas: Sequence[ReplicaView]) -> str | None:
        return replicas[0].replica_id if replicas else None
