"""Bundles: one ConfigMap that many custom resources each write their own keys into.

The operator publishes graphs (``AgentWorkflow`` → the chart's ``<release>-graphs``,
:mod:`.agentworkflow`) and tenant policies (``TenantPolicy`` → ``<release>-tenants``,
:mod:`.tenantpolicy`) as keys of one ConfigMap per kind, which the chart mounts into the
scheduler. A bundle is shared, so it has no owner reference (deleting one resource must not
delete the others' keys); instead each key's writer is recorded in an annotation
``<prefix><key>`` = ``<namespace>/<name>`` of the resource (:func:`writer`), and the bundle
carries the labels ``saga.dev/role=<role>`` and ``app.kubernetes.io/managed-by``.

What differs between the two bundles (label, annotation prefix, who writes, the conflict
message) is a :class:`Bundle` each module declares once:

* :meth:`Bundle.key_patch`: the merge patch that gives a writer's keys the wanted values (a
  ``None`` value: the key must be absent) and claims the annotation; ``None`` when the bundle
  already holds them and the annotation is the writer's; a conflict message (and no patch)
  when the annotation names another writer, so a second resource never takes a key over.
* :meth:`Bundle.key_removal`: the merge patch that removes a writer's keys and its
  annotation; ``None`` when the annotation names another writer or none (only the writer
  removes its key).

Patches are RFC 7386 merge patches (``KubeClient.merge``): keys left out stay and ``null``
removes one, so writers never overwrite each other's keys. Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from saga.operator.reconcile.common import LABEL_MANAGED_BY, LABEL_ROLE, MANAGED_BY, Json, meta


def writer(obj: Mapping[str, Any]) -> str:
    """The annotation value naming ``obj`` as a key's writer: ``<namespace>/<name>``."""
    m = meta(obj)
    return f"{m.get('namespace', 'default')}/{m.get('name', '')}"


def configmap(name: str, namespace: str, role: str, annotations: Mapping[str, str | None]) -> Json:
    """The bundle's skeleton (identity, labels, the given owner annotations), no data."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {LABEL_ROLE: role, LABEL_MANAGED_BY: MANAGED_BY},
            "annotations": dict(annotations),
        },
    }


@dataclass(frozen=True, slots=True)
class Bundle:
    """One kind of bundle: what its ConfigMap is labelled, how key owners are annotated, and
    who writes it (for the conflict message)."""

    role: str  # the saga.dev/role label of the bundle ConfigMap
    owner_prefix: str  # owner annotation of a key stem: <owner_prefix><stem> = "<ns>/<name>"
    writer_kind: str  # kind of the custom resources writing keys, e.g. "TenantPolicy"
    rule: str  # the conflict message's last words, e.g. "one policy per tenant"

    def key_patch(
        self,
        obj: Mapping[str, Any],
        current: Mapping[str, Any] | None,
        want: Mapping[str, Mapping[str, str | None]],
        *,
        stem: str,
        what: str,
        name: str,
        namespace: str,
    ) -> tuple[Json | None, str | None]:
        """``(patch, conflict)`` for ``obj`` to make the bundle ``namespace/name`` hold ``want``.

        ``want`` maps a field (``data``, ``binaryData``) to keys and their wanted values,
        ``None`` for a key that must be absent. ``current`` is the bundle as read (None:
        absent; the patch is then the ConfigMap to create). ``stem`` names the owner
        annotation; when it names another resource the result is ``(None, message)``, the
        message naming ``what`` is published (``tenant 'acme'``) and by whom. The patch holds
        the annotation and only the keys whose value differs from ``current``.
        """
        owner_key = self.owner_prefix + stem
        me = writer(obj)
        cur = current or {}
        owner = (meta(cur).get("annotations") or {}).get(owner_key)
        if owner not in (None, me):
            return None, (
                f"{what} is already published in ConfigMap {namespace}/{name} by "
                f"{self.writer_kind} {owner}; {self.rule}"
            )
        changes: dict[str, dict[str, str | None]] = {}
        for field_name, keys in want.items():
            have = cur.get(field_name) or {}
            for key, value in keys.items():
                if key in have if value is None else have.get(key) != value:
                    changes.setdefault(field_name, {})[key] = value
        if not changes and owner == me:
            return None, None
        out = configmap(name, namespace, self.role, {owner_key: me})
        out.update(changes)
        return out, None

    def key_removal(
        self,
        obj: Mapping[str, Any],
        current: Mapping[str, Any] | None,
        keys: Mapping[str, Iterable[str]],
        *,
        stem: str,
    ) -> Json | None:
        """The merge patch that removes ``obj``'s ``keys`` (field → keys; those present) and
        its owner annotation for ``stem`` from the bundle ``current``; None when ``current``
        is absent or the annotation does not name ``obj``."""
        if current is None:
            return None
        owner_key = self.owner_prefix + stem
        cur_meta = meta(current)
        if (cur_meta.get("annotations") or {}).get(owner_key) != writer(obj):
            return None
        name, namespace = str(cur_meta.get("name", "")), str(cur_meta.get("namespace", ""))
        out = configmap(name, namespace, self.role, {owner_key: None})
        for field_name, names in keys.items():
            have = current.get(field_name) or {}
            gone = {key: None for key in names if key in have}
            if gone:
                out[field_name] = gone
        return out
