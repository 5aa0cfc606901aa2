"""Work stealing with an explicit cost model for losing or moving the cache.

A *thief* is a healthy replica with a free running slot, room in its KV and an empty queue
of its own. A *victim* is a replica whose engine-held queue is not empty. For each call
near the head of a victim's queue (the first ``SCAN`` calls) the thief compares, in seconds:

- benefit = the call's modelled wait on the victim: ``(position + 1) x call_s / running``
  (it runs at once on the thief), ``running`` being the victim's calls in flight (at most
  ``max_running``, at least 1): whatever holds the queue (full running slots, the KV
  watermark, a decode-batch cap), it drains as running calls finish, one every
  ``call_s / running`` seconds;
- cost = the extra prefill it pays on the thief: ``(cached_on_victim - cached_on_thief) /
  prefill_tokens_per_s`` (SGLang cannot ship KV between replicas, so "moving" a session means
  recomputing the prefix the thief does not hold; later calls then hit the thief's cache).

A call is a candidate only if the thief can lend it memory no live session of its own needs:
the tokens it must newly hold there (prompt + max new tokens - the prefix the thief has cached)
must fit in ``lendable(call)``, the thief's room under the KV watermark beside its committed
KV (calls in flight, pins) and the contexts of the live sessions homed on it that sit idle in
a tool gap without a pin (``Engine._spare_kv``). Those contexts are cached but unprotected: a
stolen long context would evict them and their next calls would recompute, so under KV
pressure, where memory rather than slots is what is short, a steal only moves the queue
(measured: ``docs/scheduler.md`` § Mechanisms under KV pressure).

It steals the call with the largest ``benefit - benefit_margin x cost`` when that is
positive. At most ``max_per_epoch`` steals happen per pass; a pass runs every ``epoch_s`` while
any queue is non-empty, and at once whenever a replica frees a slot with nothing to run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from saga.scheduler.settings import CostModel, StealingSettings
from saga.scheduler.state import CallState, ReplicaState

SCAN = 16  # calls examined at the head of each victim's queue


@dataclass(frozen=True, slots=True)
class StealPlan:
    call_id: str
    victim: str
    thief: str
    cost_s: float
    benefit_s: float


def best_steal(
    thief: ReplicaState,
    victims: Iterable[ReplicaState],
    calls: dict[str, CallState],
    cost: CostModel,
    settings: StealingSettings,
    fits: Callable[[ReplicaState, CallState], bool],
    lendable: Callable[[CallState], float] | None = None,
) -> StealPlan | None:
    best: StealPlan | None = None
    best_gain = 0.0
    tps = cost.prefill_tokens_per_s
    for v in victims:
        if v is thief or not v.queue:
            continue
        per_slot = v.call_s / max(1, min(len(v.inflight), v.max_running))
        for pos, cid in enumerate(v.queue[:SCAN]):
            c = calls[cid]
            if not fits(thief, c):
                continue
            p = c.prompt
            on_v = v.cached_prefix_tokens(p.block_hashes, p.block_size)
            on_t = thief.cached_prefix_tokens(p.block_hashes, p.block_size)
            if lendable is not None and p.num_tokens + c.max_new_tokens - on_t > lendable(c):
                continue
            cost_s = max(0, on_v - on_t) / tps
            benefit_s = (pos + 1) * per_slot
            gain = benefit_s - settings.benefit_margin * cost_s
            if gain > best_gain:
                best_gain = gain
                best = StealPlan(cid, v.replica_id, thief.replica_id, cost_s, benefit_s)
    return best
