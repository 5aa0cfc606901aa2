"""Placement weighs the slowdown it imposes by deadline urgency (``cost.urgency_weighting``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest

from saga.clock import VirtualClock
from saga.scheduler.api import (
    CallCompleted,
    CallSubmitted,
    Dispatch,
    InvalidInput,
    Prompt,
    SessionStart,
    Usage,
)
from saga.scheduler.engine import Engine
from saga.scheduler.engine_parts import MIN_SLACK
from saga.scheduler.settings import CostModel, EngineSettings, FairnessSettings, LaneSettings

pytestmark = pytest.mark.unit

FACTORS = {"inter": 1.5, "std": 2.0, "batch": 3.0}


def _settings(weighting: bool = True, factors: dict[str, float] | None = None) -> EngineSettings:
    return EngineSettings(
        fairness=FairnessSettings(slo_factors=dict(FACTORS if factors is None else factors)),
        lanes=LaneSettings(enabled=False),
        cost=CostModel(urgency_weighting=weighting),
    )


def _dispatched(acts: Sequence[object]) -> dict[str, str]:
    return {a.call_id: a.replica_id for a in acts if isinstance(a, Dispatch)}


def _two_busy_replicas(e: Engine, tenants: tuple[str, str] = ("inter", "batch")) -> None:
    """r0 decodes a call of ``tenants[0]``, r1 an identical call of ``tenants[1]``."""
    for i, tenant in enumerate(tenants):
        e.handle(SessionStart(f"busy{i}", tenant, "x"))
        acts = e.handle(CallSubmitted(f"busy{i}", f"busy{i}", Prompt(20_000), 500))
        assert _dispatched(acts) == {f"busy{i}": f"r{i}"}


def test_a_loose_deadline_call_keeps_off_the_replica_decoding_a_tight_one(
    make_engine: Callable[..., Engine],
) -> None:
    e = make_engine(replicas=2, settings=_settings())
    _two_busy_replicas(e)
    e.handle(SessionStart("b", "batch", "x"))
    assert _dispatched(e.handle(CallSubmitted("b1", "b", Prompt(20_000), 500))) == {"b1": "r1"}
    assert e.check_invariants() == []


def test_without_weighting_the_two_replicas_tie_and_the_first_wins(
    make_engine: Callable[..., Engine],
) -> None:
    e = make_engine(replicas=2, settings=_settings(weighting=False))
    _two_busy_replicas(e)
    e.handle(SessionStart("b", "batch", "x"))
    assert _dispatched(e.handle(CallSubmitted("b1", "b", Prompt(20_000), 500))) == {"b1": "r0"}


def test_one_deadline_factor_places_as_without_weighting(make_engine: Callable[..., Engine]) -> None:
    same = {"inter": 2.0, "batch": 2.0}
    e = make_engine(replicas=2, settings=_settings(factors=same))
    _two_busy_replicas(e)
    e.handle(SessionStart("b", "batch", "x"))
    assert _dispatched(e.handle(CallSubmitted("b1", "b", Prompt(20_000), 500))) == {"b1": "r0"}


def test_in_flight_urgency_follows_dispatch_and_completion(
    make_engine: Callable[..., Engine], clock: VirtualClock
) -> None:
    e = make_engine(replicas=1, slots=8, settings=_settings(factors={**FACTORS, "strict": 1.0}))
    expected = {"inter": 4.0, "std": 1.0, "batch": 0.25, "strict": MIN_SLACK**-2, "other": 4.0}
    for tenant, u in expected.items():  # "other": the default factor 1.5
        e.handle(SessionStart(tenant, tenant, "x"))
        e.handle(CallSubmitted(f"c-{tenant}", tenant, Prompt(100), 10))
        assert e.calls[f"c-{tenant}"].urgency == pytest.approx(u)
    r = e.replicas["r0"]
    assert r.inflight_urgency == pytest.approx(sum(expected.values()))
    assert e.check_invariants() == []
    clock.advance(1)
    for tenant in expected:
        e.handle(CallCompleted(f"c-{tenant}", Usage(100, 0, 10)))
        assert e.check_invariants() == []
    assert r.inflight_urgency == 0.0


@pytest.mark.parametrize("power", [-1.0, 8.5, float("nan")])
def test_a_bad_urgency_power_is_refused(power: float) -> None:
    with pytest.raises(InvalidInput, match="urgency_power"):
        EngineSettings(cost=CostModel(urgency_power=power)).validate()


def test_power_zero_weighs_every_tenant_alike(make_engine: Callable[..., Engine]) -> None:
    st = EngineSettings(
        fairness=FairnessSettings(slo_factors=dict(FACTORS)),
        lanes=LaneSettings(enabled=False),
        cost=CostModel(urgency_power=0.0),
    )
    e = make_engine(replicas=2, settings=st)
    _two_busy_replicas(e)
    e.handle(SessionStart("b", "batch", "x"))
    assert _dispatched(e.handle(CallSubmitted("b1", "b", Prompt(20_000), 500))) == {"b1": "r0"}
