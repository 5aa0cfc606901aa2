"""bench/sim_summary.py and bench/compress_results.py on a tiny ``saga simulate`` folder: the
summary reads gzipped and plain result folders alike, and compressing a plain folder gives the
writer's own bytes."""

from __future__ import annotations

import gzip
import importlib.util
import json
import shutil
from pathlib import Path
from types import ModuleType

import pytest

from saga.cli import main as saga_main
from saga.scheduler.report import load_results

pytestmark = pytest.mark.unit

BENCH = Path(__file__).resolve().parents[3] / "bench"


def _script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"saga_bench_script_{name}", BENCH / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_summary_reads_both_forms_and_compressing_reproduces_the_writer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    new = tmp_path / "new" / "sim_tiny"
    rc = saga_main(
        [
            "simulate", "--workload", "webarena", "--replicas", "2", "--sessions", "6", "--seed", "3",
            "--systems", "saga,sticky,cache_aware", "--out", str(new), "--no-plots", "--no-progress",
        ]
    )  # fmt: skip
    assert rc == 0
    run = json.loads((new / "run.json").read_text())  # the command as called, rerunnable as it is
    assert run["command"] == (
        "saga simulate --workload webarena --replicas 2 --sessions 6 --seed 3 --systems "
        f"saga,sticky,cache_aware --out {new} --no-plots --no-progress"
    )
    packed = sorted(p.name for p in new.glob("*.json.gz"))
    assert packed == ["cache_aware.json.gz", "limits.json.gz", "saga.json.gz", "sticky.json.gz"]
    # the same folder as it was written before detail files were compressed
    old = tmp_path / "old" / "sim_tiny"
    shutil.copytree(new, old)
    for p in old.glob("*.json.gz"):
        p.with_name(p.name[: -len(".gz")]).write_bytes(gzip.decompress(p.read_bytes()))
        p.unlink()
    assert not list(old.glob("*.gz"))

    summary = _script("sim_summary")
    assert summary.main(["--results", str(tmp_path / "new")]) == 0
    assert summary.main(["--results", str(tmp_path / "old")]) == 0
    md_new = (tmp_path / "new" / "sim_summary.md").read_text()
    assert "| webarena | 6 |" in md_new
    assert (tmp_path / "old" / "sim_summary.md").read_text() == md_new

    compress = _script("compress_results")
    assert compress.main([str(tmp_path / "old")]) == 0
    assert "total:" in capsys.readouterr().out
    assert sorted(p.name for p in old.glob("*.json")) == ["report.json", "run.json"]
    for name in packed:
        assert (old / name).read_bytes() == (new / name).read_bytes(), name
    assert compress.main([str(tmp_path / "old")]) == 0  # nothing left to do


def test_steady_folders_get_their_own_table_and_the_bound_reads_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "results"
    for name, extra in (("sim_tiny", []), ("sim_steady_tiny", ["--warmup-s", "20", "--cooldown-s", "10"])):
        rc = saga_main(
            ["simulate", "--workload", "webarena", "--replicas", "2", "--duration-s", "90", "--load", "0.6",
             "--seed", "3", "--systems", "saga,sticky,cache_aware", "--out", str(root / name), "--no-plots",
             "--no-progress", *extra]
        )  # fmt: skip
        assert rc == 0
    assert _script("sim_summary").main(["--results", str(root)]) == 0
    md = (root / "sim_summary.md").read_text()
    head, steady = md.split("## Steady state", 1)
    (r,) = load_results([root / "sim_steady_tiny" / "saga.json.gz"])
    measured = sum(1 for o in r.outcomes if not o.is_subagent and 20 <= o.start_s < 80)
    every = sum(1 for o in r.outcomes if not o.is_subagent)
    assert f"| webarena | {every} |" in head
    assert f"| webarena | {measured} |" not in head
    assert f"| webarena (2r) | {measured} |" in steady.split("## Ablations")[0]

    out = tmp_path / "bound.md"
    bound = _script("batching_bound")
    assert (
        bound.main(
            [str(root / "sim_steady_tiny"), str(root / "sim_tiny"), "--loads", "0.3,0.6", "--out", str(out)]
        )
        == 0
    )
    text = out.read_text()
    assert "| webarena 2r load 0.6 | [20, 80) s |" in text
    assert "| webarena 2r load 0.6 | all arrivals (no warm-up excluded) |" in text
    for system in ("saga", "sticky", "cache_aware"):
        assert f"| {system} | {measured} |" in text
    js = json.loads(out.with_suffix(".json").read_text())
    assert [x["load"] for x in js["loads"]] == [0.3, 0.6]
    b = js["folders"][0]["bound"]
    assert b["tasks"] == measured
    assert b["ratio"] >= 1.0
    with pytest.raises(SystemExit, match="not a saga simulate folder"):
        bound.main([str(tmp_path)])
    capsys.readouterr()
    assert bound.main([str(root / "sim_steady_tiny"), "--loads", "0.5,lots"]) == 2
    assert "lots" in capsys.readouterr().err
    run_json = root / "sim_steady_tiny" / "run.json"  # a run from before --workload-param existed
    run = json.loads(run_json.read_text())
    del run["args"]["workload_param"]
    run_json.write_text(json.dumps(run))
    assert (
        bound.main([str(root / "sim_steady_tiny"), "--loads", "0.6", "--out", str(tmp_path / "old.md")]) == 0
    )
    assert json.loads((tmp_path / "old.json").read_text())["folders"][0]["bound"] == b
    (root / "sim_steady_tiny" / "run.json").write_text("{not json")
    assert bound.main([str(root / "sim_steady_tiny")]) == 2
    assert "run.json" in capsys.readouterr().err


