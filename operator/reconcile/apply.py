"""Converging apply: the merge patch that makes a live object equal the rendered one.

The operator owns every field it renders into a child object (Deployment, StatefulSet,
Service, ConfigMap), and nothing else on it (the API server's defaults, ``status``, other
controllers' annotations). A plain JSON merge patch of the rendered object (RFC 7386) adds
and changes fields but never removes one: a key dropped from the rendering (a
``nodeSelector`` entry, a label, a ConfigMap data key) would stay on the live object forever.

So every applied object records the **field tree** it was rendered with in the annotation
:data:`ANNOTATION_APPLIED_FIELDS` (``saga.dev/applied-fields``): the nested keys of its
mappings as JSON, e.g. ``{"data":{"graph.json":{},"version":{}},"metadata":{...}}``. Lists are
leaves (a merge patch replaces a list whole, so a removed list item already converges). The
next apply computes (:func:`converge_patch`):

* the rendered object (minus ``apiVersion``, ``kind``, ``status``), plus
* an explicit ``null`` for every key in the recorded tree that the new rendering lacks.
  A removed key whose recorded subtree has keys is descended into, so only the keys the
  operator set are nulled (an annotation another controller added to the same map stays),
* plus the new tree in the annotation.

This is kubectl's client-side three-way apply, with the key tree instead of the whole last
object in the annotation (a graph ConfigMap holds up to ~1 MiB; annotations hold 256 KiB).
Both kmock and a real API server apply ``null`` in a merge patch as "delete this key"; kmock
serves no server-side apply and no ``PUT`` on a named object, which ruled those out. An object
written by an operator version without the annotation has no recorded tree: its first apply
removes nothing and records the tree, later ones converge.

:func:`converge_patch` returns ``None`` when applying the patch would change nothing, so a
resync of an unchanged resource sends no write.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from typing import Any

from saga.operator.reconcile.common import Json

ANNOTATION_APPLIED_FIELDS = "saga.dev/applied-fields"
# Top-level fields never applied: identity (in the URL) and what the API server owns.
_NOT_APPLIED = ("apiVersion", "kind", "status")
# metadata fields the API server owns (never recorded, never nulled).
_SERVER_METADATA = (
    "resourceVersion",
    "uid",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
)


def field_tree(value: Any) -> Json:
    """The nested keys of ``value``'s mappings (``{}`` for a leaf or an empty mapping)."""
    if not isinstance(value, Mapping):
        return {}
    return {str(k): field_tree(v) for k, v in value.items()}


def applied_body(obj: Mapping[str, Any]) -> Json:
    """``obj`` without the fields an apply never sends, and without the recorded tree."""
    body = {k: copy.deepcopy(v) for k, v in obj.items() if k not in _NOT_APPLIED}
    meta = body.get("metadata")
    if isinstance(meta, dict):
        for k in _SERVER_METADATA:
            meta.pop(k, None)
        ann = meta.get("annotations")
        if isinstance(ann, dict):
            ann.pop(ANNOTATION_APPLIED_FIELDS, None)
            if not ann:
                del meta["annotations"]
    return body


def recorded_tree(live: Mapping[str, Any] | None) -> Json:
    """The field tree recorded on ``live`` (``{}`` when absent or unreadable)."""
    if live is None:
        return {}
    meta = live.get("metadata") or {}
    ann = meta.get("annotations") if isinstance(meta, Mapping) else None
    raw = ann.get(ANNOTATION_APPLIED_FIELDS) if isinstance(ann, Mapping) else None
    if not isinstance(raw, str):
        return {}
    try:
        tree = json.loads(raw)
    except ValueError:
        return {}
    return tree if isinstance(tree, dict) and _is_tree(tree) else {}


def _is_tree(value: Any) -> bool:
    return isinstance(value, dict) and all(isinstance(k, str) and _is_tree(v) for k, v in value.items())


def _null_removed(patch: Json, desired: Mapping[str, Any], previous: Mapping[str, Any]) -> None:
    """Add to ``patch`` a ``null`` for each key of ``previous`` that ``desired`` lacks."""
    for key, sub in previous.items():
        if key in desired:
            want = desired[key]
            if isinstance(want, Mapping) and sub:
                nested = patch.setdefault(key, {})
                if isinstance(nested, dict):
                    _null_removed(nested, want, sub)
            continue
        if sub:  # a mapping we filled: remove only our keys (others' keys in it stay)
            owned: Json = {}
            _null_removed(owned, {}, sub)
            patch[key] = owned
        else:
            patch[key] = None


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch of ``target`` (neither argument is modified)."""
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, Mapping) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


def with_tree(obj: Mapping[str, Any]) -> Json:
    """``obj`` (a rendered object) with its field tree recorded: what a create sends."""
    body = applied_body(obj)
    out: Json = {k: copy.deepcopy(v) for k, v in obj.items() if k in ("apiVersion", "kind")}
    out.update(body)
    meta = out.setdefault("metadata", {})
    meta.setdefault("annotations", {})[ANNOTATION_APPLIED_FIELDS] = _encode(field_tree(body))
    return out


def converge_patch(desired: Mapping[str, Any], live: Mapping[str, Any]) -> Json | None:
    """The merge patch that makes ``live`` match ``desired`` in every field the operator owns
    (set what ``desired`` has, remove what the previous apply set and ``desired`` lacks);
    ``None`` when ``live`` already matches."""
    body = applied_body(desired)
    patch = copy.deepcopy(body)
    _null_removed(patch, body, recorded_tree(live))
    meta = patch.setdefault("metadata", {})
    ann = meta.get("annotations")
    if not isinstance(ann, dict):
        ann = meta["annotations"] = {}
    ann[ANNOTATION_APPLIED_FIELDS] = _encode(field_tree(body))
    if merge_patch(live, patch) == dict(live):
        return None
    return patch


def _encode(tree: Json) -> str:
    return json.dumps(tree, sort_keys=True, separators=(",", ":"))
