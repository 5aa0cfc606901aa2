"""Graph building recovers known workflows; online updates; serialisation round trips."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from saga.graphs import synthetic as synth
from saga.graphs.aeg import POOLED, GraphFormatError, GraphSet, build_graphs, common_prefix_blocks, new_tokens
from saga.graphs.dist import TIME_SPEC, LogHistogram
from saga.graphs.trace import LLMCall, SessionTrace

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def graphs() -> GraphSet:
    return build_graphs(synth.sessions(1500, seed=7))


def test_recovers_transition_probabilities(graphs: GraphSet) -> None:
    g = graphs.get("wf")
    assert g is not None
    tu, et = g.nodes["tool_use"], g.nodes["end_turn"]
    p_tool_use = tu.total_visits / (tu.total_visits + et.total_visits)
    assert p_tool_use == pytest.approx(synth.P_TOOL_USE, abs=0.02)
    forks = sum(e.count for n, e in tu.edges.items() if n.startswith("agent:"))
    bash = tu.edges["bash"].count
    read = tu.edges["read_file"].count
    # the fork edge replaces the tool label on the steps that spawned a sub-agent
    assert bash / (bash + read) == pytest.approx(synth.P_BASH, abs=0.03)
    assert forks / tu.total_visits == pytest.approx(synth.P_FORK, abs=0.015)
    assert et.total_ends / et.total_visits == pytest.approx(synth.P_END_AFTER_TURN, abs=0.04)
    assert tu.total_ends / tu.total_visits < 0.01  # only sessions hitting MAX_STEPS end there
    # tool -> next stop edge
    nxt = tu.edges["bash"].next_stop
    assert nxt["tool_use"] / sum(nxt.values()) == pytest.approx(synth.P_TOOL_USE, abs=0.03)


def test_recovers_gap_distributions(graphs: GraphSet) -> None:
    g = graphs.get("wf")
    assert g is not None
    bash = g.nodes["tool_use"].edges["bash"].gap
    read = g.nodes["tool_use"].edges["read_file"].gap
    human = g.nodes["end_turn"].edges["human"].gap
    assert bash.quantile(0.5) == pytest.approx(synth.BASH_MEDIAN_S, rel=0.1)
    assert read.quantile(0.5) == pytest.approx(synth.READ_MEDIAN_S, rel=0.1)
    assert human.quantile(0.5) == pytest.approx(synth.HUMAN_MEDIAN_S, rel=0.1)
    # log-normal sigma 0.5: p90 / p50 = exp(1.2816 * 0.5)
    assert bash.quantile(0.9) / bash.quantile(0.5) == pytest.approx(1.898, rel=0.1)


def test_subagents_have_their_own_graph(graphs: GraphSet) -> None:
    sub = graphs.get("wf/sub")
    assert sub is not None
    assert sub.sessions > 30
    assert graphs.pooled.sessions == graphs.graphs["wf"].sessions + sub.sessions
    assert set(graphs.agent_types()) == {"wf", "wf/sub"}


def test_remaining_work_counts_future_calls() -> None:
    s = SessionTrace(
        session_id="r",
        agent_type="a",
        calls=tuple(LLMCall(float(i * 10), 1.0, 100 * (i + 1), 10, stop="tool_use") for i in range(4)),
    )
    g = build_graphs([s]).get("a")
    assert g is not None
    rem = g.nodes["tool_use"].remaining
    # steps 1, 2 -> buckets 0, 1; steps 3, 4 -> bucket 2
    assert rem[0][:2] == [1.0, 3.0]
    assert rem[1][:2] == [1.0, 2.0]
    assert rem[2][:2] == [2.0, 1.0]  # 1 + 0 calls left after steps 3 and 4
    assert rem[0][4] == pytest.approx(31.0 - 1.0)  # session lasts 31 s, first call ends at 1 s


def test_online_update_equals_batch_build() -> None:
    ss = synth.sessions(300, seed=3)
    batch = build_graphs(ss)
    online = build_graphs(ss[:100])
    v = online.version
    for s in ss[100:]:
        online.update(s)
    assert online.version == v + 200
    assert online.to_json() == batch.to_json()


def test_update_changes_estimates() -> None:
    gs = GraphSet()
    s_end = SessionTrace("x", "a", (LLMCall(0, 1, 10, 1, stop="end_turn"),))
    for _ in range(10):
        gs.update(s_end)
    node = gs.graphs["a"].nodes["end_turn"]
    assert node.total_ends == 10


def test_json_round_trip(graphs: GraphSet, tmp_path: Path) -> None:
    doc = graphs.to_json()
    assert len(doc.encode()) < 1 << 20
    back = GraphSet.from_json(doc)
    assert back.to_json() == doc
    assert back.settings == graphs.settings
    g0, g1 = graphs.graphs["wf"], back.graphs["wf"]
    h0 = g0.nodes["tool_use"].edges["bash"].gap
    h1 = g1.nodes["tool_use"].edges["bash"].gap
    assert h1.quantile(0.5) == pytest.approx(h0.quantile(0.5), rel=1e-3)
    assert POOLED in back.graphs


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.__setitem__("version", 99), "version"),
        (lambda d: d.__setitem__("kind", "x"), "kind"),
        (lambda d: d["bins"].__setitem__("time_s", [1, 2, 3]), "bins.time_s"),
        (
            lambda d: d["graphs"]["wf"]["nodes"]["tool_use"].__setitem__("visits", [1]),
            "graphs.wf.nodes.tool_use.visits",
        ),
        (
            lambda d: d["graphs"]["wf"]["nodes"]["tool_use"]["edges"]["bash"].__setitem__(
                "gap_s", [[999, 1]]
            ),
            "graphs.wf.nodes.tool_use.edges.bash.gap_s",
        ),
        (lambda d: d["graphs"]["wf"].__setitem__("sessions", -1), "graphs.wf.sessions"),
    ],
)
def test_bad_documents_name_the_path(
    graphs: GraphSet, mutate: Callable[[dict[str, Any]], object], message: str
) -> None:
    d = json.loads(graphs.to_json())
    mutate(d)
    with pytest.raises(GraphFormatError, match=message.replace(".", r"\.")):
        GraphSet.from_json(json.dumps(d))
    with pytest.raises(GraphFormatError, match="not JSON"):
        GraphSet.from_json("{")


def test_new_tokens_from_hashes_and_structure() -> None:
    assert common_prefix_blocks((1, 2, 3, 4), (1, 2, 9)) == 2
    assert common_prefix_blocks((), (1,)) == 0
    assert common_prefix_blocks((1, 2), (1, 2, 3)) == 2
    hashed = SessionTrace(
        "h",
        "a",
        (LLMCall(0, 1, 200, 10, block_hashes=(1, 2, 3)), LLMCall(5, 1, 300, 10, block_hashes=(1, 2, 7, 8))),
        block_size=64,
        shared_prefix_tokens=50,
    )
    assert new_tokens(hashed) == [150, 300 - 2 * 64]
    plain = SessionTrace("p", "a", (LLMCall(0, 1, 200, 10), LLMCall(5, 1, 260, 10)))
    assert new_tokens(plain) == [200, 50]


def test_histogram_quantiles_and_prior() -> None:
    h = LogHistogram.lognormal(TIME_SPEC, 0.18, 2.4, mass=1000)
    assert h.quantile(0.5) == pytest.approx(0.18, rel=0.1)
    assert h.quantile(0.95) == pytest.approx(2.4, rel=0.15)
    assert h.total == pytest.approx(1000)
    e = LogHistogram(TIME_SPEC)
    e.add(5.0)
    back = LogHistogram.from_sparse(TIME_SPEC, e.to_sparse(), "x")
    assert back.counts == e.counts
