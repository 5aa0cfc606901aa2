"""Format detection and the multi-file reader."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from saga.graphs.ingest import detect_format, read_traces
from saga.graphs.ingest import eventlog as ev
from saga.graphs.trace import TraceError

pytestmark = pytest.mark.unit


def test_detects_each_format(tmp_path: Path) -> None:
    weka = tmp_path / "w.jsonl.gz"
    with gzip.open(weka, "wt") as f:
        req = {"t": 0, "in": 64, "out": 1, "hash_ids": [1], "stop": "", "api_time": 1}
        f.write(json.dumps({"id": "tr", "block_size": 64, "requests": [req]}) + "\n")
    moon = tmp_path / "m.jsonl"
    moon.write_text(
        json.dumps({"timestamp": 0, "input_length": 9, "output_length": 1, "hash_ids": [4]}) + "\n"
    )
    log = tmp_path / "e.jsonl"
    log.write_text(
        ev.encode(ev.session_start("s", 0.0, agent_type="a"))
        + ev.encode(ev.llm_call("s", 0.0, duration_s=1, prompt_tokens=1, output_tokens=1))
    )
    otel = tmp_path / "o.json"
    otel.write_text(json.dumps({"resourceSpans": []}, indent=2))
    assert [detect_format(p) for p in (weka, moon, log, otel)] == ["weka", "mooncake", "eventlog", "otel"]
    seen: list[str] = []
    res = read_traces([weka, moon, log, otel], progress=seen.append)
    assert [s.agent_type for s in res.sessions] == ["claude-code", "mooncake", "a"]
    assert len(seen) == 4


def test_unknown_and_empty(tmp_path: Path) -> None:
    p = tmp_path / "x.csv"
    p.write_text("a,b\n1,2\n")
    with pytest.raises(TraceError, match="unknown trace format"):
        read_traces([p])
    e = tmp_path / "empty.jsonl"
    e.write_text("")
    with pytest.raises(TraceError, match="empty"):
        detect_format(e)


def test_skip_bad_counts_across_files(tmp_path: Path) -> None:
    a = tmp_path / "a.jsonl"
    a.write_text(
        json.dumps({"timestamp": 0, "input_length": 9, "output_length": 1, "hash_ids": [4]}) + "\n{broken\n"
    )
    res = read_traces([a, a], skip_bad=True)
    assert res.skipped == 2
    assert len(res.sessions) == 2
    assert len(res.errors) == 2
