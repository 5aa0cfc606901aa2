#!/usr/bin/env python3
"""SAGA's KV event subscriber against SGLang's own publisher code (no GPU, no SGLang server).

SGLang's ``python/sglang/srt/disaggregation/kv_events.py`` needs only ``msgspec``, ``pyzmq``,
``pydantic`` and (from 0.5.20) ``sglang/srt/utils/network.py`` with ``psutil``, so it runs
anywhere; SGLang itself (torch, kernels) is not needed. ``--sglang-src`` is a folder holding
those two files at their package paths with empty ``__init__.py`` files above them
(:func:`extract_sources` makes it from a wheel). This script starts that module's
``ZmqEventPublisher`` as attention DP rank ``--rank`` in a child interpreter (``--python``, which
must have the packages above), with ``endpoint tcp://*:P`` and ``replay_endpoint tcp://*:R``,
publishes four chained pages, and reads them with SAGA's
:class:`saga.service.kv_events.KvEventSubscriber` at ``rank_endpoint(..., rank)``, skipping
batch 1 so that batch 2 shows a gap the replay must fill. Exit status 0 when the rank's ports,
the replay and the resulting view are what SAGA expects::

    pip download --no-deps sglang==0.5.20 -d /tmp/whl
    PYTHONSAFEPATH=1 python scripts/check_sglang_kv_events.py --wheel /tmp/whl/sglang-*.whl --rank 1

(the contract test ``tests/contract/sglang/test_kv_events_wire.py`` runs it for ranks 0 and 1).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import socket
import subprocess
import sys
import tempfile
import textwrap
import zipfile
from pathlib import Path

import zmq
import zmq.asyncio
from prometheus_client import CollectorRegistry

from saga.scheduler.api import ReplicaCache
from saga.service.kv_events import KvEventSubscriber, rank_endpoint
from saga.service.kv_view import ReplicaKvView
from saga.service.metrics import ServiceMetrics
from saga.service.tokens import ids_prompt

PAGES = 4
PUBLISHER = textwrap.dedent(
    """
    import importlib, json, sys, time
    sys.path.insert(0, sys.argv[1])
    m = importlib.import_module("sglang.srt.disaggregation.kv_events")
    port, replay, rank, pages = (int(a) for a in sys.argv[2:6])
    cfg = {"publisher": "zmq", "endpoint": f"tcp://*:{port}", "replay_endpoint": f"tcp://*:{replay}",
           "topic": "kv-events"}
    pub = m.EventPublisherFactory.create(json.dumps(cfg), attn_dp_rank=rank)
    print("bound", pub._endpoint, pub._replay_endpoint, flush=True)
    time.sleep(1.5)  # the subscriber connects
    for i in range(pages):
        ev = m.BlockStored(block_hashes=[100 + i], parent_block_hash=None if i == 0 else 99 + i,
                           token_ids=list(range(i * 16, (i + 1) * 16)), block_size=16, lora_id=None)
        pub.publish(m.KVEventBatch(ts=time.time(), events=[ev]))
        time.sleep(0.2)
    time.sleep(3.0)  # serve the replay
    pub.shutdown()
    """
)


SOURCES = ("sglang/srt/disaggregation/kv_events.py", "sglang/srt/utils/network.py")


def extract_sources(wheel: zipfile.ZipFile, root: Path) -> Path:
    """Write SGLang's KV event module (and what it imports of SGLang) under ``root`` with empty
    package ``__init__.py`` files, so importing it pulls in nothing else of SGLang."""
    names = set(wheel.namelist())
    for member in SOURCES:
        if member not in names:
            continue  # older releases do not import network.py
        target = root / member
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(wheel.read(member))
        for pkg in Path(member).parents:
            if str(pkg) != ".":
                (root / pkg / "__init__.py").touch()
    return root


def free_ports(rank: int, tries: int = 50) -> int:
    """A base port whose publisher and replay ports for ``rank`` (base + rank, base + 100 + rank)
    are free now. Drawn below Linux's ephemeral range (32768 on), where the kernel hands out
    the other tests' client ports, so a free port stays free until the publisher binds it."""
    for _ in range(tries):
        base = random.randint(20_000, 32_000)
        try:
            for p in (base + rank, base + 100 + rank):
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                    s.bind(("0.0.0.0", p))
        except OSError:
            continue
        return base
    raise SystemExit(f"no free port pair found in {tries} tries")


