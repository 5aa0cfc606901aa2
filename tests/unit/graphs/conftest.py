"""Shared fixtures of the graphs unit tests."""

from __future__ import annotations

from pathlib import Path

import pytest

TRACES = Path(__file__).resolve().parents[3].parent / "shared" / "traces"


@pytest.fixture
def traces_dir() -> Path:
    if not TRACES.is_dir():
        pytest.skip(f"public traces not present at {TRACES}")
    return TRACES
