"""Mooncake ingestion: prefix-chained conversations, per-request grouping and bad input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from saga.graphs.ingest.mooncake import BLOCK_SIZE, read_mooncake
from saga.graphs.trace import TOOL_HUMAN, TraceError

pytestmark = pytest.mark.unit


def _r(ts: int, hashes: list[int], out: int = 5) -> dict[str, Any]:
    return {
        "timestamp": ts,
        "input_length": BLOCK_SIZE * len(hashes) - 10,
        "output_length": out,
        "hash_ids": hashes,
    }


def _write(tmp_path: Path, recs: list[Any]) -> Path:
    p = tmp_path / "m.jsonl"
    p.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in recs))
    return p


def test_chains_conversations_by_prefix(tmp_path: Path) -> None:
    recs = [
        _r(0, [0, 1, 2]),  # conv A turn 1 (block 0 = shared system prompt)
        _r(0, [0, 10, 11]),  # conv B turn 1
        _r(3000, [0, 1, 2, 3, 4]),  # A turn 2 (extends A's full blocks [0, 1])
        _r(3000, [0, 20]),  # C: shares only the system prompt with A/B -> new conversation
        _r(6000, [0, 10, 11, 12]),  # B turn 2
        _r(9000, [0, 1, 2, 3, 4, 5]),  # A turn 3
        _r(9000, [0, 1, 2, 3, 9]),  # regenerated A turn 3 (A's tail already continued) -> new
    ]
    res = read_mooncake(_write(tmp_path, recs))
    sizes = sorted(len(s.calls) for s in res.sessions)
    assert sizes == [1, 1, 2, 3]
    a = max(res.sessions, key=lambda s: len(s.calls))
    assert [c.start_s for c in a.calls] == [0.0, 3.0, 9.0]
    assert a.start_s == 0.0
    assert [t.name for t in a.tools] == [TOOL_HUMAN, TOOL_HUMAN]
    assert a.tools[1].duration_s == pytest.approx(6.0)
    assert a.block_size == BLOCK_SIZE
    assert a.attributes["grouping"] == "chain"
    assert sum(len(s.calls) for s in res.sessions) == len(recs)  # nothing dropped


def test_request_grouping(tmp_path: Path) -> None:
    res = read_mooncake(_write(tmp_path, [_r(0, [0, 1]), _r(1000, [0, 1, 2])]), grouping="request")
    assert [len(s.calls) for s in res.sessions] == [1, 1]
    assert res.sessions[1].start_s == 1.0
    assert res.sessions[1].calls[0].block_hashes == (0, 1, 2)


@pytest.mark.parametrize(
    ("rec", "field"),
    [
        ({"timestamp": 5, "output_length": 1, "hash_ids": []}, "input_length"),
        ({"timestamp": -1, "input_length": 5, "output_length": 1, "hash_ids": []}, "timestamp"),
        ({"timestamp": 0, "input_length": 5, "output_length": 1, "hash_ids": []}, "timestamp"),  # backwards
        ({"timestamp": 9, "input_length": 5, "output_length": 1, "hash_ids": [1, 2, 3]}, "hash_ids"),
        ({"timestamp": 9, "input_length": 5, "output_length": 1, "hash_ids": ["x"]}, "hash_ids"),
    ],
)
def test_bad_records(tmp_path: Path, rec: dict[str, Any], field: str) -> None:
    p = _write(tmp_path, [_r(1, [0]), rec, _r(10, [7])])
    with pytest.raises(TraceError) as ei:
        read_mooncake(p)
    assert (ei.value.file, ei.value.line, ei.value.field_name) == (str(p), 2, field)
    res = read_mooncake(p, skip_bad=True)
    assert res.skipped == 1
    assert sum(len(s.calls) for s in res.sessions) == 2


def test_public_traces(traces_dir: Path) -> None:
    for name, n in (("mooncake_conversation_trace.jsonl", 12031), ("mooncake_synthetic_trace.jsonl", 3993)):
        res = read_mooncake(traces_dir / name)
        assert sum(len(s.calls) for s in res.sessions) == n
        assert any(len(s.calls) > 5 for s in res.sessions)
