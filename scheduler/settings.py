"""Typed engine settings: every field states its unit and why its default.

The engine is configured by one :class:`EngineSettings` made of one nested group per
mechanism. Each mechanism has an ``enabled`` switch so that an ablation is a settings change,
not a code change (``saga.scheduler.systems`` builds the named systems and ablations).

Starting points come from the paper authors' code (``BRIEF.md`` §2); where a default differs,
the field says why.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any

from saga.scheduler.api import InvalidInput


@dataclass(frozen=True, slots=True)
class CostModel:
    """Seconds a replica needs per unit of work: the common currency of placement decisions.

    Placement, stealing and retention all compare *times*: the seconds a call would wait in a
    queue against the seconds it would spend recomputing a prefix the chosen replica does not
    hold. The simulator overwrites these with the replica model's own timing parameters.
    """

    # Prefill throughput of one replica, tokens/s. 12k tok/s is a Llama-3-70B TP=8 H100-class
    # replica prefilling long prompts (SGLang's published prefill benchmarks are 10-20k tok/s).
    prefill_tokens_per_s: float = 12_000.0
    # Mean seconds one call occupies a running slot before the first observation; replaced by an
    # EWMA of observed call durations per replica. 6 s: median api_time of the Claude Code traces.
    initial_call_s: float = 6.0
    # EWMA weight of a new call-duration observation (dimensionless). 0.05: ~20 calls of memory.
    call_s_alpha: float = 0.05
    # Decode iteration model (the replica model's, SGLang-like): one iteration costs
    # overhead + decode_s_per_seq x running sequences + kv_read_s_per_token x their KV tokens.
    # Defaults: the emulator's Llama-3.1-8B / H100 figures (saga.emulator.core.TimingParams).
    iteration_overhead_s: float = 6.0e-3
    decode_s_per_seq: float = 3.0e-5
    kv_read_s_per_token: float = 4.9e-8
    # Weight of the slowdown a call imposes on the calls already decoding on a replica
    # (dimensionless; 0: selfish placement, 1: minimise total time). 0.5: half, since the
    # others' remaining output is on average half of theirs.
    externality_weight: float = 0.5
    # Weigh that slowdown by deadline urgency (placement, ``policies/placement/saga.py``): a
    # call's urgency is (deadline factor - 1) ** -urgency_power of its tenant
    # (``fairness.slo_factors``; factor - 1 is the slack a deadline leaves, in units of the task's
    # own physical time), and the slowdown a call imposes on each call in flight counts (its
    # urgency / the placed call's). Tenants with loose deadlines then keep off replicas decoding
    # tight-deadline calls, and tight calls go where decoding is fast. With one deadline factor
    # the ratios are 1: placement unchanged. Power 2 (dimensionless; 0 weighs all alike, at
    # most 8): power 1 moved the steady multi-tenant runs much less in development
    # (docs/scheduler.md § Deadline urgency in placement).
    urgency_weighting: bool = True
    urgency_power: float = 2.0


@dataclass(frozen=True, slots=True)
class AffinitySettings:
    """Session-affinity placement bounded by load (``policies/placement/saga.py``)."""

    enabled: bool = True
    # A session's home replica is kept while its load (see ReplicaState.load) is below this
    # bound. 0.95 (paper 0.8): our load counts committed KV exactly, so the bound can be higher.
    load_bound: float = 0.95
    # Moving a session away from its home replica must save at least this factor of the
    # modelled cost (dimensionless hysteresis, avoids ping-pong between two equal replicas).
    move_margin: float = 1.25
    # Weight of the memory-pressure penalty in seconds per unit of KV fraction above
    # ``pressure_start`` (placing more context there would evict someone's retained KV).
    pressure_penalty_s: float = 30.0
    pressure_start: float = 0.85
    # Later calls a placement is amortised over (calls, 0 = this call alone): a session's later
    # calls follow it to the replica chosen, so its batch, KV-read and wait terms count
    # 1 + min(expected remaining calls, amortize_calls) times, the prefix recompute once.
    amortize_calls: float = 0.0


@dataclass(frozen=True, slots=True)
class BatchingSettings:
    """Correlated calls (sub-agents of one parent, fork/join siblings) go to one replica."""

    enabled: bool = True
    # Siblings share the parent's prefix; co-locating pays only while the group's replica is
    # below this load (fraction). Above it, a sibling is placed like any new session.
    max_load: float = 0.9


@dataclass(frozen=True, slots=True)
class StealingSettings:
    """Work stealing by idle replicas, with an explicit cost model (``scheduler/stealing.py``)."""

    enabled: bool = True
    # Epoch of the periodic steal pass, seconds (paper: 100 ms). Steals are also tried at
    # once whenever a replica frees a slot and its own queue is empty.
    epoch_s: float = 0.1
    # Maximum steals per pass (paper: 4). 8: a 64-replica cluster frees more slots per epoch.
    max_per_epoch: int = 8
    # Steal only when the modelled queueing delay saved exceeds the cache cost by this factor.
    benefit_margin: float = 1.2


@dataclass(frozen=True, slots=True)
class RetentionSettings:
    """KV retention across tool gaps: Pin/Release (``scheduler/retention.py``).

    ``mode``: "predictive" (TTL from the predicted gap distribution and memory pressure),
    "fixed" (pin for ``max_ttl_s`` at every tool boundary; ThunderAgent-like), "off".
    """

    enabled: bool = True
    mode: str = "predictive"
    # Hard bound on one pin, seconds (paper: 300 s). A pin is never longer than this.
    max_ttl_s: float = 300.0
    # Gap quantile the TTL covers before memory pressure shortens it (0.9 covers 90% of gaps).
    ttl_quantile: float = 0.9
    # Pin only if P(next call within the TTL) x recompute seconds saved exceeds this, seconds.
    min_benefit_s: float = 0.05
    # Pinned KV may take at most this fraction of a replica's KV (the rest serves running calls).
    max_pinned_fraction: float = 0.7
    # Memory pressure m = clamp((committed - start) / (1 - start), 0, 1) shortens the TTL by
    # factor (1 - 0.5 m) as in the paper (start 0.7 there).
    pressure_start: float = 0.7
    # At expiry a session still in its tool gap may be re-pinned (the predictor is asked again,
    # conditioned on the time already spent) up to this many times.
    max_extensions: int = 2
    # Release order under pressure: "score" (expected seconds to reuse x size / P(reuse),
    # furthest-in-future first, Bélády-like), "largest" (ThunderAgent), "oldest" (LRU).
    release_order: str = "score"


@dataclass(frozen=True, slots=True)
class GatingSettings:
    """The engine holds calls in per-replica queues instead of over-filling replicas.

    With gating off the engine dispatches every call at once and the replica queues it
    itself (what request-level routers do); stealing and fair-share ordering then have
    nothing to act on.
    """

    enabled: bool = True
    # A call is dispatched when the replica's committed KV (in-flight contexts + pinned
    # sessions, shared prefixes counted once) stays below this fraction of its capacity.
    kv_watermark: float = 0.97
    # Extra running slots beyond the replica's max_running_requests (0: exactly its limit).
    slot_slack: int = 0


@dataclass(frozen=True, slots=True)
class BatchCapSettings:
    """Decode-batch cap per replica + shortest-remaining-work order of held calls
    (``scheduler/batchcap.py``: the algorithm and the measurements). Needs gating (the cap
    holds calls in the engine's queues); off, a replica runs every call it is given
    (processor sharing, SGLang's behaviour with max_running_requests 1024)."""

    # Off by default: on every simulated workload at 80% load it was a no-op (latency rule)
    # or made tasks slower (knee rule): docs/scheduler.md § Decode-batch cap.
    enabled: bool = False
    # Allowed decode-throughput loss vs running every waiting call (fraction, [0, 1)): the
    # cap is never below the smallest batch keeping 1 - this of the uncapped throughput under
    # the replica's cost model. 0.1: the loss the issue allows (5-10%), the upper end so
    # that the cap can act at all.
    max_throughput_loss: float = 0.1
    # Also never below the mean-latency-optimal batch sqrt(f x N / c) (the square-root rule,
    # batchcap.py). True: cap only where holding calls pays; False: the throughput bound alone
    # (the "knee"), which holds calls even while the iteration overhead dominates.
    latency_rule: bool = True
    # The cap never goes below this many running calls (count). 1: the cost model decides.
    min_batch: int = 1
    # Order of held calls: "srpt" (least expected remaining work, aging, deadlines) or
    # "fairness" (the fairness policy's queue_key: AFS least slack).
    order: str = "srpt"
    # Seconds of priority a held call gains per second it waits (dimensionless). 1.0: a call
    # of a session with R s of work left overtakes fresh calls after waiting R s at most.
    aging: float = 1.0
    # A call held this long goes first, oldest first (seconds): the starvation bound. 30 s:
    # thousands of decode iterations (10-20 ms each on the 70B profile), so the order decides
    # in normal operation, yet short against agent tasks of minutes.
    max_hold_s: float = 30.0
    # Sessions that can still meet their deadline are keyed by min(remaining, slack).
    deadline_aware: bool = True


@dataclass(frozen=True, slots=True)
class FairnessSettings:
    """Agent Fair Share and admission control (``policies/fairness/afs.py``)."""

    enabled: bool = True
    # Tenant weights (unknown tenants weigh 1.0).
    weights: dict[str, float] = field(default_factory=dict)
    # Deadline = start + slo_factor x expected completion time (paper 1.5), when the client
    # gave no deadline hint.
    slo_factor: float = 1.5
    # Per-tenant slo_factor (tenant policies' slo.deadline_factor); tenants not listed use
    # slo_factor. Each >= 1.
    slo_factors: dict[str, float] = field(default_factory=dict)
    # Bounded deviation: a tenant whose weight-normalised slowdown is below the best-served
    # tenant's by more than this (dimensionless) yields to the others.
    max_deviation: float = 0.25
    # Admission: new sessions are deferred while the cluster's queued calls per replica exceed
    # this; rejected when their tenant's deferred sessions exceed ``max_deferred_per_tenant``.
    overload_queue_per_replica: float = 4.0
    max_deferred_per_tenant: int = 256
    # Retry-after hint on a rejection and re-check period for deferred sessions, seconds.
    retry_after_s: float = 5.0
    admission_enabled: bool = True


@dataclass(frozen=True, slots=True)
class LaneSettings:
    """SLO lanes: replicas reserved for the tight-deadline class (``scheduler/lanes.py``).

    A tenant whose deadline factor (``fairness.slo_factors``, else ``fairness.slo_factor``) is
    at most ``max_factor`` is *tight*. When tight calls are a small share of the modelled work,
    the engine keeps a few replicas for them alone, so their decode batches are small and hold
    no long contexts of the other classes. Sized from the measured work share; see lanes.py.
    """

    enabled: bool = True
    # Deadline factors at or below this are the tight class (1.5: the paper's interactive factor).
    max_factor: float = 1.5
    # The lane gets enough replicas that its load is at most this fraction of the cluster's
    # average (0.5: tight calls meet batches about half as large as elsewhere).
    relative_load: float = 0.5
    # At most this fraction of the cluster's capacity may sit in the lane beyond the tight work
    # itself (0.05: the other classes lose at most 5% of capacity); no lane when it cannot fit.
    max_reserved: float = 0.05
    # Form a lane that max_reserved caps below the relative_load size (its tight calls then
    # share fuller batches in fewer replicas). Off: in the mix where the cap bound, urgency-
    # weighted placement over the whole cluster met more tight deadlines than the capped lane.
    allow_capped: bool = False
    # A lane exists only while a tight task missed its deadline within this many seconds
    # (3600: an hour; 0: whenever the share allows one).
    hold_s: float = 3600.0
    # Half-life of the work-share measurement, seconds.
    half_life_s: float = 600.0
    # Modelled replica-seconds of work observed before a lane may form.
    min_work_s: float = 60.0


@dataclass(frozen=True, slots=True)
class EngineSettings:
    cost: CostModel = field(default_factory=CostModel)
    affinity: AffinitySettings = field(default_factory=AffinitySettings)
    batching: BatchingSettings = field(default_factory=BatchingSettings)
    stealing: StealingSettings = field(default_factory=StealingSettings)
    retention: RetentionSettings = field(default_factory=RetentionSettings)
    gating: GatingSettings = field(default_factory=GatingSettings)
    batch_cap: BatchCapSettings = field(default_factory=BatchCapSettings)
    fairness: FairnessSettings = field(default_factory=FairnessSettings)
    lanes: LaneSettings = field(default_factory=LaneSettings)
    # Granularity of shared-prefix accounting, tokens: the engine samples one cumulative
    # block hash every this many tokens (1024: 64-token blocks -> every 16th hash), which
    # keeps 10k sessions x 200k tokens in a few MB while counting shared prefixes once.
    prefix_granularity_tokens: int = 1024

    def validate(self) -> None:
        """Raise :class:`InvalidInput` naming the field when a value is out of range."""
        _check_tree(self, "settings")
        if self.retention.mode not in ("predictive", "fixed", "off"):
            raise InvalidInput(f"settings.retention.mode: unknown mode {self.retention.mode!r}")
        if self.retention.release_order not in ("score", "largest", "oldest"):
            raise InvalidInput(f"settings.retention.release_order: unknown {self.retention.release_order!r}")
        for frac in ("max_pinned_fraction", "pressure_start", "ttl_quantile"):
            v = getattr(self.retention, frac)
            if not 0.0 < v <= 1.0:
                raise InvalidInput(f"settings.retention.{frac}: must be in (0, 1], got {v}")
        if not 0.0 < self.gating.kv_watermark <= 1.0:
            raise InvalidInput(
                f"settings.gating.kv_watermark: must be in (0, 1], got {self.gating.kv_watermark}"
            )
        if not 0.0 <= self.batch_cap.max_throughput_loss < 1.0:
            raise InvalidInput(
                "settings.batch_cap.max_throughput_loss: must be in [0, 1), "
                f"got {self.batch_cap.max_throughput_loss}"
            )
        if self.batch_cap.order not in ("srpt", "fairness"):
            raise InvalidInput(f"settings.batch_cap.order: unknown order {self.batch_cap.order!r}")
        if self.prefix_granularity_tokens < 1:
            raise InvalidInput("settings.prefix_granularity_tokens: must be >= 1")
        for t, w in self.fairness.weights.items():
            if not (math.isfinite(w) and w > 0):
                raise InvalidInput(f"settings.fairness.weights[{t!r}]: must be > 0, got {w}")
        ln = self.lanes
        ok = ln.max_factor >= 1 and 0 < ln.relative_load <= 1 and ln.max_reserved < 1
        if not (ok and ln.half_life_s > 0):
            raise InvalidInput(
                "settings.lanes: need max_factor >= 1, relative_load in (0, 1], max_reserved < 1, "
                f"half_life_s > 0; got {ln}"
            )
        if self.cost.urgency_power > 8:
            raise InvalidInput(
                f"settings.cost.urgency_power: must be in [0, 8], got {self.cost.urgency_power}"
            )
        for t, f in self.fairness.slo_factors.items():
            if not (math.isfinite(f) and f >= 1):
                raise InvalidInput(f"settings.fairness.slo_factors[{t!r}]: must be >= 1, got {f}")


def _check_tree(obj: Any, where: str) -> None:
    for f in fields(obj):
        v = getattr(obj, f.name)
        path = f"{where}.{f.name}"
        if is_dataclass(v):
            _check_tree(v, path)
        elif isinstance(v, bool):
            continue
        elif isinstance(v, int | float) and (not math.isfinite(v) or v < 0):
            raise InvalidInput(f"{path}: must be a finite number >= 0, got {v}")
