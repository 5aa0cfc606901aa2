"""Build the gRPC/protobuf Python code of ``saga.v1`` from ``protos/``.

The generated code lives in ``saga/service/proto_gen/`` (git-ignored): it is made by
``scripts/gen_proto.py`` (``make proto``) and, when missing or older than the ``.proto``
sources, by the first import of :mod:`saga.service.pb` (so ``pip install .`` and a fresh
checkout both work without a separate step). ``saga/service/protos`` is a link to the
repository's ``protos/`` folder so that the sources ship inside the package.

protoc writes ``from saga.v1 import saga_pb2`` into the gRPC module, which would resolve to
this project's own ``saga`` package; the imports are rewritten to
``saga.service.proto_gen.saga.v1``. A stamp file holds a hash of the sources; a mismatch
triggers regeneration.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
import tempfile
from pathlib import Path

PROTO_ROOT = Path(__file__).resolve().parent / "protos"
GEN_ROOT = Path(__file__).resolve().parent / "proto_gen"
STAMP = ".sources.sha256"
_PKG = "saga.service.proto_gen"


class ProtoBuildError(RuntimeError):
    """protoc failed or is unavailable."""


def proto_files() -> list[Path]:
    return sorted(PROTO_ROOT.rglob("*.proto"))


def sources_hash() -> str:
    h = hashlib.sha256()
    for p in proto_files():
        h.update(str(p.relative_to(PROTO_ROOT)).encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def is_current() -> bool:
    stamp = GEN_ROOT / STAMP
    try:
        return stamp.read_text().strip() == sources_hash()
    except OSError:
        return False


def generate(out: Path = GEN_ROOT) -> list[Path]:
    """Run protoc (``grpc_tools``) on every ``.proto``; return the files written.

    Writes into a temporary folder first and moves the result in place, so a concurrent
    importer never sees a half-written package.
    """
    try:
        from grpc_tools import protoc  # type: ignore[import-untyped]
    except ImportError as exc:  # pragma: no cover - grpcio-tools is a dependency
        raise ProtoBuildError("grpcio-tools is not installed; pip install grpcio-tools") from exc
    import grpc_tools

    files = proto_files()
    if not files:
        raise ProtoBuildError(f"no .proto files under {PROTO_ROOT}")
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".proto_gen.", dir=out.parent))
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--python_out={tmp}",
        f"--grpc_python_out={tmp}",
        *_stub_args(tmp),
        *[str(f.relative_to(PROTO_ROOT)) for f in files],
    ]
    cwd = os.getcwd()
    try:
        os.chdir(PROTO_ROOT)
        rc = protoc.main(args)
    finally:
        os.chdir(cwd)
    if rc != 0:
        raise ProtoBuildError(f"protoc failed with exit code {rc} on {[str(f) for f in files]}")
    written: list[Path] = []
    for py in tmp.rglob("*.py*"):
        text = py.read_text()
        text = re.sub(r"^from saga\.(\S+) import", rf"from {_PKG}.saga.\1 import", text, flags=re.M)
        py.write_text(text)
        written.append(py)
    for d in [tmp, *[p for p in tmp.rglob("*") if p.is_dir()]]:
        (d / "__init__.py").touch()
    (tmp / "py.typed").touch()
    (tmp / STAMP).write_text(sources_hash() + "\n")
    # Swap the folder in (rename is atomic; an old tree is moved aside and removed).
    old = None
    if out.exists():
        old = out.with_name(f".proto_gen.old.{os.getpid()}")
        os.rename(out, old)
    try:
        os.rename(tmp, out)
    except OSError:
        if not out.exists():
            raise
    if old is not None:
        _rmtree(old)
    _rmtree(tmp)
    return [out / p.relative_to(tmp) for p in written]


def ensure_generated() -> None:
    """Generate the code when missing or stale (called on import of :mod:`saga.service.pb`)."""
    if not is_current():
        generate()
        # A stale tree may already be imported; drop it so the fresh one loads.
        for name in [m for m in sys.modules if m.startswith(_PKG)]:
            del sys.modules[name]


def _rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def _stub_args(tmp: Path) -> list[str]:
    """Type stubs: mypy-protobuf's (strict-clean, with gRPC stubs) when installed, else protoc's."""
    import shutil

    args: list[str] = []
    for name, flag in (("protoc-gen-mypy", "mypy_out"), ("protoc-gen-mypy_grpc", "mypy_grpc_out")):
        plugin = shutil.which(name) or _venv_bin(name)
        if plugin:
            args += [f"--plugin={name}={plugin}", f"--{flag}={tmp}"]
    return args or [f"--pyi_out={tmp}"]


def _venv_bin(name: str) -> str | None:
    p = Path(sys.executable).parent / name
    return str(p) if p.exists() else None
