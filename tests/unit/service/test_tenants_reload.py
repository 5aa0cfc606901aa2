"""Tenant policy hot reload (``saga.service.tenants_reload``): validation, last good policy kept,
metrics, ConfigMap volume swaps, and what the service applies (engine weights, session SLOs)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from saga.clock import VirtualClock
from saga.operator.reconcile import tenantpolicy
from saga.operator.reconcile.common import Invalid
from saga.scheduler.api import InvalidInput, SessionStart, WorkflowHints
from saga.scheduler.engine import Engine
from saga.scheduler.policies.fairness.afs import AgentFairShare
from saga.scheduler.settings import EngineSettings, FairnessSettings
from saga.service.app import Service
from saga.service.config import TenantPolicySettings, TenantSettings, load_text
from saga.service.metrics import ServiceMetrics
from saga.service.tenants_reload import (
    PolicyError,
    TenantPolicy,
    TenantPolicyReloader,
    effective_tenants,
    parse_policy,
    set_engine_tenants,
)

pytestmark = pytest.mark.unit


def doc(tenant: str = "acme", weight: float = 2.0, **slo: Any) -> dict[str, Any]:
    """A policy document exactly as the operator renders it."""
    spec: dict[str, Any] = {"weight": weight, "apiKeySecretRef": {"name": "k"}}
    if slo:
        spec["slo"] = slo
    obj = {"metadata": {"name": tenant, "namespace": "ml", "uid": "u"}, "spec": spec}
    parsed = tenantpolicy.parse_spec(obj)
    assert not isinstance(parsed, Invalid)
    return tenantpolicy.policy_document(parsed, "0123456789abcdef")


def write(path: Path, value: Any) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(value if isinstance(value, str) else json.dumps(value))
    os.replace(tmp, path)


class Applied:
    def __init__(self) -> None:
        self.got: list[dict[str, TenantPolicy]] = []

    def __call__(self, policies: dict[str, TenantPolicy]) -> None:
        self.got.append(policies)


def sample(metrics: ServiceMetrics, name: str, **labels: str) -> float:
    v = metrics.registry.get_sample_value(name, labels or None)
    return 0.0 if v is None else v


def test_the_operators_document_parses() -> None:
    p = parse_policy(json.dumps(doc(weight=3, completionTimeSeconds=600, ttftSeconds=2)))
    assert p == TenantPolicy(
        "acme", 3.0, slo_s=600.0, deadline_factor=1.5, attainment_target=0.99, ttft_s=2.0
    )
    assert parse_policy(json.dumps(doc())).slo_s == 0.0  # no completion target: no fixed SLO


@pytest.mark.parametrize(
    ("mutate", "path"),
    [
        (lambda d: d.update(weight=0), "$.weight"),
        (lambda d: d.update(weight="2"), "$.weight"),
        (lambda d: d.pop("weight"), "$.weight"),
        (lambda d: d.update(tenant="has space"), "$.tenant"),
        (lambda d: d.update(weigth=2), "$.weigth"),
        (lambda d: d["slo"].update(deadline_factor=0.5), "$.slo.deadline_factor"),
        (lambda d: d["slo"].update(attainment_target=99), "$.slo.attainment_target"),
        (lambda d: d["slo"].update(completion_time_s=-1), "$.slo.completion_time_s"),
        (lambda d: d["slo"].update(ttl=1), "$.slo.ttl"),
        (lambda d: d["quotas"].update(max_active_sessions=-1), "$.quotas.max_active_sessions"),
        (lambda d: d["quotas"].update(max_kv_tokens=1.5), "$.quotas.max_kv_tokens"),
        (lambda d: d.update(slo=[]), "$.slo"),
    ],
)
def test_bad_documents_name_the_field(mutate: Any, path: str) -> None:
    d = doc()
    mutate(d)
    with pytest.raises(PolicyError) as err:
        parse_policy(json.dumps(d))
    assert path in [p for p, _ in err.value.problems], err.value.problems


def test_not_json_is_rejected() -> None:
    with pytest.raises(PolicyError, match=r"\$: not JSON"):
        parse_policy("{nope")
    with pytest.raises(PolicyError, match="must be a JSON object"):
        parse_policy("[]")


async def test_bad_policy_is_rejected_logged_counted_and_the_last_good_stays(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    metrics = ServiceMetrics(CollectorRegistry())
    applied = Applied()
    r = TenantPolicyReloader(TenantPolicySettings(directory=str(tmp_path)), applied, metrics=metrics)
    write(tmp_path / "acme.json", doc(weight=2, completionTimeSeconds=60))
    assert await r.poll()
    assert applied.got[-1]["acme"].weight == 2.0
    assert applied.got[-1]["acme"].slo_s == 60.0
    assert sample(metrics, "saga_tenant_policy_reloads_total", outcome="applied") == 1
    assert not await r.poll()  # unchanged file: nothing applied

    bad = doc(weight=2)
    bad["weight"] = -1
    write(tmp_path / "acme.json", bad)
    with caplog.at_level(logging.ERROR):
        assert not await r.poll()  # the good policy stays in force
    assert len(applied.got) == 1
    assert r.state.policies["acme"].weight == 2.0
    src = str(tmp_path / "acme.json")
    assert "$.weight: must be > 0, got -1.0" in r.state.errors[src]
    assert f"tenant policy {src} rejected (its previous policy stays in force)" in caplog.text
    assert "$.weight" in caplog.text
    assert sample(metrics, "saga_tenant_policy_reloads_total", outcome="rejected") == 1
    assert sample(metrics, "saga_tenant_policy_rejected_documents") == 1
    caplog.clear()
    with caplog.at_level(logging.ERROR):
        assert not await r.poll()
    assert caplog.text == ""  # logged and counted once per content
    assert sample(metrics, "saga_tenant_policy_reloads_total", outcome="rejected") == 1

    write(tmp_path / "acme.json", doc(weight=5))  # fixed
    assert await r.poll()
    assert applied.got[-1]["acme"].weight == 5.0
    assert r.state.errors == {}
    assert sample(metrics, "saga_tenant_policy_rejected_documents") == 0

    (tmp_path / "acme.json").unlink()  # TenantPolicy deleted: back to spec.tenants
    assert await r.poll()
    assert applied.got[-1] == {}


async def test_a_bad_first_document_contributes_nothing(tmp_path: Path) -> None:
    applied = Applied()
    write(tmp_path / "acme.json", "{")
    write(tmp_path / "beta.json", doc("beta", 3))
    r = TenantPolicyReloader(TenantPolicySettings(directory=str(tmp_path)), applied)
    assert await r.poll()
    assert set(applied.got[-1]) == {"beta"}
    assert "not JSON" in r.state.errors[str(tmp_path / "acme.json")]


async def test_mounted_configmap_swap_and_duplicates(tmp_path: Path) -> None:
    """Kubelet's layout: files are symlinks through ``..data`` to a timestamped folder."""
    applied = Applied()
    r = TenantPolicyReloader(TenantPolicySettings(directory=str(tmp_path)), applied)

    def swap(stamp: str, files: dict[str, Any]) -> None:
        d = tmp_path / f"..{stamp}"
        d.mkdir()
        for name, value in files.items():
            (d / name).write_text(json.dumps(value))
            link = tmp_path / name
            if not link.is_symlink():
                link.symlink_to(Path("..data") / name)
        (tmp_path / "..data_tmp").symlink_to(d.name)
        os.replace(tmp_path / "..data_tmp", tmp_path / "..data")

    swap("2026_01", {"acme.json": doc(weight=2), "beta.json": doc("beta", 1)})
    assert await r.poll()
    assert {t: p.weight for t, p in applied.got[-1].items()} == {"acme": 2.0, "beta": 1.0}
    assert set(r.state.sources) == {str(tmp_path / "acme.json"), str(tmp_path / "beta.json")}
    swap("2026_02", {"acme.json": doc(weight=4), "beta.json": doc("acme", 9)})
    assert await r.poll()
    # Two documents name acme: the later path wins (logged); beta has no policy any more.
    assert {t: p.weight for t, p in applied.got[-1].items()} == {"acme": 9.0}


