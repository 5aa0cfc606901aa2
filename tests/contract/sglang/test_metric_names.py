"""The ``sglang:*`` metric names SAGA exposes (emulator) and reads (pool, bench, dashboards)
exist in SGLang itself.

SGLang's metrics module imports its GPU stack, so the names are read from the pinned release's
source text (every ``"sglang:<name>"`` literal in the wheel) rather than from a running
server. Counters compare without ``_total`` (prometheus_client adds it on exposition, and
SGLang spells some counters with it). A name only the emulator has is allowed when it says so
in its help text ("emulator-specific").
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from saga.bench.replay import COUNTERS
from saga.emulator.core import ReplicaConfig, ReplicaModel
from saga.emulator.metrics import ReplicaMetrics

pytestmark = pytest.mark.contract
ROOT = Path(__file__).resolve().parents[3]
NAME = re.compile(r"sglang:[a-z][a-z0-9_]*")


def _base(name: str) -> str:
    """A family's name as SGLang's source spells it: no ``_total`` and no ``_created`` (the
    samples prometheus_client adds to counters and histograms)."""
    return name.removesuffix("_created").removesuffix("_total")


@pytest.fixture(scope="module")
def sglang_names(sglang_wheel: zipfile.ZipFile) -> set[str]:
    names: set[str] = set()
    for member in sglang_wheel.namelist():
        if member.endswith(".py"):
            text = sglang_wheel.read(member).decode("utf-8", "replace")
            names.update(_base(m) for m in re.findall(r'"(sglang:[a-z][a-z0-9_]*)"', text))
    assert "sglang:num_running_reqs" in names  # the scan found SGLang's metrics at all
    return names


def test_emulator_exposes_only_sglang_names(sglang_names: set[str]) -> None:
    text = ReplicaMetrics(ReplicaModel(ReplicaConfig())).exposition().decode()
    families = list(text_string_to_metric_families(text))
    assert len(families) >= 10
    unknown = [
        f.name
        for f in families
        if f.name.startswith("sglang:")
        and _base(f.name) not in sglang_names
        and "emulator-specific" not in f.documentation
    ]
    assert not unknown, f"not in SGLang: {unknown}"


def test_names_saga_reads_exist_in_sglang(sglang_names: set[str]) -> None:
    read = {_base(n) for n in COUNTERS} | {"sglang:token_usage"}
    for folder in ("deploy", "docs"):
        for path in (ROOT / folder).rglob("*"):
            if path.suffix in {".json", ".yaml", ".yml", ".md"} and path.is_file():
                read.update(_base(n) for n in NAME.findall(path.read_text(errors="replace")))
    read -= {"sglang:v0", "sglang:num_open_sessions"}  # a URL fragment; the emulator's own gauge
    missing = sorted(n for n in read if n not in sglang_names)
    assert not missing, f"SAGA reads metrics SGLang does not have: {missing}"
