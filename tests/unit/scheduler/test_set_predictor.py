"""``Engine.set_predictor``: a new predictor is asked from the next decision on (graph hot reload)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from saga.graphs.api import RemainingWork, SessionPosition
from saga.scheduler.api import SessionStart
from saga.scheduler.engine import Engine
from saga.scheduler.priors import PriorPredictor

pytestmark = pytest.mark.unit


class Counting(PriorPredictor):
    def __init__(self, expected_s: float) -> None:
        super().__init__()
        self.asked: list[str] = []
        self.expected_s = expected_s

    def remaining(self, pos: SessionPosition) -> RemainingWork:
        self.asked.append(pos.agent_type)
        return RemainingWork(1.0, 100.0, 10.0, self.expected_s, 0.5)


def test_new_predictor_is_used_for_later_sessions(make_engine: Callable[..., Engine]) -> None:
    e = make_engine(replicas=1)
    old, new = Counting(5.0), Counting(50.0)
    e.set_predictor(old)
    e.handle(SessionStart("s1", "t", "a"))
    e.set_predictor(new)
    e.handle(SessionStart("s2", "t", "b"))
    assert old.asked == ["a"]
    assert new.asked == ["b"]
    assert e.sessions["s1"].expected_s == 5.0
    assert e.sessions["s2"].expected_s == 50.0


def test_none_restores_the_builtin_prior(make_engine: Callable[..., Engine]) -> None:
    e = make_engine(replicas=1)
    e.set_predictor(Counting(5.0))
    e.set_predictor(None)
    assert e.predictor is e.prior
