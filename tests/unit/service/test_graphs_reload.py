"""Graph hot reload (``saga.service.graphs_reload``): folder and state-store sources, no sleeps."""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import os
from pathlib import Path
from typing import Any

import pytest

from saga.graphs.aeg import POOLED, GraphSet, build_graphs
from saga.graphs.api import Predictor, SessionPosition
from saga.graphs.predict import AEGPredictor
from saga.graphs.synthetic import sessions
from saga.service.config import GraphSettings
from saga.service.graphs_reload import GraphReloader
from saga.service.state.memory import MemoryStore

pytestmark = pytest.mark.unit


def graph_json(n: int, seed: int = 1, agent_type: str = "wf") -> str:
    """An AEG document as the operator stores it (canonical JSON: sorted keys)."""
    doc = json.loads(build_graphs(sessions(n, seed=seed, agent_type=agent_type)).to_json())
    return json.dumps(doc, sort_keys=True, separators=(",", ":"))


def flatten(v: object, path: str = "") -> dict[str, float]:
    if isinstance(v, dict):
        return {k: x for key, sub in v.items() for k, x in flatten(sub, f"{path}.{key}").items()}
    if isinstance(v, list):
        return {k: x for i, sub in enumerate(v) for k, x in flatten(sub, f"{path}[{i}]").items()}
    return {path: float(v)} if isinstance(v, int | float) else {}


def sessions_in(graphs: GraphSet, agent_type: str) -> float:
    """How many sessions ``agent_type``'s graph was built from (the graph must be there)."""
    g = graphs.get(agent_type)
    assert g is not None, agent_type
    return g.sessions


class Applied:
    def __init__(self) -> None:
        self.got: list[Predictor | None] = []

    def __call__(self, p: Predictor | None) -> None:
        self.got.append(p)

    @property
    def last(self) -> AEGPredictor:
        p = self.got[-1]
        assert isinstance(p, AEGPredictor)
        return p


def reloader(tmp_path: Path, applied: Applied, **kw: Any) -> GraphReloader:
    return GraphReloader(GraphSettings(directory=str(tmp_path), **kw), applied)


def configmap_swap(root: Path, stamp: str, files: dict[str, bytes]) -> None:
    """What kubelet does for a ConfigMap volume: new timestamped folder, ``..data`` swapped."""
    d = root / f"..{stamp}"
    d.mkdir()
    for name, data in files.items():
        (d / name).write_bytes(data)
        link = root / name
        if not link.is_symlink():
            link.symlink_to(Path("..data") / name)
    tmp = root / "..data_tmp"
    tmp.symlink_to(d.name)
    os.replace(tmp, root / "..data")


async def test_new_version_in_a_mounted_configmap_is_swapped_in(tmp_path: Path) -> None:
    applied = Applied()
    r = reloader(tmp_path, applied)
    configmap_swap(tmp_path, "2026_01", {"graph.json": graph_json(20, 1).encode(), "version": b"1"})
    assert await r.poll()
    first = applied.last
    assert "wf" in first.graphs.agent_types()
    assert r.state.sources == {str(tmp_path / "graph.json"): r.state.sources[str(tmp_path / "graph.json")]}
    configmap_swap(tmp_path, "2026_02", {"graph.json": graph_json(60, 2).encode(), "version": b"2"})
    assert await r.poll()
    second = applied.last
    assert second is not first
    assert sessions_in(second.graphs, "wf") == 60
    assert r.state.generation == 2


async def test_same_content_is_not_rebuilt(tmp_path: Path) -> None:
    applied = Applied()
    r = reloader(tmp_path, applied)
    text = graph_json(20)
    (tmp_path / "a.json").write_text(text)
    assert await r.poll()
    (tmp_path / "a.json").write_text(text)  # rewritten, same bytes
    assert not await r.poll()
    assert not await r.poll()
    assert len(applied.got) == 1
    assert r.state.generation == 1


