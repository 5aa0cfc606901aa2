"""Placement amortised over a session's expected later calls (``affinity.amortize_calls``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pytest

from saga.scheduler.policies.placement.saga import SagaPlacement
from saga.scheduler.policy import PlacementRequest
from saga.scheduler.settings import AffinitySettings

pytestmark = pytest.mark.unit

PROMPT, NEW = 8_000, 400


@dataclass
class View:
    """A replica as the engine would account it: ``b`` calls of ``per_call`` tokens in flight."""

    replica_id: str
    b: int
    holds_prompt: bool
    per_call: int = 16_000
    max_running: int = 256
    kv_total: int = 4_000_000
    queued_count: int = 0
    reported_waiting: int = 0
    call_s: float = 5.0

    @property
    def inflight_count(self) -> int:
        return self.b

    @property
    def inflight_tokens(self) -> int:
        return self.b * self.per_call

    @property
    def inflight_urgency(self) -> float:
        return float(self.b)  # every call of urgency 1, as the requests below

    @property
    def committed_tokens(self) -> int:
        return self.inflight_tokens

    @property
    def load(self) -> float:
        return 0.3  # below the affinity load bound: only the cost decides

    def cached_prefix_tokens(self, block_hashes: Sequence[int], block_size: int) -> int:
        return PROMPT if self.holds_prompt else 0

    def est_wait_s(self, need_tokens: int = 0) -> float:
        return 0.0


def _request(remaining_calls: float) -> PlacementRequest:
    return PlacementRequest(
        "c", "s", "t", "a", PROMPT, NEW, block_hashes=(1,), block_size=16, home="r0",
        remaining_calls=remaining_calls,
    )  # fmt: skip


def _busy_home(p: SagaPlacement) -> list[View]:
    """The first load of the home at which one call's decode saving elsewhere does not pay
    the move's recompute, but six calls' savings do (found with the policy's own cost model)."""
    idle = View("r1", 0, holds_prompt=False)
    req = _request(0.0)
    margin = p.affinity.move_margin
    for b in range(1, 400):
        home = View("r0", b, holds_prompt=True)
        saving = p.bound_s(req, home) - p.bound_s(req, idle)
        recompute = p.prefix_s(req, idle)
        one = p.bound_s(req, home) <= margin * (p.bound_s(req, idle) + recompute)
        six = 6 * p.bound_s(req, home) > margin * (6 * p.bound_s(req, idle) + recompute)
        if saving > 0 and one and six:
            return [home, idle]
    raise AssertionError("no such load under the default cost model")


def test_off_by_default_a_session_stays_home_for_a_marginal_saving() -> None:
    p = SagaPlacement()
    assert p.affinity.amortize_calls == 0.0
    views = _busy_home(p)
    assert p.select(_request(remaining_calls=50.0), views) == "r0"
    assert p.last_reason == "affinity"


def test_amortised_a_long_session_moves_and_a_last_call_stays() -> None:
    p = SagaPlacement(affinity=AffinitySettings(amortize_calls=5.0))
    views = _busy_home(p)
    assert p.select(_request(remaining_calls=50.0), views) == "r1"  # capped at 5 later calls
    assert p.last_reason == "cost"
    assert p.select(_request(remaining_calls=0.0), views) == "r0"  # nothing to amortise over


def test_a_negative_amortize_calls_is_refused_naming_the_field() -> None:
    from saga.scheduler.api import InvalidInput
    from saga.scheduler.settings import EngineSettings

    bad = EngineSettings(affinity=AffinitySettings(amortize_calls=-1.0))
    with pytest.raises(InvalidInput, match=r"settings\.affinity\.amortize_calls: must be a finite"):
        bad.validate()
