"""Pack SGLang (and SAGA's own needs) for a GPU machine that has PyTorch but no network.

    python bench/gpu/offline_bundle.py --have have.txt --out .gpu [--part-mib 56]
    # on the GPU machine, for each part:  tar xJf PART -C /tmp/site
    # then: PYTHONPATH=/tmp/site:<dir holding only a saga link> bench/gpu/run.sh

SGLang's wheel pins its whole CUDA stack (torch, kernels, flashinfer, cutlass DSL...), over a GB
in all. A GPU image that already holds PyTorch needs only what is missing, and an offline one
can receive only what is carried to it, possibly in pieces of bounded size. This script:

1. resolves the dependency closure of ``ROOTS`` (SGLang 0.5.17, the release that matches the
   image's torch 2.11, plus the pieces SAGA's bench needs) for ``--python`` on x86-64 Linux,
   one ``pip download --no-deps`` per package, evaluating markers itself; packages named in
   ``--have`` (``pip list`` or ``pip freeze`` output from the GPU machine; a root is carried
   even so, since its pinned version is the point) and in ``SKIP``
   (GPU kernels SGLang imports only for other hardware or other model families) are left out;
2. installs the wheels into a staging folder (``pip install --target``, no dependencies);
3. strips what a dense Llama on Hopper never loads (``STRIP``: sglang-kernel's 1.1 GB FA3
   library and its Blackwell ops, xgrammar's static library, jedi's stubs, SGLang's diffusion
   runtime and tests);
4. packs top-level folders into ``part-N.tar.xz`` files of at most ``--part-mib`` each.

What it carries was found by starting SGLang 0.5.17 on an H100 image with torch 2.11.0+cu130
(docs/bench.md "Real SGLang"), so attention runs on SGLang's Triton backend and sampling on
PyTorch (``--attention-backend triton --sampling-backend pytorch``): FA3 is stripped and
flashinfer's JIT kernels are never built. Needs network access to PyPI where it runs.
"""

from __future__ import annotations

import argparse
import lzma
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

ROOTS = (
    "sglang==0.5.17",
    "sglang-kernel==0.4.5",
    "flashinfer-python==0.6.15.post1",  # imported by SGLang's sampler on CUDA, even when unused
    "transformers==5.12.1",  # SGLang 0.5.17's pin; it needs tokenizers <= 0.23.0
    "tokenizers==0.22.2",
    "openai==2.6.1",
    "sglang-router==0.3.2",  # the peer the benchmark compares with
    "redis>=5,<9",
    "pyzmq==27.3.0",
    "grpcio-tools==1.84.0",  # matches the image's grpcio 1.84; SAGA generates its stubs with it
    "grpcio-health-checking==1.84.0",
    "grpcio-reflection==1.84.0",
    "dill",  # SGLang imports these at start without declaring them
    "jsonschema",
)
SKIP = {
    "flash-attn-4", "humming-kernels", "nvidia-cutlass-dsl", "nvidia-mathdx", "tilelang",
    "sgl-deep-gemm", "helion", "quack-kernels", "tokenspeed-mla", "torchao", "torchcodec",
    "torchaudio", "cuda-python", "cuda-tile", "nccl4py", "nvidia-cudnn-frontend", "datasets",
    "modelscope", "mistral-common", "py-spy", "kernels", "anthropic", "blobfile",
    "smg-grpc-servicer", "llguidance", "outlines", "decord2", "av", "torch", "jedi", "parso",
}  # fmt: skip
STRIP = (
    "sgl_kernel/flash_ops.abi3.so",
    "sgl_kernel/flashmla_ops.abi3.so",
    "sgl_kernel/infllm_ops.cpython-310-x86_64-linux-gnu.so",
    "sgl_kernel/sm100",
    "xgrammar/lib",
    "sglang/multimodal_gen",
    "sglang/test",
)
PLATFORMS = [f"manylinux_2_{n}_x86_64" for n in (34, 31, 28, 27, 24, 17)] + ["manylinux2014_x86_64", "any"]


