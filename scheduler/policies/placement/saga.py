"""SAGA placement: load-bounded session affinity, sibling batching, a cost model in seconds.

For every candidate replica ``r`` (with ``B`` calls and ``K`` KV tokens in flight) the
modelled cost of running a call with prompt ``P`` (of which ``C_r`` is cached on ``r``),
``N`` new tokens and context ``X = P + N`` there is, in seconds:

    wait(r)                                         engine queue / slots / KV (ReplicaView.est_wait_s)
  + (P - C_r) x prefill_s                           prefix it must recompute
  + N x (overhead + d x (B+1) + k x (K + X))        its own decode, slowed by the batch it joins
  + w x B' x [N x (d + k x X) + (P - C_r) x prefill_s]  the slowdown it imposes on the B others
  + pressure_penalty_s x max(0, KV fraction after - pressure_start)   evicting retained KV

with the replica model's iteration constants (``CostModel``: ``d`` per sequence, ``k`` per
KV token read, ``w`` = ``externality_weight``). ``B'`` is ``B`` with each call in flight
weighted by its deadline urgency over the placed call's (``urgency_weighting``, see
``CostModel``; ``B' = B`` when all tenants share one deadline factor): a call whose tenant has a
loose deadline pays more for slowing tight-deadline calls, so loose and tight sessions drift
apart, and the tight ones land where decoding is fast. Agents are decode- and KV-read-bound at
long contexts, so the batch term is what spreads sessions; the prefix term is what keeps
them home. The filter → score → pick stages:

1. *batching*: a sub-agent's first call goes to the least-loaded replica of its group
   (parent and siblings, which hold the parent's prefix) while that load is below
   ``batching.max_load``: fork/join siblings then finish together;
2. *score*: the cost above. Candidates are visited in order of the cost without the prefix
   terms (a lower bound) and the scan stops once the bound exceeds the best full cost, so
   prefix matching (a binary search over cached block hashes) runs on few replicas;
   With ``affinity.amortize_calls`` = H > 0 the terms other than the prefix count
   ``1 + min(R, H)`` times, ``R`` the session's expected later calls (the AEG's): those
   calls follow it to the replica chosen, the recompute of a move is paid once;
3. *affinity*: the session's home replica (holding its KV) is kept unless its load is above
   ``affinity.load_bound`` or the best replica is cheaper by more than ``move_margin`` x
   (hysteresis: a session is not moved for a marginal gain, its later calls would follow).

``last_reason`` names the stage that decided ("batch", "affinity", "cost"); the engine copies
it into ``Dispatch.reason``. With affinity disabled there is no hysteresis: only the cost
model (which still sees cached prefixes) decides.
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

    def bound_s(self, request: PlacementRequest, r: ReplicaView) -> float:
        """Cost without the prefix terms (a lower bound of ``cost_s``)."""
        c = self.cost
        n = request.max_new_tokens
        x = request.prompt_tokens + n
        b = r.inflight_count
        own = n * (
            c.iteration_overhead_s
            + c.decode_s_per_seq * (b + 1)
            + c.kv_read_s_per_token * (r.inflight_tokens + x)
        )
        ext = (
            c.externality_weight
            * self.others(request, r)
            * n
            * (c.decode_s_per_seq + c.kv_read_s_per_token * x)
        )
        extra = x if not (request.pinned and r.replica_id == request.home) else n
        after = (r.committed_tokens + extra) / r.kv_total
        excess = after - self.affinity.pressure_start
        penalty = self.affinity.pressure_penalty_s * excess if excess > 0 else 0.0
        return r.est_wait_s(x) + own + ext + penalty

    def prefix_s(self, request: PlacementRequest, r: ReplicaView) -> float:
        cached = r.cached_prefix_tokens(request.block_hashes, request.block_size)
        recompute = max(0, request.prompt_tokens - cached) / self.cost.prefill_tokens_per_s
        return recompute * (1.0 + self.cost.externality_weight * self.others(request, r))

    def others(self, request: PlacementRequest, r: ReplicaView) -> float:
        """The calls in flight on ``r`` a placed call slows, each counted (its urgency / the
        placed call's) with ``cost.urgency_weighting`` (1 each without; equal urgencies: B)."""
        if not self.cost.urgency_weighting:
            return float(r.inflight_count)
        return r.inflight_urgency / request.urgency

    def cost_s(self, request: PlacementRequest, r: ReplicaView) -> float:
        return self.bound_s(request, r) + self.prefix_s(request, r)

    def select(self, request: PlacementRequest, replicas: Sequence[ReplicaView]) -> str | None:
        if not replicas:
            return None
        if self.batching.enabled and request.first_call and request.group:
            group = [r for r in replicas if r.replica_id in request.group]
            if group:
                g = min(group, key=lambda r: (r.load, r.replica_id))
                if g.load < self.batching.max_load:
                    self.last_reason = "batch"
                    return g.replica_id
        m = 1.0 + min(request.remaining_calls, self.affinity.amortize_calls)  # calls the choice holds for
        bounds = sorted(
            ((m * self.bound_s(request, r), r.replica_id, r) for r in replicas), key=lambda t: (t[0], t[1])
        )
        best: ReplicaView | None = None
        best_cost = float("inf")
        home: ReplicaView | None = None
        home_cost = 0.0
        if request.home is not None:  # seed the search with the home: it usually wins
            for lb, rid, r in bounds:
                if rid == request.home:
                    home, home_cost = r, lb + self.prefix_s(request, r)
                    best, best_cost = home, home_cost
                    break
        for lb, _, r in bounds:
            if lb >= best_cost:
                break  # sorted by the bound: no later replica can be cheaper
            if r is home:
                continue
            c = lb + self.prefix_s(request, r)
            if c < best_cost:
                best, best_cost = r, c
        assert best is not None
        aff = self.affinity
        keep_home = aff.enabled and home is not None and home is not best and home.load < aff.load_bound
        if keep_home and home is not None and home_cost <= best_cost * aff.move_margin:
            self.last_reason = "affinity"
            return home.replica_id
        self.last_reason = "affinity" if best.replica_id == request.home else "cost"
        return best.replica_id
