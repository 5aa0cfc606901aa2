"""Sticky-by-session consistent hashing (rendezvous hashing on the routing key).

Every call of a session goes to ``argmax_r hash(key, r)`` over the eligible replicas: the
same replica as long as it stays eligible, and when a replica leaves only its sessions move
(the property consistent hashing gives; sglang-router ``manual`` / Dynamo hard affinity /
``consistent_hashing``). Load is ignored: that is the baseline's known weakness.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

from saga.scheduler.policy import PlacementBase, PlacementRequest, ReplicaView


class StickyHash(PlacementBase):
    name = "sticky"

    def select(self, request: PlacementRequest, replicas: Sequence[ReplicaView]) -> str | None:
        if not replicas:
            return None
        key = (request.routing_key or request.call_id).encode()
        best = max(replicas, key=lambda r: (zlib.crc32(r.replica_id.encode(), zlib.crc32(key)), r.replica_id))
        return best.replica_id
