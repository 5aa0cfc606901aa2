"""Held-out calibration: stable split, and a model of the true workflow scores near nominal."""

from __future__ import annotations

import pytest

from saga.graphs import synthetic
from saga.graphs.aeg import GraphSet, build_graphs
from saga.graphs.calibration import continuation_base_rate, evaluate, is_test, split
from saga.graphs.predict import AEGPredictor

pytestmark = pytest.mark.unit


def test_split_is_stable_and_proportional() -> None:
    ss = synthetic.sessions(800, seed=4)
    train, test = split(ss, 0.25)
    assert len(train) + len(test) == 800
    assert 0.2 < len(test) / 800 < 0.3
    assert all(is_test(s.session_id, 0.25) for s in test)
    assert split(ss, 0.25)[1] == test


def test_trained_model_is_calibrated_and_beats_priors() -> None:
    train, test = split(synthetic.sessions(1600, seed=9), 0.25)
    base = continuation_base_rate(train)
    rows = evaluate(AEGPredictor(build_graphs(train)), test, base_rate=base, elapsed_s=(0.0, 1.0))
    r0 = rows[0]
    assert r0.coverage_50 == pytest.approx(0.5, abs=0.06)
    assert r0.coverage_90 == pytest.approx(0.9, abs=0.04)
    assert r0.brier_skill > 0.1
    prior = evaluate(AEGPredictor(GraphSet()), test, base_rate=base, elapsed_s=(0.0,))[0]
    assert r0.pinball_log10 < prior.pinball_log10
    assert r0.brier < prior.brier
