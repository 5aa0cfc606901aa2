"""``bench/gpu/run.sh`` end to end, with SAGA's emulator standing in for SGLang.

The script runs unattended on a GPU machine whose time is scarce, so its plumbing is checked
here: a stand-in ``sglang`` package (delivered as an ``OFFLINE_BUNDLE`` part, as on a GPU
machine without a package index, and unpacked by the script first on ``PYTHONPATH``) answers
``launch_server --help`` with the flags the script probes for and otherwise starts one emulated
replica on the port and KV-event endpoint the script passes, exactly as it would start
SGLang. The run shares one "GPU" between two replicas (``REPLICAS_PER_GPU=2``: started one after
the other with cumulative memory fractions), runs ``bench/gpu/probe.py`` against replica 0
(which must pass, KV events included) and then ``saga bench e2e --replica-url`` for SAGA and the
real sglang-router's ``manual`` policy. A model folder is passed in (``MODEL_DIR``): the word-level
tokenizer of ``make_model.py`` needs ``transformers``, which is not a dependency here.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.timeout(300),
    pytest.mark.skipif(
        importlib.util.find_spec("sglang_router") is None, reason="sglang-router not installed"
    ),
]

ROOT = Path(__file__).resolve().parents[3]

LAUNCH_SERVER = """
import argparse, sys
if "--help" in sys.argv:
    print("--enable-session-radix-cache --enable-priority-scheduling --mem-fraction-static")
    sys.exit(0)
p = argparse.ArgumentParser()
for flag in ("--model-path", "--port", "--host", "--kv-events-config", "--mem-fraction-static"):
    p.add_argument(flag)
p.add_argument("--enable-session-radix-cache", action="store_true")
a, _ = p.parse_known_args()
print("stand-in sglang:", " ".join(sys.argv[1:]), flush=True)
from saga.cli import main
sys.argv = ["saga", "emulate", "--replicas", "1", "--port", a.port, "--host", a.host,
            "--enable-priority-scheduling", "--kv-events-config", a.kv_events_config]
if a.enable_session_radix_cache:  # run.sh passes it when SGLang's --help lists it
    sys.argv.append("--enable-session-radix-cache")
main()
"""


def test_run_sh_shares_a_gpu_probes_and_benchmarks(tmp_path: Path) -> None:
    # the stand-in arrives as an offline bundle part (OFFLINE_BUNDLE), as SGLang does on a GPU
    # machine without a package index
    shim = tmp_path / "shim" / "sglang"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text('__version__ = "emulated"\n')
    (shim / "launch_server.py").write_text(LAUNCH_SERVER)
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    with tarfile.open(bundle / "part-0.tar.xz", "w:xz") as tar:
        tar.add(shim, arcname="sglang")
    site = tmp_path / "site"
    model = tmp_path / "model"
    model.mkdir()
    out = tmp_path / "out"
    env = {
        **os.environ,
        "PYTHON": sys.executable,
        "OFFLINE_BUNDLE": str(bundle),
        "OFFLINE_SITE": str(site),
        "GPUS": "0",
        "REPLICAS_PER_GPU": "2",
        "MODEL_DIR": str(model),
        "SIZE": "tiny",
        "SESSIONS": "3",
        "WORKLOADS": "swe_bench",
        "SYSTEMS": "saga,manual",
    }
    proc = subprocess.run(
        ["bash", str(ROOT / "bench" / "gpu" / "run.sh"), str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=280,
    )  # fmt: skip
    log = proc.stdout + proc.stderr
    assert "started 2 SGLang servers" in log, log[-3000:]
    assert (site / "sglang" / "launch_server.py").is_file()  # unpacked from the bundle
    assert (site / ".saga-src" / "saga").resolve() == (ROOT / "saga").resolve()
    probe = (out / "probe.txt").read_text()
    assert "probe: all checks passed" in probe, probe
    # two servers on one GPU: cumulative shares of MEM_FRACTION (0.85), the second after the first
    starts = [
        line
        for f in sorted((out / "logs").glob("sglang-gpu0-*.log"))
        for line in f.read_text().splitlines()
        if line.startswith("stand-in sglang:")
    ]
    assert len(starts) == 2, starts
    assert "--mem-fraction-static 0.425" in starts[0]
    assert "--mem-fraction-static 0.850" in starts[1]
    assert all('"endpoint":"tcp://*:' in s for s in starts), starts  # wildcard: SGLang binds it
    report = (out / "report.md").read_text()
    assert "## Live run: validity (CPU guard)" in report
    for system in ("saga", "manual"):
        assert f"| {system} |" in report, report


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("REPLICAS_PER_GPU=0", "REPLICAS_PER_GPU must be a positive integer, got '0'"),
        ("REPLICAS_PER_GPU=two", "REPLICAS_PER_GPU must be a positive integer, got 'two'"),
        ("MEM_FRACTION=1.5", "MEM_FRACTION must be a number in (0, 1], got '1.5'"),
    ],
)
def test_run_sh_refuses_bad_settings_before_starting_anything(
    tmp_path: Path, setting: str, message: str
) -> None:
    key, value = setting.split("=")
    out = tmp_path / "out"
    proc = subprocess.run(
        ["bash", str(ROOT / "bench" / "gpu" / "run.sh"), str(out)],
        cwd=ROOT, env={**os.environ, key: value}, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stderr
    assert not out.exists()


def test_run_sh_names_an_offline_bundle_without_parts(tmp_path: Path) -> None:
    empty = tmp_path / "bundle"
    empty.mkdir()
    proc = subprocess.run(
        ["bash", str(ROOT / "bench" / "gpu" / "run.sh"), str(tmp_path / "out")],
        cwd=ROOT, env={**os.environ, "OFFLINE_BUNDLE": str(empty)}, capture_output=True, text=True,
        timeout=30,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"OFFLINE_BUNDLE: no part-*.tar.xz in '{empty}'" in proc.stdout