def test_effective_tenants_override_add_and_restore() -> None:
    base = [TenantSettings("default"), TenantSettings("acme", weight=1.0, slo_s=300)]
    pol = {"acme": TenantPolicy("acme", 3.0, slo_s=60), "new": TenantPolicy("new", 0.5)}
    got = effective_tenants(base, pol)
    assert [(t.name, t.weight, t.slo_s) for t in got] == [
        ("default", 1.0, 0.0),
        ("acme", 3.0, 60.0),
        ("new", 0.5, 0.0),
    ]
    assert effective_tenants(base, {}) == base


def weight(engine: Engine, tenant: str) -> float:
    """The weight the engine's (default, agent fair share) fairness policy gives ``tenant``."""
    assert isinstance(engine.fairness, AgentFairShare)
    return engine.fairness.weight(tenant)


def test_engine_weights_and_deadline_factors_change_for_the_next_decision() -> None:
    clock = VirtualClock()
    engine = Engine(clock, EngineSettings(fairness=FairnessSettings(weights={"acme": 1.0})))
    assert weight(engine, "acme") == 1.0
    assert set_engine_tenants(engine, {"acme": 4.0, "beta": 0.5}, {"acme": 3.0})
    assert weight(engine, "acme") == 4.0
    assert weight(engine, "beta") == 0.5
    assert engine.settings.fairness.weights == {"acme": 4.0, "beta": 0.5}
    engine.handle(SessionStart("a", "acme", "swe", WorkflowHints()))
    engine.handle(SessionStart("b", "beta", "swe", WorkflowHints()))
    a, b = engine.sessions["a"], engine.sessions["b"]
    assert a.deadline == pytest.approx(3.0 * a.expected_s)  # acme's own factor
    assert b.deadline == pytest.approx(1.5 * b.expected_s)  # the engine's slo_factor
    with pytest.raises(InvalidInput, match="slo_factors"):
        engine.set_tenant_policies({}, {"acme": 0.5})
    assert engine.settings.fairness.slo_factors == {"acme": 3.0}  # unchanged by the refusal
    assert not set_engine_tenants(object(), {"acme": 1.0}, {})


