"""Converging apply: removed keys get explicit nulls, foreign keys stay, no-op applies send nothing."""

from __future__ import annotations

import json
from typing import Any

import pytest

from saga.operator.reconcile.apply import (
    ANNOTATION_APPLIED_FIELDS,
    converge_patch,
    field_tree,
    merge_patch,
    recorded_tree,
    with_tree,
)

pytestmark = pytest.mark.unit


def deployment(node_selector: dict[str, str], labels: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "p", "namespace": "ml", "labels": dict(labels)},
        "spec": {
            "replicas": 2,
            "template": {
                "spec": {
                    "nodeSelector": dict(node_selector),
                    "containers": [{"name": "sglang", "args": ["--a", "--b"]}],
                }
            },
        },
    }


def created(obj: dict[str, Any]) -> dict[str, Any]:
    """What the API server stores for a create: the body plus server-owned fields."""
    live = with_tree(obj)
    live["metadata"].update(uid="u1", resourceVersion="7")
    live["metadata"]["annotations"]["deployment.kubernetes.io/revision"] = "3"  # another writer
    live["spec"]["strategy"] = {"type": "RollingUpdate"}  # a server default
    live["status"] = {"readyReplicas": 2}
    return live


def test_removed_map_keys_are_nulled_and_others_keys_stay() -> None:
    live = created(deployment({"gpu": "a100", "zone": "b"}, {"app": "x", "team": "y"}))
    want = deployment({"gpu": "a100"}, {"app": "x"})
    patch = converge_patch(want, live)
    assert patch is not None
    assert patch["spec"]["template"]["spec"]["nodeSelector"] == {"gpu": "a100", "zone": None}
    assert patch["metadata"]["labels"] == {"app": "x", "team": None}
    after = merge_patch(live, patch)
    assert after["spec"]["template"]["spec"]["nodeSelector"] == {"gpu": "a100"}
    assert after["metadata"]["labels"] == {"app": "x"}
    # What the operator did not set is left alone.
    assert after["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "3"
    assert after["spec"]["strategy"] == {"type": "RollingUpdate"}
    assert after["status"] == {"readyReplicas": 2}
    assert after["metadata"]["uid"] == "u1"
    # Converged: the next apply of the same rendering sends nothing.
    assert converge_patch(want, after) is None


def test_a_whole_removed_mapping_loses_only_the_operators_keys() -> None:
    live = created(deployment({"gpu": "a100"}, {"app": "x"}))
    live["spec"]["template"]["spec"]["nodeSelector"]["added-by-webhook"] = "1"
    want = deployment({}, {"app": "x"})
    del want["spec"]["template"]["spec"]["nodeSelector"]
    patch = converge_patch(want, live)
    assert patch is not None
    assert patch["spec"]["template"]["spec"]["nodeSelector"] == {"gpu": None}
    after = merge_patch(live, patch)
    assert after["spec"]["template"]["spec"]["nodeSelector"] == {"added-by-webhook": "1"}


def test_configmap_switching_encoding_drops_the_old_key() -> None:
    small = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "w-aeg", "namespace": "ml"},
        "data": {"graph.json": "{}", "version": "1"},
    }
    live = with_tree(small)
    big = {**small, "data": {"version": "2"}, "binaryData": {"graph.json.gz": "H4sI"}}
    after = merge_patch(live, converge_patch(big, live))
    assert after["data"] == {"version": "2"}
    assert after["binaryData"] == {"graph.json.gz": "H4sI"}
    back = merge_patch(after, converge_patch(small, after))
    assert back["data"] == {"graph.json": "{}", "version": "1"}
    assert "graph.json.gz" not in (back.get("binaryData") or {})


def test_lists_are_replaced_whole_and_scalars_change() -> None:
    live = created(deployment({}, {"app": "x"}))
    want = deployment({}, {"app": "x"})
    want["spec"]["template"]["spec"]["containers"][0]["args"] = ["--a"]
    want["spec"]["replicas"] = 3
    after = merge_patch(live, converge_patch(want, live))
    assert after["spec"]["template"]["spec"]["containers"][0]["args"] == ["--a"]
    assert after["spec"]["replicas"] == 3


def test_object_without_a_recorded_tree_removes_nothing_then_converges() -> None:
    old = deployment({"gpu": "a100", "zone": "b"}, {"app": "x"})  # written by an older operator
    want = deployment({"gpu": "a100"}, {"app": "x"})
    first = merge_patch(old, converge_patch(want, old))
    assert first["spec"]["template"]["spec"]["nodeSelector"] == {"gpu": "a100", "zone": "b"}
    rendered = {k: v for k, v in want.items() if k not in ("apiVersion", "kind")}
    assert recorded_tree(first) == field_tree(rendered)
    fewer = deployment({}, {"app": "x"})
    second = merge_patch(first, converge_patch(fewer, first))
    assert second["spec"]["template"]["spec"]["nodeSelector"] == {"zone": "b"}


def test_unreadable_annotation_counts_as_none() -> None:
    live = deployment({"gpu": "a"}, {"app": "x"})
    live["metadata"]["annotations"] = {ANNOTATION_APPLIED_FIELDS: "not json"}
    assert recorded_tree(live) == {}
    live["metadata"]["annotations"] = {ANNOTATION_APPLIED_FIELDS: json.dumps({"a": 1})}
    assert recorded_tree(live) == {}
    assert recorded_tree(None) == {}


def test_the_recorded_tree_never_names_itself_or_server_fields() -> None:
    live = created(deployment({"gpu": "a"}, {"app": "x"}))
    tree = recorded_tree(live)
    assert "annotations" not in tree["metadata"]
    assert "uid" not in tree["metadata"]
    assert "status" not in tree
    assert "apiVersion" not in tree