def test_side_runs_repeated_with_seeds_are_summarised_together(tmp_path: Path) -> None:
    root = tmp_path / "results"
    for name, seed in (
        ("sim_ablation_tiny", "1"),
        ("sim_ablation_tiny_seed2", "2"),
        ("sim_batchcap_one", "1"),
    ):
        rc = saga_main(
            ["simulate", "--workload", "webarena", "--replicas", "2", "--sessions", "6", "--seed", seed,
             "--systems", "saga,saga-no-retention", "--out", str(root / name), "--no-plots", "--no-progress"]
        )  # fmt: skip
        assert rc == 0
    summary = _script("sim_summary")
    assert summary.main(["--results", str(root)]) == 0
    md = (root / "sim_summary.md").read_text()
    assert "### sim_ablation_tiny, over seeds 1, 2" in md
    assert "sim_batchcap_one, over seeds" not in md  # one seed: nothing to summarise
    per_run = []
    for name in ("sim_ablation_tiny", "sim_ablation_tiny_seed2"):
        table = md.split(f"### {name}\n", 1)[1].split("###", 1)[0]
        row = next(x for x in table.splitlines() if x.startswith("| saga-no-retention |"))
        per_run.append(float(row.split("|")[3].strip().rstrip("%")))
    row = next(
        x for x in md.split("over seeds 1, 2", 1)[1].splitlines() if x.startswith("| saga-no-retention |")
    )
    mean = float(row.split("|")[3].split("%")[0])
    assert mean == pytest.approx(sum(per_run) / 2, abs=0.051)
    assert f"({min(per_run):+.1f} to {max(per_run):+.1f})" in row
    assert summary.spread([None]) == "–"


def test_steady_runs_repeated_with_seeds_get_one_row_and_a_table_over_the_seeds(tmp_path: Path) -> None:
    root = tmp_path / "results"
    for name, seed in (("sim_steady_tiny", "3"), ("sim_steady_tiny_seed4", "4")):
        rc = saga_main(
            ["simulate", "--workload", "webarena", "--replicas", "2", "--duration-s", "90", "--load", "0.6",
             "--seed", seed, "--systems", "saga,affinity", "--out", str(root / name), "--no-plots",
             "--no-progress", "--warmup-s", "20", "--cooldown-s", "10"]
        )  # fmt: skip
        assert rc == 0
    assert _script("sim_summary").main(["--results", str(root)]) == 0
    steady = (root / "sim_summary.md").read_text().split("## Steady state", 1)[1].split("## Ablations")[0]
    assert sum(1 for x in steady.splitlines() if x.startswith("| webarena (2r) |")) == 1
    assert "### sim_steady_tiny, over seeds 3, 4" in steady
    assert any(x.startswith("| affinity | 2 | ") for x in steady.splitlines())
