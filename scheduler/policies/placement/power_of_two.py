"""Power of two choices: sample two replicas at random, take the less loaded one.

Load is the replica's in-flight + queued call count (what sglang-router's ``power_of_two``
compares). The random generator is seeded so that runs are reproducible.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from saga.scheduler.policy import PlacementBase, PlacementRequest, ReplicaView


class PowerOfTwo(PlacementBase):
    name = "power_of_two"

    def __init__(self, seed: int = 0) -> None:
        self._rng = random.Random(seed)

    def select(self, request: PlacementRequest, replicas: Sequence[ReplicaView]) -> str | None:
        n = len(replicas)
        if n == 0:
            return None
        if n == 1:
            return replicas[0].replica_id
        a, b = self._rng.sample(range(n), 2)
        ra, rb = replicas[a], replicas[b]
        la = ra.inflight_count + ra.queued_count + ra.reported_waiting
        lb = rb.inflight_count + rb.queued_count + rb.reported_waiting
        return (ra if la <= lb else rb).replica_id
