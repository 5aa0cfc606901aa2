"""SGLang's own code for the contract tests: the pinned release's wheel, fetched once.

The wheel is downloaded without dependencies (``pip download --no-deps``, ~6 MB) into
``~/.cache/saga/`` and read as a zip: nothing of SGLang is installed, and only modules that need
no GPU stack are ever imported from it. Without network access to a package index the tests
that need it are skipped with the reason.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import pytest

SGLANG = "0.5.10.post1"  # the release the emulator mirrors (docs/emulator.md)


def _wheel() -> Path:
    cache = Path.home() / ".cache" / "saga" / f"sglang-{SGLANG}"
    got = sorted(cache.glob("sglang-*.whl"))
    if got:
        return got[0]
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", f"sglang=={SGLANG}", "-d", tmp]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
        wheels = list(Path(tmp).glob("sglang-*.whl"))
        if proc.returncode != 0 or not wheels:
            pytest.skip(f"sglang=={SGLANG} could not be downloaded: {proc.stderr.strip()[-300:]}")
        target = cache / wheels[0].name
        wheels[0].replace(target)
    return target


@pytest.fixture(scope="session")
def sglang_wheel() -> zipfile.ZipFile:
    return zipfile.ZipFile(_wheel())


@pytest.fixture(scope="session")
def sglang_kv_events_py(sglang_wheel: zipfile.ZipFile, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SGLang's ``srt/disaggregation/kv_events.py``, as a file (the publisher runs it in a child)."""
    target = tmp_path_factory.mktemp("sglang") / "kv_events.py"
    target.write_bytes(sglang_wheel.read("sglang/srt/disaggregation/kv_events.py"))
    return target
