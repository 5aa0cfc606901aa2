"""Result files: deterministic gzipped detail files, and readers that take .json and .json.gz."""

from __future__ import annotations

import gzip
import json
from dataclasses import replace
from pathlib import Path

import pytest

from saga.scheduler.report import (
    ReportError,
    RunResult,
    Series,
    SessionOutcome,
    find_json,
    folder_results,
    json_files,
    load_json,
    load_limits,
    load_results,
    read_json_text,
    stem_of,
    write_json_gz,
    write_result,
)

pytestmark = pytest.mark.unit

# gzip magic, deflate, no flags (no file name), mtime 0, "max compression", OS unknown
FIXED_HEADER = bytes.fromhex("1f8b08000000000002ff")


def _result(system: str = "saga") -> RunResult:
    o = SessionOutcome(
        session_id="s0",
        tenant="t",
        agent_type="a",
        start_s=0.0,
        end_s=12.5,
        calls=2,
        ttft_s=(0.1, 0.2),
        prompt_tokens=300,
        cached_tokens=200,
        output_tokens=30,
        recomputed_tokens=10,
        deadline_s=20.0,
        slo_met=True,
    )
    return RunResult(
        system=system,
        workload="w",
        seed=1,
        replicas=2,
        load=0.8,
        outcomes=(o,),
        duration_s=100.0,
        kv_util={"r0": Series((0.0, 1.0), (0.5, 0.25))},
        cache_hit_rate=Series((0.0, 1.0), (0.9, 0.95)),
        steals=1,
        wall_s=0.25,
        meta={"command": "x"},
    )


def test_writer_gzips_deterministically_and_round_trips(tmp_path: Path) -> None:
    r = _result()
    (tmp_path / "a").mkdir()
    a = write_result(r, tmp_path / "a" / "saga.json.gz")
    b = write_result(r, tmp_path / "other-name.json.gz")
    raw = a.read_bytes()
    assert raw[:10] == FIXED_HEADER  # no file name, mtime 0: nothing of the run in the header
    assert raw == b.read_bytes()  # same content, same bytes, whatever the path or the time
    write_result(r, a)
    assert a.read_bytes() == raw  # a rerun rewrites the same bytes
    assert gzip.decompress(raw).decode() == r.to_json()  # `zcat` gives the JSON back
    assert read_json_text(a) == r.to_json()
    assert load_results([a]) == [r]
    assert load_results([str(a)]) == [r]


def test_reader_loads_plain_and_gzipped_files_alike(tmp_path: Path) -> None:
    r = _result()
    plain = tmp_path / "old" / "saga.json"
    plain.parent.mkdir()
    plain.write_text(r.to_json(), encoding="utf-8")  # a folder from before compression
    packed = write_result(r, tmp_path / "saga.json.gz")
    assert load_results([plain, packed]) == [r, r]
    limits = {"s0": 8.25, "s1": 3.0}
    (tmp_path / "limits.json").write_text(json.dumps(limits))
    write_json_gz(tmp_path / "old" / "limits.json.gz", json.dumps(limits))
    assert load_json(tmp_path / "limits.json") == load_json(tmp_path / "old" / "limits.json.gz") == limits


def test_rerun_into_an_old_folder_replaces_the_plain_file(tmp_path: Path) -> None:
    r = _result()
    (tmp_path / "saga.json").write_text(r.to_json())
    (tmp_path / "run.json").write_text("{}")
    write_result(r, tmp_path / "saga.json.gz")
    assert not (tmp_path / "saga.json").exists()
    assert [p.name for p in json_files(tmp_path)] == ["run.json", "saga.json.gz"]
    assert find_json(tmp_path, "saga") == tmp_path / "saga.json.gz"
    assert find_json(tmp_path, "run") == tmp_path / "run.json"
    assert find_json(tmp_path, "limits") is None
    assert [stem_of(p) for p in ("a.json", "a.json.gz", Path("d/b-c.json.gz"), "x.png")] == [
        "a",
        "a",
        "b-c",
        "x.png",
    ]


def test_both_forms_of_one_file_are_refused(tmp_path: Path) -> None:
    r = _result()
    write_result(r, tmp_path / "saga.json.gz")
    (tmp_path / "saga.json").write_text(r.to_json())
    with pytest.raises(ReportError, match=r"both saga.json and saga.json.gz"):
        json_files(tmp_path)


def test_bad_files_name_the_path(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"must end in \.json\.gz"):
        write_json_gz(tmp_path / "saga.json", "{}")
    bad = tmp_path / "saga.json.gz"
    bad.write_bytes(b"{not gzip")
    with pytest.raises(ReportError, match=r"saga\.json\.gz: not a valid gzip file"):
        load_results([bad])
    truncated = tmp_path / "t.json.gz"
    truncated.write_bytes(write_result(_result(), tmp_path / "full.json.gz").read_bytes()[:-20])
    with pytest.raises(ReportError, match=r"t\.json\.gz: not a valid gzip file"):
        read_json_text(truncated)
    broken = tmp_path / "b.json.gz"
    write_json_gz(broken, "{")
    with pytest.raises(ReportError, match=r"b\.json\.gz: not JSON"):
        load_json(broken)
    with pytest.raises(ReportError, match=r"missing\.json\.gz: cannot read"):
        load_results([tmp_path / "missing.json.gz"])


def test_content_decides_the_bytes(tmp_path: Path) -> None:
    r = _result()
    a = write_result(r, tmp_path / "a.json.gz").read_bytes()
    b = write_result(replace(r, wall_s=0.5), tmp_path / "b.json.gz").read_bytes()
    assert a != b
    assert load_results([tmp_path / "b.json.gz"])[0].wall_s == 0.5


def test_limits_and_folder_results(tmp_path: Path) -> None:
    write_json_gz(tmp_path / "limits.json.gz", json.dumps({"s1": 12.5, "s2": 3}))
    assert load_limits(tmp_path / "limits.json.gz") == {"s1": 12.5, "s2": 3.0}
    (tmp_path / "run.json").write_text("{}")
    (tmp_path / "report.json").write_text("{}")
    assert folder_results(tmp_path) == []  # limits, run and report are not results
    (tmp_path / "bad.json").write_text(json.dumps([1, 2]))
    with pytest.raises(ReportError, match=r"bad\.json: expected a JSON object"):
        load_limits(tmp_path / "bad.json")
    (tmp_path / "nan.json").write_text(json.dumps({"s1": "soon"}))
    with pytest.raises(ReportError, match=r"nan\.json: limit of 's1' is not a number: 'soon'"):
        load_limits(tmp_path / "nan.json")
