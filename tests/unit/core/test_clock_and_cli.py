"""The injected clocks and the ``saga`` command dispatcher."""

from __future__ import annotations

import pytest

from saga.cli import build_parser, main
from saga.clock import MonotonicClock, VirtualClock

pytestmark = pytest.mark.unit


def test_virtual_clock_moves_only_when_told() -> None:
    clock = VirtualClock(start=5.0)
    assert clock.now() == 5.0
    clock.advance(2.5)
    assert clock.now() == 7.5
    clock.advance_to(10.0)
    assert clock.now() == 10.0


def test_virtual_clock_refuses_to_go_backwards() -> None:
    clock = VirtualClock(start=3.0)
    with pytest.raises(ValueError, match="backwards"):
        clock.advance_to(2.0)


def test_monotonic_clock_scale() -> None:
    clock = MonotonicClock(scale=10.0)
    assert clock.to_wall(20.0) == pytest.approx(2.0)
    t0 = clock.now()
    assert clock.now() >= t0
    with pytest.raises(ValueError, match="scale"):
        MonotonicClock(scale=0)


def test_cli_without_command_prints_help_and_fails(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "usage: saga" in capsys.readouterr().out


def test_cli_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["--version"])
    assert exc.value.code == 0
    assert "saga 0.1.0" in capsys.readouterr().out
