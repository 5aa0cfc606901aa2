"""``saga run`` end to end: emulated cluster on loopback, agent sessions, printed summary."""

from __future__ import annotations

import pytest

from saga.cli import main

pytestmark = pytest.mark.integration


def test_saga_run_prints_a_summary(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["run", "--sessions", "3", "--calls", "3", "--max-tokens", "16", "--time-scale", "50"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "sessions                                3" in out
    assert "LLM calls                               9" in out
    line = next(ln for ln in out.splitlines() if ln.startswith("cache hit rate"))
    rate = float(line.split()[-1].rstrip("%"))
    assert rate > 50.0  # multi-turn prompts re-use their prefix within each session
