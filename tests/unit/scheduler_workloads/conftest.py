from __future__ import annotations

import pytest

from saga.scheduler.workloads.sources import default_weka_path, traces_dir


@pytest.fixture(scope="session")
def weka_path() -> str:
    p = default_weka_path()
    if p is None:
        pytest.skip("../shared/traces/weka_cc_traces.dev.jsonl.xz is absent (set SAGA_TRACES_DIR)")
    return str(p)


@pytest.fixture(scope="session")
def servegen_path() -> str:
    d = traces_dir()
    if d is None or not (d / "servegen_client_arrivals.csv.gz").is_file():
        pytest.skip("../shared/traces/servegen_client_arrivals.csv.gz is absent (set SAGA_TRACES_DIR)")
    return str(d / "servegen_client_arrivals.csv.gz")