def test_service_applies_policies_over_its_config() -> None:
    cfg = load_text(
        """
apiVersion: saga.dev/v1alpha1
kind: SchedulerConfig
spec:
  tenants: [{name: default}, {name: acme, weight: 2, slo_s: 300}]
  replicas: {static: [http://127.0.0.1:1]}
  engine: {fairness: {weights: {beta: 3}}}
"""
    )
    svc = Service(cfg, registry=CollectorRegistry())
    engine = svc.engine
    assert isinstance(engine, Engine)
    assert engine.settings.fairness.weights == {"default": 1.0, "acme": 2.0, "beta": 3.0}
    svc.apply_tenant_policies(
        {"acme": TenantPolicy("acme", 5.0, slo_s=60), "gamma": TenantPolicy("gamma", 0.25)}
    )
    assert engine.settings.fairness.weights == {"default": 1.0, "acme": 5.0, "beta": 3.0, "gamma": 0.25}
    acme = cfg.tenant("acme")
    assert acme is not None
    assert (acme.weight, acme.slo_s) == (5.0, 60.0)  # new sessions of acme get the new SLO
    assert cfg.tenant("gamma") is not None
    svc.apply_tenant_policies(
        {"acme": TenantPolicy("acme", 5.0, deadline_factor=2.5, attainment_target=0.9, max_active_sessions=3)}
    )
    assert engine.settings.fairness.slo_factors == {"acme": 2.5}
    acme = cfg.tenant("acme")
    assert acme is not None
    assert (acme.deadline_factor, acme.max_active_sessions) == (2.5, 3)
    target = svc.registry.get_sample_value("saga_tenant_slo_attainment_target", {"tenant": "acme"})
    assert target == 0.9
    svc.apply_tenant_policies({})  # every policy deleted: the configured values again
    assert svc.registry.get_sample_value("saga_tenant_slo_attainment_target", {"tenant": "acme"}) is None
    assert engine.settings.fairness.slo_factors == {}
    assert engine.settings.fairness.weights == {"default": 1.0, "acme": 2.0, "beta": 3.0}
    acme = cfg.tenant("acme")
    assert acme is not None
    assert acme.slo_s == 300.0
    assert cfg.tenant("gamma") is None


def test_config_section_is_validated() -> None:
    with pytest.raises(ValueError, match=r"spec.tenant_policies.poll_interval_s: must be in"):
        load_text(
            """
apiVersion: saga.dev/v1alpha1
kind: SchedulerConfig
spec:
  replicas: {static: [http://127.0.0.1:1]}
  tenant_policies: {directory: /x, poll_interval_s: 0}
"""
        )
