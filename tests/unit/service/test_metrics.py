from __future__ import annotations

import re
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from saga.scheduler.api import Dispatch, Pin, Release, Steal
from saga.service.metrics import METRIC_NAMES, ServiceMetrics

pytestmark = pytest.mark.unit

DOC = Path(__file__).resolve().parents[3] / "docs" / "metrics.md"


def test_names_are_exactly_the_contract() -> None:
    documented = re.findall(r"^\| `(saga_[a-z_]+)` \|", DOC.read_text(), flags=re.M)
    assert sorted(documented) == sorted(METRIC_NAMES)


def test_registered_on_injected_registry_only() -> None:
    r1, r2 = CollectorRegistry(), CollectorRegistry()
    m = ServiceMetrics(r1)
    ServiceMetrics(r2)  # a second instance does not clash: nothing is global
    m.actions(
        [
            Dispatch("c", "r0", reason="affinity"),
            Pin("s", "r0", 1.0),
            Release("s", "r0", "expired"),
            Steal("s", "c", "a", "b", 0.1),
        ]
    )
    m.session_started("t")
    m.session_ended("t", "swe", 10.0, 5.0)
    m.replica_load("r0", 1, 2, 50, 100, 0.5)
    text = m.exposition().decode()
    families = {
        re.sub(r"(_bucket|_count|_sum|_created)$", "", line.split("{")[0].split(" ")[0])
        for line in text.splitlines()
        if line.startswith("saga_")
    }
    assert families <= set(METRIC_NAMES) | {n.removesuffix("_total") for n in METRIC_NAMES}
    assert "saga_build_info" in families
    assert 'saga_tasks_total{slo="missed",tenant="t"} 1.0' in text
    assert 'saga_kv_retention_total{outcome="expired"} 1.0' in text
    assert 'saga_replica_kv_usage_ratio{replica="r0"} 0.5' in text
    assert r2.get_sample_value("saga_steals_total") == 0.0
