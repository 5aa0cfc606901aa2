"""Placement and fairness policies, by name (each in its own file behind ``policy.py``)."""

from __future__ import annotations

from collections.abc import Callable

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

# Factories taking a seed (only power_of_two uses it).
PLACEMENT_POLICIES: dict[str, Callable[[int], PlacementPolicy]] = {
    "round_robin": lambda seed: RoundRobin(),
    "least_load": lambda seed: LeastLoad(),
    "power_of_two": lambda seed: PowerOfTwo(seed),
    "cache_aware": lambda seed: CacheAware(),
    "sticky": lambda seed: StickyHash(),
    "affinity": lambda seed: SoftAffinity(),
    "thunder": lambda seed: ThunderPlacement(),
    "saga": lambda seed: SagaPlacement(),
}

FAIRNESS_POLICIES: dict[str, Callable[[], FairnessPolicy]] = {
    "fcfs": Fcfs,
    "pause_resume": PauseResume,
    "afs": AgentFairShare,
}

__all__ = ["FAIRNESS_POLICIES", "PLACEMENT_POLICIES"]