async def test_corrupt_document_keeps_the_previous_predictor(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    applied = Applied()
    r = reloader(tmp_path, applied)
    path = tmp_path / "a.json"
    path.write_text(graph_json(20))
    assert await r.poll()
    good = applied.last
    doc = json.loads(graph_json(30))
    doc["graphs"]["wf"]["sessions"] = "many"
    path.write_text(json.dumps(doc))
    with caplog.at_level(logging.ERROR, logger="saga.service.graphs_reload"):
        assert not await r.poll()
        assert not await r.poll()  # logged once per content, not per poll
    assert applied.got == [good]
    errors = [rec.getMessage() for rec in caplog.records if rec.levelno == logging.ERROR]
    assert len(errors) == 1
    assert str(path) in errors[0]
    assert "graphs.wf" in errors[0]
    assert "previous" in errors[0]
    assert str(path) in r.state.errors
    path.write_text(graph_json(40))  # fixed: loads again
    assert await r.poll()
    assert sessions_in(applied.last.graphs, "wf") == 40
    assert r.state.errors == {}


async def test_corrupt_first_document_applies_nothing_but_others(tmp_path: Path) -> None:
    applied = Applied()
    r = reloader(tmp_path, applied)
    (tmp_path / "bad.json.gz").write_bytes(b"not gzip")
    (tmp_path / "good.json").write_text(graph_json(10, agent_type="a"))
    assert await r.poll()
    assert {t.split("/")[0] for t in applied.last.graphs.agent_types()} == {"a"}
    assert str(tmp_path / "bad.json.gz") in r.state.errors


async def test_documents_are_merged_per_agent_type_and_pooled_summed(tmp_path: Path) -> None:
    applied = Applied()
    r = reloader(tmp_path, applied)
    (tmp_path / "cm-a").mkdir()
    (tmp_path / "cm-b").mkdir()
    (tmp_path / "cm-a" / "graph.json").write_text(graph_json(10, 1, agent_type="a"))
    (tmp_path / "cm-b" / "graph.json.gz").write_bytes(
        gzip.compress(graph_json(25, 2, agent_type="b").encode())
    )
    (tmp_path / "cm-b" / "version").write_text("3")
    assert await r.poll()
    merged = applied.last.graphs
    assert {t.split("/")[0] for t in merged.agent_types()} == {"a", "b"}
    both = build_graphs([*sessions(10, seed=1, agent_type="a"), *sessions(25, seed=2, agent_type="b")])
    pooled = merged.get(POOLED)
    assert pooled is not None
    # equal up to the documents' rounding (4 significant digits per stored number)
    got, want = flatten(pooled.to_dict()), flatten(both.pooled.to_dict())
    assert got.keys() == want.keys()
    assert got == pytest.approx(want, rel=1e-3)
    # the merged predictor answers for both types from their own graphs
    pos = SessionPosition(agent_type="b", steps_done=1, context_tokens=1000, last_stop="tool_use")
    assert applied.last.remaining(pos).confidence > 0


async def test_removed_documents_fall_back_to_the_prior(tmp_path: Path) -> None:
    applied = Applied()
    r = reloader(tmp_path, applied)
    (tmp_path / "a.json").write_text(graph_json(10))
    assert await r.poll()
    (tmp_path / "a.json").unlink()
    assert await r.poll()
    assert applied.got[-1] is None
    assert r.state.agent_types == []


async def test_store_documents_reload_by_version(caplog: pytest.LogCaptureFixture) -> None:
    store = MemoryStore(process_id="p")
    applied = Applied()
    r = GraphReloader(GraphSettings(from_store=True), applied, store=store)
    await store.put_graph("wf", json.loads(graph_json(10)))
    assert await r.poll()
    assert sessions_in(applied.last.graphs, "wf") == 10
    assert not await r.poll()
    await store.put_graph("wf", json.loads(graph_json(30, 3)))
    assert await r.poll()
    assert sessions_in(applied.last.graphs, "wf") == 30
    kept = applied.last
    await store.put_graph("wf", {"kind": "something else"})
    with caplog.at_level(logging.ERROR, logger="saga.service.graphs_reload"):
        assert not await r.poll()
    assert applied.last is kept
    assert any("store:wf@v3" in rec.getMessage() for rec in caplog.records)


async def test_run_polls_at_the_configured_interval(tmp_path: Path) -> None:
    slept: list[float] = []
    applied = Applied()

    async def sleep(s: float) -> None:
        slept.append(s)
        if len(slept) == 1:
            (tmp_path / "a.json").write_text(graph_json(10))
        if len(slept) == 3:
            raise asyncio.CancelledError

    r = GraphReloader(GraphSettings(directory=str(tmp_path), poll_interval_s=7.5), applied, sleep=sleep)
    with pytest.raises(asyncio.CancelledError):
        await r.run()
    assert slept == [7.5, 7.5, 7.5]
    assert len(applied.got) == 1
    assert "wf" in applied.last.graphs.agent_types()
