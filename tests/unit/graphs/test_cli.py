"""``saga graphs build`` and ``saga graphs show`` end to end on a synthetic event log."""

from __future__ import annotations

from pathlib import Path

import pytest

from saga.cli import main
from saga.graphs import synthetic
from saga.graphs.aeg import GraphSet
from saga.graphs.ingest import eventlog as ev

pytestmark = pytest.mark.unit


def _log(tmp_path: Path) -> Path:
    p = tmp_path / "events.jsonl"
    lines = [ev.encode(r) for s in synthetic.sessions(40, seed=2) for r in ev.session_to_events(s)]
    p.write_text("".join(lines))
    return p


def test_build_and_show(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "graph.json"
    assert main(["graphs", "build", str(_log(tmp_path)), "-o", str(out)]) == 0
    gs = GraphSet.from_json(out.read_text())
    assert "wf" in gs.agent_types()
    assert "read 40 sessions" in capsys.readouterr().out
    png = tmp_path / "g.png"
    assert main(["graphs", "show", str(out), "--png", str(png)]) == 0
    text = capsys.readouterr().out
    assert "agent type 'wf'" in text
    assert "→ bash" in text
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    svg = tmp_path / "g.svg"
    assert main(["graphs", "show", str(out), "--svg", str(svg)]) == 0
    assert "<svg" in svg.read_text()


def test_build_reports_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = _log(tmp_path)
    log.write_text(log.read_text() + '{"v": 1, "type": "llm_call"\n')
    out = tmp_path / "graph.json"
    assert main(["graphs", "build", str(log), "-o", str(out)]) == 1
    assert "line" in capsys.readouterr().err
    assert main(["graphs", "build", str(log), "-o", str(out), "--skip-bad"]) == 0
    assert "skipped 1 bad record" in capsys.readouterr().out


def test_show_rejects_bad_document(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = tmp_path / "g.json"
    p.write_text('{"kind": "other"}')
    assert main(["graphs", "show", str(p)]) == 1
    assert "kind" in capsys.readouterr().err
