"""WEKA Claude Code trace ingestion: mapping, namespacing, sub-agents and bad input."""

from __future__ import annotations

import json
import lzma
from pathlib import Path
from typing import Any

import pytest

from saga.graphs.ingest.weka import AGENT_TYPE, namespace_of, read_weka_traces
from saga.graphs.trace import TOOL_HUMAN, TOOL_UNKNOWN, TraceError

pytestmark = pytest.mark.unit


def _req(t: float, stop: str, think: float | None, n_hash: int = 3, api: float = 2.0) -> dict[str, Any]:
    r: dict[str, Any] = {
        "t": t,
        "type": "n",
        "model": "m",
        "in": 64 * n_hash,
        "out": 10,
        "hash_ids": list(range(1, n_hash + 1)),
        "stop": stop,
        "api_time": api,
    }
    if think is not None:
        r["think_time"] = think
    return r


def _trace(tid: str = "trace_0001") -> dict[str, Any]:
    sub = {
        "t": 30.0,
        "type": "subagent",
        "agent_id": "agent_001",
        "subagent_type": "Explore",
        "duration_ms": 8000,
        "tool_tokens": 7,
        "system_tokens": 3,
        "requests": [_req(0.0, "tool_use", 0.0, 2), _req(4.0, "end_turn", 2.0, 2)],
    }
    return {
        "id": tid,
        "block_size": 64,
        "hash_id_scope": "local",
        "tool_tokens": 100,
        "system_tokens": 20,
        "requests": [
            _req(0.0, "tool_use", 0.0),
            _req(10.0, "tool_use", 8.0),
            sub,
            _req(40.0, "end_turn", 7.5),
            _req(400.0, "tool_use", None),  # no think_time: derived from t and api_time
        ],
    }


def _write(tmp_path: Path, lines: list[str], name: str = "t.jsonl") -> Path:
    p = tmp_path / name
    p.write_text("\n".join(lines) + "\n")
    return p


def test_maps_calls_gaps_and_subagents(tmp_path: Path) -> None:
    p = _write(tmp_path, [json.dumps(_trace())])
    res = read_weka_traces(p)
    assert res.skipped == 0
    (s,) = res.sessions
    assert s.session_id == "trace_0001"
    assert s.agent_type == AGENT_TYPE
    assert s.block_size == 64
    assert s.shared_prefix_tokens == 120
    assert [c.start_s for c in s.calls] == [0.0, 10.0, 40.0, 400.0]
    assert [c.stop for c in s.calls] == ["tool_use", "tool_use", "end_turn", "tool_use"]
    assert [t.name for t in s.tools] == [TOOL_UNKNOWN, TOOL_UNKNOWN, TOOL_HUMAN]
    assert [t.after_call for t in s.tools] == [0, 1, 2]
    assert s.tools[0].start_s == pytest.approx(2.0)
    assert s.tools[0].end_s == 10.0
    # derived gap: 400 - (40 + 2) = 358 s
    assert s.tools[2].duration_s == pytest.approx(358.0)
    (sub,) = s.subagents
    assert sub.start_s == pytest.approx(22.0)  # marker t 30 − 8 s duration
    assert sub.after_call == 1  # last parent call started before 22 s
    assert sub.session.agent_type == f"{AGENT_TYPE}/Explore"
    assert sub.session.parent_id == "trace_0001"
    assert sub.session.session_id == "trace_0001/agent_001"
    assert sub.session.shared_prefix_tokens == 10
    assert s.total_calls == 6


def test_hash_ids_namespaced_per_trace(tmp_path: Path) -> None:
    p = _write(tmp_path, [json.dumps(_trace("a")), json.dumps(_trace("b"))])
    a, b = read_weka_traces(p).sessions
    assert a.calls[0].block_hashes[0] != b.calls[0].block_hashes[0]
    assert a.calls[0].block_hashes[0] == (namespace_of("a") << 32) | 1
    assert all(0 <= h < 2**63 for h in a.calls[0].block_hashes)
    # the sub-agent shares its parent's namespace
    assert a.subagents[0].session.calls[0].block_hashes[0] == a.calls[0].block_hashes[0]


def test_reads_xz(tmp_path: Path) -> None:
    p = tmp_path / "t.jsonl.xz"
    with lzma.open(p, "wt") as f:
        f.write(json.dumps(_trace()) + "\n")
    assert len(read_weka_traces(p).sessions) == 1


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda d: d["requests"][1].pop("in"), "requests[1].in"),
        (lambda d: d["requests"][1].__setitem__("out", "x"), "requests[1].out"),
        (lambda d: d["requests"][3].__setitem__("t", 5.0), "requests[3].t"),
        (lambda d: d["requests"][0].__setitem__("hash_ids", [1, "a"]), "requests[0].hash_ids"),
        (lambda d: d["requests"][0].__setitem__("hash_ids", [-1]), "requests[0].hash_ids"),
        (lambda d: d["requests"][2]["requests"][0].pop("t"), "requests[2].requests[0].t"),
        (lambda d: d.pop("id"), "id"),
    ],
)
def test_bad_fields_name_file_line_field(tmp_path: Path, mutate: Any, field: str) -> None:
    bad = _trace("bad")
    mutate(bad)
    p = _write(tmp_path, [json.dumps(_trace()), json.dumps(bad)])
    with pytest.raises(TraceError) as ei:
        read_weka_traces(p)
    assert ei.value.file == str(p)
    assert ei.value.line == 2
    assert ei.value.field_name == field
    res = read_weka_traces(p, skip_bad=True)
    assert len(res.sessions) == 1
    assert res.skipped == 1
    assert len(res.errors) == 1


def test_bad_json_line(tmp_path: Path) -> None:
    p = _write(tmp_path, [json.dumps(_trace()), "{not json", json.dumps(_trace("c"))])
    with pytest.raises(TraceError, match="line 2"):
        read_weka_traces(p)
    res = read_weka_traces(p, skip_bad=True)
    assert [s.session_id for s in res.sessions] == ["trace_0001", "c"]
    assert res.skipped == 1


def test_dev_traces(traces_dir: Path) -> None:
    res = read_weka_traces(traces_dir / "weka_cc_traces.dev.jsonl.xz")
    assert res.skipped == 0
    assert len(res.sessions) == 471
    assert sum(s.total_calls for s in res.sessions) == 32357


def test_a_sessions_calls_share_one_int_object_per_hash(tmp_path: Path) -> None:
    """Memory: a long session's calls repeat their prefix; each hash is one object, not one per call."""
    p = _write(tmp_path, [json.dumps(_trace())])
    (s,) = read_weka_traces(p).sessions
    first, second = s.calls[0].block_hashes, s.calls[1].block_hashes
    assert first == second[: len(first)]
    assert all(a is b for a, b in zip(first, second, strict=False))
