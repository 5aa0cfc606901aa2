"""SGLang's own code for the contract tests: pinned releases' wheels, fetched once.

Each wheel is downloaded without dependencies (``pip download --no-deps``) into
``~/.cache/saga/`` and read as a zip: nothing of SGLang is installed, and only modules that need
no GPU stack are ever imported from it (the others are read as source). Without network access
to a package index the tests that need a wheel are skipped with the reason.

Releases: ``MIN_SUPPORTED`` is the oldest SGLang whose session radix cache keeps a session's
entries referenced (what SAGA's KV retention uses; docs/backend.md); ``IMAGE_RELEASE`` is the
release of the sample ``ReplicaPool``'s image.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from types import ModuleType

import pytest
from script_modules import load_script

from saga.service.backend.api import release_of

MIN_SUPPORTED = "0.5.17"
IMAGE_RELEASE = "0.5.20"
_open: dict[str, zipfile.ZipFile] = {}


def wheel(version: str) -> zipfile.ZipFile:
    """The ``sglang==version`` wheel (cached), or a skip when it cannot be downloaded."""
    if version in _open:
        return _open[version]
    cache = Path.home() / ".cache" / "saga" / f"sglang-{version}"
    got = sorted(cache.glob("sglang-*.whl"))
    if not got:
        cache.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cache) as tmp:
            cmd = [
                sys.executable,
                "-m",
                "pip",
                "download",
                "-q",
                "--no-deps",
                f"sglang=={version}",
                "-d",
                tmp,
            ]
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
            wheels = list(Path(tmp).glob("sglang-*.whl"))
            if proc.returncode != 0 or not wheels:
                pytest.skip(f"sglang=={version} could not be downloaded: {proc.stderr.strip()[-300:]}")
            target = cache / wheels[0].name
            wheels[0].replace(target)
            got = [target]
    _open[version] = zipfile.ZipFile(got[0])
    return _open[version]


@pytest.fixture(scope="session")
def sglang_wheel() -> zipfile.ZipFile:
    """The sample image's release."""
    return wheel(IMAGE_RELEASE)


@pytest.fixture(scope="session", params=[MIN_SUPPORTED, IMAGE_RELEASE])
def sglang_release(request: pytest.FixtureRequest) -> tuple[str, zipfile.ZipFile]:
    """Every supported release the tests pin: (version, wheel)."""
    return request.param, wheel(request.param)


def check_script() -> ModuleType:
    """``scripts/check_sglang_kv_events.py`` as a module (it is a script, not a package)."""
    return load_script("scripts/check_sglang_kv_events.py")


@pytest.fixture(scope="session")
def sglang_src(sglang_release: tuple[str, zipfile.ZipFile], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with the release's KV event module and what it imports of SGLang, empty packages
    above it."""
    version, zf = sglang_release
    root: Path = check_script().extract_sources(zf, tmp_path_factory.mktemp(f"sglang-{version}"))
    return root


def wire_of(version: str) -> str:
    """The KV event encoding of a release: maps from 0.5.20 on, arrays before."""
    release = release_of(version)
    assert release is not None, version
    return "map" if release >= (0, 5, 20) else "array"
