"""ThunderAgent-style placement: a program stays on its backend; new programs go best-fit.

A program (session) is bound to the backend that ran its first call and stays there for its
whole life (ThunderAgent keeps no cross-replica state, so it never migrates). A new program
goes to the backend with the most free KV (committed tokens vs capacity) that still has a
free slot, else the one with the most free KV. Pausing and smallest-first resume are the
fairness half (``policies/fairness/pause_resume.py``) plus "fixed" retention with "largest"
release order.
"""

from __future__ import annotations

from collections.abc import Sequence

from saga.scheduler.policy import PlacementBase, PlacementRequest, ReplicaView


class ThunderPlacement(PlacementBase):
    name = "thunder"

    def select(self, request: PlacementRequest, replicas: Sequence[ReplicaView]) -> str | None:
        if not replicas:
            return None
        if request.home is not None:
            for r in replicas:
                if r.replica_id == request.home:
                    return r.replica_id

        def free(r: ReplicaView) -> tuple[bool, int, str]:
            return (r.inflight_count < r.max_running, r.kv_total - r.committed_tokens, r.replica_id)

        return max(replicas, key=free).replica_id
