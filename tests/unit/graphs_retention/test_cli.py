"""``saga graphs eval`` end to end on a small synthetic trace file (always runs) and, when the
public traces are present, on a slice of the Claude Code traces."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from saga.cli import main

pytestmark = pytest.mark.unit
TRACES = Path(__file__).resolve().parents[3].parent / "shared" / "traces"


def write_weka(path: Path, n_sessions: int = 12) -> None:
    lines = []
    for s in range(n_sessions):
        reqs = []
        hashes: list[int] = []
        for i in range(6):
            hashes = hashes + [len(hashes) + k for k in range(3)]
            reqs.append(
                {
                    "t": 10.0 * i + s,
                    "type": "n",
                    "in": 64 * len(hashes),
                    "out": 10,
                    "hash_ids": list(hashes),
                    "stop": "tool_use" if i < 5 else "end_turn",
                    "api_time": 1.0,
                }
            )
        lines.append(json.dumps({"id": f"trace_{s:04d}", "block_size": 64, "requests": reqs}))
    path.write_text("\n".join(lines) + "\n")


def test_eval_writes_table_json_and_png(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    trace = tmp_path / "t.jsonl"
    write_weka(trace)
    out_json, out_png = tmp_path / "r.json", tmp_path / "r.png"
    rc = main(
        [
            "graphs",
            "eval",
            str(trace),
            "--capacity",
            "0.1,0.5",
            "--json",
            str(out_json),
            "--png",
            str(out_png),
            "--sessions-alive",
            "4",
        ]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    assert "| 10% | saga |" in printed
    assert "| 50% | oracle |" in printed
    doc = json.loads(out_json.read_text())
    rows = {(r["capacity"], r["policy"]): r for r in doc["rows"]}
    assert {p for _, p in rows} == {"oracle", "lru", "ttl", "weighted", "saga"}
    for cap in (0.1, 0.5):
        oracle = rows[(cap, "oracle")]["recomputed_tokens"]
        assert rows[(cap, "oracle")]["oracle_ratio"] == 1.0
        assert all(rows[(cap, p)]["recomputed_tokens"] >= oracle for p in ("lru", "ttl", "weighted", "saga"))
    # per held-out fold (2 by default): recomputed tokens add up to the total
    saga = rows[(0.1, "saga")]
    assert len(saga["gap_closed_by_fold"]) == 2
    assert sum(saga["recomputed_by_fold"]) == saga["recomputed_tokens"]
    assert out_png.stat().st_size > 1000
    assert doc["settings"]["saga"]["step_bins"] == "auto"  # the default, recorded with the results
    # the bare flag still means "on"; the choice is recorded
    assert main(["graphs", "eval", str(trace), "--capacity", "0.1", "--policies", "saga", "--saga-step-bins",
                 "--sessions-alive", "4", "--json", str(out_json)]) == 0  # fmt: skip
    assert json.loads(out_json.read_text())["settings"]["saga"]["step_bins"] == "on"


def test_eval_rejects_bad_arguments(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    trace = tmp_path / "t.jsonl"
    write_weka(trace, 2)
    with pytest.raises(SystemExit):
        main(["graphs", "eval", str(trace), "--policies", "lru,nope"])
    with pytest.raises(SystemExit):
        main(["graphs", "eval", str(trace), "--capacity", "0,-1"])
    for sigma in ("-1", "x"):  # refused before any replay
        with pytest.raises(SystemExit):
            main(["graphs", "eval", str(trace), "--policies", "informed", "--informed-sigma", sigma])
    assert "informed-sigma" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["graphs", "eval", str(trace), "--saga-step-bins", "always"])
    assert "--saga-step-bins" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{not json\n")
    assert main(["graphs", "eval", str(bad)]) == 2
    assert "bad.jsonl" in capsys.readouterr().err


@pytest.mark.skipif(not (TRACES / "mooncake_synthetic_trace.jsonl").exists(), reason="public traces absent")
def test_eval_on_public_mooncake_synthetic(tmp_path: Path) -> None:
    out_json = tmp_path / "m.json"
    trace = str(TRACES / "mooncake_synthetic_trace.jsonl")
    assert (
        main(
            [
                "graphs",
                "eval",
                trace,
                "--capacity",
                "0.1",
                "--policies",
                "oracle,lru,saga",
                "--json",
                str(out_json),
            ]
        )
        == 0
    )
    rows = {r["policy"]: r for r in json.loads(out_json.read_text())["rows"]}
    assert rows["oracle"]["recomputed_tokens"] <= rows["lru"]["recomputed_tokens"]
    assert rows["oracle"]["recomputed_tokens"] <= rows["saga"]["recomputed_tokens"]
