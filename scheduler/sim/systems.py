"""Named systems for the simulator: SAGA, the baselines and SAGA's ablations.

A :class:`SystemSpec` is everything that differs between systems: engine settings (which
mechanisms are on), the placement and fairness policies, whether the engine gets the
replicas' exact KV events, and whether it gets the AEG predictor. Every system runs the
same engine code and the same replica models; only these choices change.

Baselines (request-level routers dispatch at once: gating, stealing, retention and fair
share are off):

- ``round_robin``, ``least_load``, ``power_of_two``: sglang-router's load-only policies;
- ``cache_aware``: sglang-router's default policy with its default thresholds;
- ``sticky``: consistent hashing by session (sglang-router ``manual`` / Dynamo hard affinity);
- ``affinity``: load-bounded session affinity (the paper's "prefix caching + affinity");
- ``thunder``: ThunderAgent-style: programs stay on their backend, KV kept for acting
  programs until memory pressure (largest paused first), paused programs resume smallest first.

``saga`` has every mechanism on; ``saga-no-<mechanism>`` turns exactly one off:
affinity, batching, stealing, retention, afs (fair share and admission), lanes (SLO lanes,
``lanes.py``), urgency (placement's deadline-urgency weighting, ``CostModel``), gating
(engine-held queues), predictor (BRIEF priors instead of the AEG predictor).

``saga-lanes-load1``: SLO lanes sized to the cluster's average load (``lanes.relative_load`` 1.0
instead of 0.5: fewer replicas kept, tight calls in fuller batches). ``saga-lanes-capped``: lanes
also where the reserve bound caps them (``lanes.allow_capped``, off in SAGA).

Variants that add a mechanism that is off by default (the decode-batch cap, ``batchcap.py``,
which did not help: docs/scheduler.md): ``saga-batchcap`` (latency and throughput rules, SRPT
order), ``saga-batchcap-knee`` (throughput rule alone), ``saga-batchcap-knee-afs`` (throughput
rule alone, held calls in AFS least-slack order).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

from saga.scheduler.policies.fairness.afs import AgentFairShare
from saga.scheduler.policies.fairness.fcfs import Fcfs
from saga.scheduler.policies.fairness.pause_resume import PauseResume
from saga.scheduler.policies.placement.affinity import SoftAffinity
from saga.scheduler.policies.placement.cache_aware import CacheAware
from saga.scheduler.policies.placement.least_load import LeastLoad
from saga.scheduler.policies.placement.power_of_two import PowerOfTwo
from saga.scheduler.policies.placement.round_robin import RoundRobin
from saga.scheduler.policies.placement.saga import SagaPlacement
from saga.scheduler.policies.placement.sticky import StickyHash
from saga.scheduler.policies.placement.thunder import ThunderPlacement
from saga.scheduler.policy import FairnessPolicy, PlacementPolicy
from saga.scheduler.settings import (
    AffinitySettings,
    BatchCapSettings,
    BatchingSettings,
    EngineSettings,
    FairnessSettings,
    GatingSettings,
    LaneSettings,
    RetentionSettings,
    StealingSettings,
)


class UnknownSystem(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class SystemSpec:
    name: str
    settings: EngineSettings
    placement: Callable[[EngineSettings, int], PlacementPolicy]
    fairness: Callable[[EngineSettings], FairnessPolicy]
    exact_cache: bool = False  # feed the replicas' KV events to the engine
    use_predictor: bool = False  # give the engine the AEG predictor (else BRIEF priors)
    description: str = ""
    tags: tuple[str, ...] = field(default_factory=tuple)


def _request_level() -> EngineSettings:
    return EngineSettings(
        gating=GatingSettings(enabled=False),
        stealing=StealingSettings(enabled=False),
        retention=RetentionSettings(enabled=False, mode="off"),
        fairness=FairnessSettings(enabled=False, admission_enabled=False),
        affinity=AffinitySettings(enabled=False),
        batching=BatchingSettings(enabled=False),
        batch_cap=BatchCapSettings(enabled=False),
        lanes=LaneSettings(enabled=False),
    )


def _fcfs(_: EngineSettings) -> FairnessPolicy:
    return Fcfs()


def _afs(s: EngineSettings) -> FairnessPolicy:
    return AgentFairShare(s.fairness)


def _saga_placement(s: EngineSettings, seed: int) -> PlacementPolicy:
    return SagaPlacement(s.affinity, s.batching, s.cost)


def _baseline(name: str, make: Callable[[int], PlacementPolicy], desc: str) -> SystemSpec:
    return SystemSpec(
        name, _request_level(), lambda s, seed: make(seed), _fcfs, description=desc, tags=("baseline",)
    )


BASELINES: dict[str, SystemSpec] = {
    s.name: s
    for s in (
        _baseline("round_robin", lambda seed: RoundRobin(), "round robin"),
        _baseline("least_load", lambda seed: LeastLoad(), "least engine-accounted load"),
        _baseline("power_of_two", PowerOfTwo, "power of two choices"),
        _baseline("cache_aware", lambda seed: CacheAware(), "sglang-router cache_aware, default thresholds"),
        _baseline("sticky", lambda seed: StickyHash(), "consistent hashing by session"),
        _baseline("affinity", lambda seed: SoftAffinity(), "load-bounded session affinity (bound 0.8)"),
        SystemSpec(
            "thunder",
            replace(
                _request_level(),
                gating=GatingSettings(enabled=True),
                retention=RetentionSettings(mode="fixed", release_order="largest"),
            ),
            lambda s, seed: ThunderPlacement(),
            lambda s: PauseResume(),
            description="ThunderAgent-style pause/resume",
            tags=("baseline",),
        ),
    )
}

SAGA = SystemSpec(
    "saga",
    EngineSettings(),
    _saga_placement,
    _afs,
    exact_cache=True,
    use_predictor=True,
    description="SAGA: every mechanism on",
)


def _ablation(mech: str) -> SystemSpec:
    s = SAGA.settings
    name = f"saga-no-{mech}"
    if mech == "affinity":
        s = replace(s, affinity=replace(s.affinity, enabled=False))
    elif mech == "batching":
        s = replace(s, batching=replace(s.batching, enabled=False))
    elif mech == "stealing":
        s = replace(s, stealing=replace(s.stealing, enabled=False))
    elif mech == "retention":
        s = replace(s, retention=replace(s.retention, enabled=False, mode="off"))
    elif mech == "afs":
        s = replace(s, fairness=replace(s.fairness, enabled=False, admission_enabled=False))
        return replace(SAGA, name=name, settings=s, fairness=_fcfs, description=f"SAGA without {mech}")
    elif mech == "lanes":
        s = replace(s, lanes=replace(s.lanes, enabled=False))
    elif mech == "urgency":
        s = replace(s, cost=replace(s.cost, urgency_weighting=False))
    elif mech == "gating":
        s = replace(s, gating=replace(s.gating, enabled=False), stealing=replace(s.stealing, enabled=False))
    elif mech == "predictor":
        return replace(SAGA, name=name, use_predictor=False, description="SAGA with BRIEF priors only")
    else:
        raise UnknownSystem(f"unknown mechanism {mech!r}")
    return replace(SAGA, name=name, settings=s, description=f"SAGA without {mech}", tags=("ablation",))


ABLATIONS = (
    "affinity",
    "batching",
    "stealing",
    "retention",
    "afs",
    "lanes",
    "urgency",
    "gating",
    "predictor",
)


def _batchcap(name: str, desc: str, latency_rule: bool = True, order: str = "srpt") -> SystemSpec:
    s = SAGA.settings
    bc = replace(s.batch_cap, enabled=True, latency_rule=latency_rule, order=order)
    s = replace(s, batch_cap=bc)
    return replace(SAGA, name=name, settings=s, description=desc, tags=("variant",))


def _amortize(calls: float) -> SystemSpec:
    s = SAGA.settings
    s = replace(s, affinity=replace(s.affinity, amortize_calls=calls))
    desc = f"SAGA + placement amortised over up to {calls:g} later calls"
    return replace(SAGA, name=f"saga-amortize{calls:g}", settings=s, description=desc, tags=("variant",))


def _lanes_capped() -> SystemSpec:
    s = SAGA.settings
    s = replace(s, lanes=replace(s.lanes, allow_capped=True))
    desc = "SAGA with SLO lanes also where the reserve caps them (lanes.allow_capped)"
    return replace(SAGA, name="saga-lanes-capped", settings=s, description=desc, tags=("variant",))


def _lanes_at_load(relative_load: float) -> SystemSpec:
    s = SAGA.settings
    s = replace(s, lanes=replace(s.lanes, relative_load=relative_load))
    desc = f"SAGA with SLO lanes sized to {relative_load:g} x the cluster's average load"
    return replace(
        SAGA, name=f"saga-lanes-load{relative_load:g}", settings=s, description=desc, tags=("variant",)
    )


VARIANTS: dict[str, SystemSpec] = {
    v.name: v
    for v in (
        _lanes_at_load(1.0),
        _lanes_capped(),
        _amortize(2.0),
        _amortize(5.0),
        _batchcap("saga-batchcap", "SAGA + decode-batch cap (latency and throughput rules), SRPT order"),
        _batchcap(
            "saga-batchcap-knee", "SAGA + throughput-knee batch cap only, SRPT order", latency_rule=False
        ),
        _batchcap(
            "saga-batchcap-knee-afs",
            "SAGA + throughput-knee batch cap only, held calls in AFS order",
            latency_rule=False,
            order="fairness",
        ),
    )
}
SYSTEMS: dict[str, SystemSpec] = {
    "saga": SAGA,
    **BASELINES,
    **{f"saga-no-{m}": _ablation(m) for m in ABLATIONS},
    **VARIANTS,
}


def get_system(name: str) -> SystemSpec:
    try:
        return SYSTEMS[name]
    except KeyError:
        raise UnknownSystem(f"unknown system {name!r}; known: {', '.join(SYSTEMS)}") from None
