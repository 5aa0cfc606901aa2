"""SAGA placement: load-bounded session affinity, sibling batching, a cost model in seconds.

For every candidate replica ``r`` the modelled cost of running the call there is

    cost(r) = est_wait_s(r)                                   # queueing (slots, engine queue)
            + (prompt - cached_prefix(r)) / prefill_tokens_per_s   # prefix it must recompute
            + pressure_penalty_s x max(0, kv_after(r) - pressure_start)   # evicting others

where ``kv_after`` is the committed-KV fraction after adding the call's context (shared
prefixes counted once by the engine's accounting). The filter → score → pick stages:

1. *affinity* (fast path, no scan): the session's home replica while its load is below
   ``affinity.load_bound``; beyond it the home is kept unless another replica is cheaper by
   ``affinity.move_margin`` (hysteresis, so a session is not moved for a marginal gain);
2. *batching*: a sub-agent's first call goes to the least-loaded replica of its group (parent
   and siblings) while that load is below ``batching.max_load``: siblings share the parent's
   prefix, and fork/join siblings then finish together;
3. otherwise the minimum-cost replica.

``last_reason`` names the stage that decided ("affinity", "batch", "cost"); the engine copies
it into ``Dispatch.reason``. With affinity disabled the home gets no fast path and no margin:
only the cost model (which still sees cached prefixes) decides.
"""

from __future__ import annotations

from collections.abc import Sequence

from saga.scheduler.policy import PlacementBase, PlacementRequest, ReplicaView
from saga.scheduler.settings import AffinitySettings, BatchingSettings, CostModel


class SagaPlacement(PlacementBase):
    name = "saga"

    def __init__(
        self,
        affinity: AffinitySettings | None = None,
        batching: BatchingSettings | None = None,
        cost: CostModel | None = None,
    ) -> None:
        self.affinity = affinity or AffinitySettings()
        self.batching = batching or BatchingSettings()
        self.cost = cost or CostModel()
        self.last_reason = ""

    def cost_s(self, request: PlacementRequest, r: ReplicaView) -> float:
        cached = r.cached_prefix_tokens(request.block_hashes, request.block_size)
        recompute = max(0, request.prompt_tokens - cached) / self.cost.prefill_tokens_per_s
        after = (r.committed_tokens + request.prompt_tokens + request.max_new_tokens) / r.kv_total
        if r.replica_id == request.home and request.pinned:
            after = (r.committed_tokens + request.max_new_tokens) / r.kv_total
        excess = after - self.affinity.pressure_start
        penalty = self.affinity.pressure_penalty_s * excess if excess > 0 else 0.0
        return r.est_wait_s() + recompute + penalty

    def select(self, request: PlacementRequest, replicas: Sequence[ReplicaView]) -> str | None:
        if not replicas:
            return None
        aff = self.affinity
        home: ReplicaView | None = None
        if aff.enabled and request.home is not None:
            for r in replicas:
                if r.replica_id == request.home:
                    home = r
                    break
            if home is not None and home.load < aff.load_bound:
                self.last_reason = "affinity"
                return home.replica_id
        if self.batching.enabled and request.first_call and request.group:
            group = [r for r in replicas if r.replica_id in request.group]
            if group:
                g = min(group, key=lambda r: (r.load, r.replica_id))
                if g.load < self.batching.max_load:
                    self.last_reason = "batch"
                    return g.replica_id
        best: ReplicaView | None = None
        best_cost = float("inf")
        for r in replicas:
            c = self.cost_s(request, r)
            if c < best_cost or (c == best_cost and best is not None and r.replica_id < best.replica_id):
                best, best_cost = r, c
        assert best is not None
        if (
            home is not None
            and home is not best
            and self.cost_s(request, home) <= best_cost * aff.move_margin
        ):
            self.last_reason = "affinity"
            return home.replica_id
        self.last_reason = "cost"
        return best.replica_id