async def subscribe(port: int, replay: int, rank: int) -> list[str]:
    """Read the rank's batches (skipping batch 1); the problems found, empty when none."""
    endpoint = rank_endpoint(f"tcp://127.0.0.1:{port}", rank)
    replay_endpoint = rank_endpoint(f"tcp://127.0.0.1:{replay}", rank)
    assert endpoint is not None
    assert replay_endpoint is not None
    ctx = zmq.asyncio.Context()
    sent: list[ReplicaCache] = []
    metrics = ServiceMetrics(CollectorRegistry())
    view = ReplicaKvView("sglang", 16)

    def sink(e: ReplicaCache) -> bool:
        sent.append(e)
        return True

    sub = KvEventSubscriber(
        view,
        endpoint,
        sink,
        metrics,
        ctx=ctx,
        topic="kv-events",
        replay_endpoint=replay_endpoint,
        replay_timeout_s=2.0,
        rank=rank,
    )
    sock = ctx.socket(zmq.SUB)
    sock.setsockopt(zmq.SUBSCRIBE, b"kv-events")
    sock.connect(endpoint)
    problems: list[str] = []
    try:
        async with asyncio.timeout(15):
            for _ in range(PAGES):
                frames = await sock.recv_multipart()
                if frames[1] == (1).to_bytes(8, "big"):
                    continue  # lost on purpose: batch 2 shows the gap
                await sub.handle(frames)
    except TimeoutError:
        problems.append(f"no {PAGES} batches at {endpoint}")
    finally:
        sock.close(linger=0)
        ctx.term()
    get = metrics.registry.get_sample_value
    counts = {o: get("saga_kv_events_total", {"outcome": o}) or 0.0 for o in ("gap", "replayed", "malformed")}
    print(f"read at {endpoint}, replay {replay_endpoint}: {counts}")
    if counts != {"gap": 1.0, "replayed": 1.0, "malformed": 0.0}:
        problems.append(f"expected one gap filled by one replayed batch, got {counts}")
    if any(e.cleared for e in sent):
        problems.append("the view was cleared")
    want = set(ids_prompt(list(range(16 * PAGES)), block_size=16, max_blocks=64).block_hashes)
    if view.cached_hashes != want:
        problems.append("the view is not the published pages' SAGA blocks")
    return problems


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--sglang-src", type=Path, help="folder made by extract_sources()")
    src.add_argument("--wheel", type=Path, help="an SGLang wheel (the sources are extracted from it)")
    ap.add_argument("--python", default=sys.executable, help="interpreter with msgspec, pyzmq, pydantic")
    ap.add_argument("--rank", type=int, default=1, help="attention DP rank the publisher plays")
    args = ap.parse_args()
    if args.wheel is not None:
        with zipfile.ZipFile(args.wheel) as zf:
            root = extract_sources(zf, Path(tempfile.mkdtemp(prefix="sglang-src-")))
    else:
        root = args.sglang_src
    port = free_ports(args.rank)
    replay = port + 100
    child = subprocess.Popen(
        [args.python, "-c", PUBLISHER, str(root), str(port), str(replay), str(args.rank), str(PAGES)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    bound = child.stdout.readline().split()
    print("SGLang's publisher bound", *bound[1:])
    problems = []
    if bound[1:] != [f"tcp://*:{port + args.rank}", f"tcp://*:{replay + args.rank}"]:
        problems.append(f"rank {args.rank} did not bind the ports + rank: {bound}")
    problems += asyncio.run(subscribe(port, replay, args.rank))
    child.wait(timeout=30)
    for p in problems:
        print("PROBLEM:", p)
    print("ok" if not problems else "failed")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