def canon(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pip_target(python: str) -> list[str]:
    plats = [x for p in PLATFORMS for x in ("--platform", p)]
    return ["--only-binary=:all:", "--python-version", python, "--implementation", "cp", *plats]


def resolve(wheels: Path, have: set[str], python: str) -> list[Path]:
    from packaging.requirements import Requirement

    env = {"python_version": python, "python_full_version": python + ".0", "sys_platform": "linux"}
    env |= {"platform_machine": "x86_64", "platform_system": "Linux", "os_name": "posix", "extra": ""}
    queue, seen, out = [Requirement(r) for r in ROOTS], set(), []
    forced = {canon(r.name) for r in queue}  # a root is carried even where the machine has a version
    while queue:
        req = queue.pop(0)
        name = canon(req.name)
        if name in seen or name in SKIP or (name in have and name not in forced):
            continue
        seen.add(name)
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", *pip_target(python)]
        subprocess.run([*cmd, "-d", str(wheels), f"{req.name}{req.specifier}"], check=True)
        whl = next(w for w in wheels.glob("*.whl") if canon(w.name.split("-")[0]) == name)
        out.append(whl)
        with zipfile.ZipFile(whl) as z:
            meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
            for line in z.read(meta).decode().splitlines():
                if line.startswith("Requires-Dist:"):
                    dep = Requirement(line.split(":", 1)[1].strip())
                    if dep.marker is None or dep.marker.evaluate(env):
                        queue.append(dep)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--have", type=Path, required=True, help="pip list/freeze of the GPU machine")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--python", default="3.12")
    p.add_argument("--part-mib", type=float, default=56.0)
    a = p.parse_args()
    if not a.have.is_file():
        p.error(f"--have {a.have}: no such file (write it with `pip list` on the GPU machine)")
    if a.part_mib <= 0:
        p.error(f"--part-mib must be > 0, got {a.part_mib}")
    have = {canon(m.group(1)) for m in re.finditer(r"^([A-Za-z0-9_.\-]+)", a.have.read_text(), re.M)}
    work = a.out / "work"
    wheels, site = work / "wheels", work / "site"
    wheels.mkdir(parents=True, exist_ok=True)
    try:
        found = resolve(wheels, have, a.python)
    except subprocess.CalledProcessError as exc:  # pip printed why (no such version, no network)
        p.error(f"pip could not fetch a package ({' '.join(exc.cmd[-1:])}); see pip's message above")
    shutil.rmtree(site, ignore_errors=True)
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-compile", "--target", str(site)]
    subprocess.run([*cmd, *pip_target(a.python), *map(str, found)], check=True)
    for rel in STRIP:
        target = site / rel
        shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
    # greedy packing by compressed size: biggest first into the first part that still fits
    sizes = {}
    for item in sorted(site.iterdir()):
        files = [f for f in item.rglob("*") if f.is_file()] if item.is_dir() else [item]
        sizes[item.name] = len(lzma.compress(b"".join(f.read_bytes() for f in files), preset=1)) or 1
    limit = int(a.part_mib * 2**20)
    parts: list[list[str]] = []
    loads: list[int] = []
    for name, size in sorted(sizes.items(), key=lambda kv: -kv[1]):
        i = next((i for i, load in enumerate(loads) if load + size <= limit), len(parts))
        if i == len(parts):
            parts.append([])
            loads.append(0)
        parts[i].append(name)
        loads[i] += size
    for i, names in enumerate(parts):
        path = a.out / f"part-{i}.tar.xz"
        with tarfile.open(path, "w:xz", preset=6) as tar:
            for n in names:
                tar.add(site / n, arcname=n)
        print(f"{path}: {path.stat().st_size / 2**20:.1f} MiB, {len(names)} entries")
    print(f"{len(found)} wheels; unpack every part into one folder and put it first on PYTHONPATH")


if __name__ == "__main__":
    main()
