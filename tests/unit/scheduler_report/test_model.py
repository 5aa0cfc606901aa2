"""Result model: validation and JSON round-trip."""

from __future__ import annotations

import json
from typing import Any

import pytest

from saga.scheduler.report import ReportError, RunResult, Series, SessionOutcome, slo_met_for

pytestmark = pytest.mark.unit


def _outcome(i: int = 0, **kw: Any) -> SessionOutcome:
    base: dict[str, Any] = {
        "session_id": f"s{i}",
        "tenant": "t",
        "agent_type": "a",
        "start_s": float(i),
        "end_s": float(i) + 10.0,
        "calls": 3,
        "ttft_s": (0.1, 0.2, 0.3),
        "prompt_tokens": 300,
        "cached_tokens": 200,
        "output_tokens": 30,
        "recomputed_tokens": 10,
        "deadline_s": 15.0,
        "slo_met": True,
    }
    base.update(kw)
    return SessionOutcome(**base)


def _result(**kw: Any) -> RunResult:
    base: dict[str, Any] = {
        "system": "saga",
        "workload": "w",
        "seed": 1,
        "replicas": 2,
        "load": 0.8,
        "outcomes": (_outcome(0), _outcome(1, is_subagent=True, deadline_s=None, slo_met=None)),
        "duration_s": 100.0,
        "kv_util": {"r0": Series((0.0, 1.0), (0.5, 0.25)), "r1": Series((0.0, 1.0), (0.0, 1.0))},
        "cache_hit_rate": Series((0.0, 1.0), (0.9, 0.95)),
        "lane_replicas": Series((0.0, 1.0), (0.0, 1.0)),
        "steals": 2,
        "wall_s": 1.5,
        "meta": {"command": "x"},
    }
    base.update(kw)
    return RunResult(**base)


def test_json_round_trip_is_exact() -> None:
    r = _result()
    r.validate()
    back = RunResult.from_json(r.to_json())
    assert back == r
    assert back.outcomes[0].completion_s == 10.0


def test_slo_met_for() -> None:
    assert slo_met_for(5.0, None) is None
    assert slo_met_for(5.0, 5.0) is True
    assert slo_met_for(5.1, 5.0) is False
    assert slo_met_for(1.0, 5.0, completed=False) is False


@pytest.mark.parametrize(
    ("kw", "msg"),
    [
        ({"end_s": -1.0}, "before 'start_s'"),
        ({"cached_tokens": 1000}, "cached_tokens"),
        ({"output_tokens": -1}, "output_tokens"),
        ({"deadline_s": None}, "slo_met"),
        ({"ttft_s": (-1.0,)}, "ttft_s"),
        ({"session_id": ""}, "session_id"),
    ],
)
def test_bad_outcome_names_field(kw: dict[str, object], msg: str) -> None:
    with pytest.raises(ReportError, match=msg):
        _result(outcomes=(_outcome(0, **kw),)).validate()


def test_bad_result_fields() -> None:
    with pytest.raises(ReportError, match="duplicate"):
        _result(outcomes=(_outcome(0), _outcome(0))).validate()
    with pytest.raises(ReportError, match="replicas"):
        _result(replicas=0).validate()
    with pytest.raises(ReportError, match="duration_s"):
        _result(duration_s=0.0).validate()
    with pytest.raises(ReportError, match="outside"):
        _result(kv_util={"r": Series((0.0,), (1.5,))}).validate()
    with pytest.raises(ReportError, match="backwards"):
        _result(cache_hit_rate=Series((1.0, 0.0), (0.1, 0.2))).validate()
    with pytest.raises(ReportError, match=r"lane_replicas: value outside \[0, 2\]"):
        _result(lane_replicas=Series((0.0,), (3.0,))).validate()


def test_a_result_from_before_the_lane_series_reads_without_one() -> None:
    d = _result().to_dict()
    del d["lane_replicas"]
    assert RunResult.from_dict(d).lane_replicas == Series()


def test_from_json_errors_name_source_and_field() -> None:
    with pytest.raises(ReportError, match=r"f\.json: not JSON"):
        RunResult.from_json("{", source="f.json")
    d = _result().to_dict()
    del d["outcomes"][1]["end_s"]
    with pytest.raises(ReportError, match=r"outcomes\[1\]: missing field 'end_s'"):
        RunResult.from_json(json.dumps(d))
    d = _result().to_dict()
    d["version"] = 99
    with pytest.raises(ReportError, match="version"):
        RunResult.from_dict(d)
