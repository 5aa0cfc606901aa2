"""Retention policies, one per module, all behind :class:`saga.graphs.retention.cache.Policy`."""

from saga.graphs.retention.policies.informed import InformedBoundPolicy
from saga.graphs.retention.policies.lru import LRUPolicy
from saga.graphs.retention.policies.oracle import OraclePolicy
from saga.graphs.retention.policies.saga import SagaPolicy, SagaRetentionSettings
from saga.graphs.retention.policies.ttl import TTLPolicy
from saga.graphs.retention.policies.weighted import WeightedScorePolicy

__all__ = [
    "InformedBoundPolicy",
    "LRUPolicy",
    "OraclePolicy",
    "SagaPolicy",
    "SagaRetentionSettings",
    "TTLPolicy",
    "WeightedScorePolicy",
]
