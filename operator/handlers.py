"""Thin kopf handlers over the pure reconcile functions.

Each resource has one level-triggered reconcile coroutine, run on create, update, resume
(operator restart) and every ``resync_interval_s`` by a timer: it reads what it needs, asks
the pure function for the desired objects and status, applies them and writes the status.
Owned objects are applied so that they converge on the rendering
(:meth:`~saga.operator.kube.KubeClient.apply`: keys a previous rendering set and this one
lacks are deleted, and an unchanged object is not written); the shared bundle ConfigMaps are
merge-patched key by key (:meth:`~saga.operator.kube.KubeClient.merge`). Deletion goes
through a finalizer (kopf adds it because a delete handler exists) whose handler removes the
owned objects; the owner references on them let a real cluster's garbage collector do the
same if the operator is gone.

Errors:

- an invalid spec (:class:`~saga.operator.reconcile.common.Invalid`) sets ``Ready=False``
  with reason ``InvalidSpec`` and the message, posts a Warning event and raises
  :class:`kopf.PermanentError` (no retry until the spec changes);
- a transient API or Redis failure, a missing trace source or a missing Secret raises
  :class:`kopf.TemporaryError` (retried after ``retry_delay_s``), after recording the reason
  in the status conditions;
- any other exception is retried by kopf with its default back-off.

Settings (:class:`OperatorSettings`) are the only tunables; the chart sets them from values.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import kopf

from saga.operator import sources
from saga.operator.kube import ApiError, KubeClient, KubeConfig, TransientApiError
from saga.operator.reconcile import agentworkflow, replicapool, tenantpolicy
from saga.operator.reconcile.common import (
    GROUP,
    VERSION,
    Invalid,
    condition,
    invalid_status,
    merge_conditions,
)

log = logging.getLogger("saga.operator")


@dataclass(frozen=True, slots=True)
class OperatorSettings:
    """The operator's tunables."""

    # Seconds between level-triggered re-reconciles of every resource: picks up ready replica
    # counts, new traces and drift. 60 s keeps API load low (one GET/PATCH per object per minute).
    resync_interval_s: float = 60.0
    # Seconds before retrying a temporary failure (missing Secret or trace source, API 5xx).
    retry_delay_s: float = 30.0
    # Default Redis URL for trace sources and graph storage that name none ("" = none).
    redis_url: str = ""
    # The graph bundle (one ConfigMap, one key per agent type) that ConfigMap-stored workflows
    # are also published into, for the scheduler to mount at spec.graphs.directory. The chart
    # sets both (<release>-graphs in the release namespace). Empty namespace: no bundle.
    graph_bundle_name: str = "saga-graphs"
    graph_bundle_namespace: str = ""
    # The tenant bundle (one ConfigMap, one key <tenant>.json per TenantPolicy) the scheduler
    # mounts at spec.tenant_policies.directory and hot-reloads. The chart sets both
    # (<release>-tenants in the release namespace). Empty namespace: no bundle.
    tenant_bundle_name: str = "saga-tenants"
    tenant_bundle_namespace: str = ""
    # kopf's own storage keys live under this prefix (finalizer, progress, last-handled spec).
    prefix: str = "operator.saga.dev"
    kube: KubeConfig | None = None  # None: in-cluster ServiceAccount
    extra: Mapping[str, Any] = field(default_factory=dict)


def _now() -> str:
    return datetime.datetime.now(tz=datetime.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _fail_invalid(body: kopf.Body, patch: kopf.Patch, invalid: Invalid) -> None:
    patch.status.update(invalid_status(body, invalid, now=_now()))
    kopf.warn(body, reason=invalid.reason, message=str(invalid))
    raise kopf.PermanentError(str(invalid))


def _retry(
    body: kopf.Body, patch: kopf.Patch, reason: str, message: str, delay: float
) -> kopf.TemporaryError:
    prev = body.get("status") or {}
    patch.status["conditions"] = merge_conditions(
        prev.get("conditions"), condition("Ready", False, reason, message, now=_now())
    )
    patch.status["phase"] = "Pending"
    return kopf.TemporaryError(f"{reason}: {message}", delay=delay)


def _kube(memo: Any) -> KubeClient:
    kube: KubeClient = memo.kube
    return kube


def _settings(memo: Any) -> OperatorSettings:
    s: OperatorSettings = memo.settings
    return s


# --------------------------------------------------------------------------- ReplicaPool


async def reconcile_replicapool(body: kopf.Body, patch: kopf.Patch, memo: Any) -> None:
    kube, settings = _kube(memo), _settings(memo)
    want = replicapool.desired(body)
    if isinstance(want, Invalid):
        _fail_invalid(body, patch, want)
        return
    ns = str(body["metadata"]["namespace"])
    name = str(body["metadata"]["name"])
    try:
        await kube.apply(want.service)
        observed = await kube.apply(want.workload)
        # A pool switched between Deployment and StatefulSet: remove the other kind.
        for other in replicapool.WORKLOAD_KINDS:
            if other != want.workload_kind:
                old = await kube.get("apps/v1", other, ns, name)
                if old is not None and _owned_by(old, body):
                    await kube.delete("apps/v1", other, ns, name)
                    kopf.info(body, reason="WorkloadReplaced", message=f"deleted {other} {name}")
    except TransientApiError as e:
        raise _retry(body, patch, "ApiUnavailable", str(e), settings.retry_delay_s) from e
    except ApiError as e:
        raise _retry(body, patch, "ApplyFailed", str(e), settings.retry_delay_s) from e
    status = replicapool.status(body, observed, now=_now())
    patch.status.update(status)


def _owned_by(child: Mapping[str, Any], owner: Mapping[str, Any]) -> bool:
    uid = owner.get("metadata", {}).get("uid")
    return any(r.get("uid") == uid for r in child.get("metadata", {}).get("ownerReferences") or [])


async def delete_replicapool(body: Mapping[str, Any], memo: Any) -> None:
    kube = _kube(memo)
    ns, name = str(body["metadata"]["namespace"]), str(body["metadata"]["name"])
    try:
        for kind in replicapool.WORKLOAD_KINDS:
            await kube.delete("apps/v1", kind, ns, name)
        await kube.delete("v1", "Service", ns, name)
    except TransientApiError as e:
        raise kopf.TemporaryError(str(e), delay=_settings(memo).retry_delay_s) from e


# --------------------------------------------------------------------------- AgentWorkflow


async def reconcile_agentworkflow(body: kopf.Body, patch: kopf.Patch, memo: Any) -> None:
    kube, settings = _kube(memo), _settings(memo)
    spec = agentworkflow.parse_spec(body)
    if isinstance(spec, Invalid):
        _fail_invalid(body, patch, spec)
        return
    ns = str(body["metadata"]["namespace"])
    try:
        text = await sources.fetch_traces(kube, spec.source, ns, settings.redis_url)
    except sources.SourceUnavailable as e:
        raise _retry(body, patch, "TracesUnavailable", str(e), settings.retry_delay_s) from e
    except TransientApiError as e:
        raise _retry(body, patch, "ApiUnavailable", str(e), settings.retry_delay_s) from e
    try:
        graph = await asyncio.to_thread(sources.build_graph, text, spec.agent_type, spec.trace_format)
    except sources.TraceBuildError as e:
        _fail_invalid(body, patch, Invalid("spec.source", f"traces cannot be read: {e}", reason="BadTraces"))
        return
    url = spec.redis_url or settings.redis_url
    stored = None
    if spec.storage == "redis":
        if not url:
            raise _retry(
                body,
                patch,
                "StoreUnavailable",
                "no Redis URL: set spec.storage.redisUrl or the operator's --redis-url",
                settings.retry_delay_s,
            )
        try:
            stored = await sources.read_stored(url, spec.store_namespace, spec.agent_type)
        except sources.SourceUnavailable as e:
            raise _retry(body, patch, "StoreUnavailable", str(e), settings.retry_delay_s) from e
    result = agentworkflow.reconcile(body, graph, now=_now(), stored=stored)
    if isinstance(result, Invalid):  # parse_spec passed above, so this cannot happen
        _fail_invalid(body, patch, result)
        return
    try:
        if result.configmap is not None:
            await kube.apply(result.configmap)
        if result.store_put is not None:
            put = result.store_put
            got = await sources.put_stored(url, spec.store_namespace, put)
            if got != put.expected_version + 1:  # another writer moved the version: re-read
                raise sources.SourceUnavailable(
                    f"graph of {spec.agent_type!r} changed in the store meanwhile (v{got}); retrying"
                )
        await _sync_bundle(body, spec, graph, memo)
        stale = agentworkflow.stale_store_ref(body, spec)
        if stale is not None and url:
            await sources.delete_stored(url, stale.store_namespace, stale.agent_type, stale.digest)
    except (TransientApiError, sources.SourceUnavailable) as e:
        raise _retry(body, patch, "StoreUnavailable", str(e), settings.retry_delay_s) from e
    except ApiError as e:  # e.g. a 409 from a concurrent writer: retry soon, not at kopf's back-off
        raise _retry(body, patch, "ApplyFailed", str(e), settings.retry_delay_s) from e
    if result.changed:
        kopf.info(
            body,
            reason="GraphBuilt",
            message=f"graph v{result.version} from {graph.sessions_seen} sessions "
            f"({result.status['graphRef']})",
        )
    patch.status.update(result.status)


async def _sync_bundle(
    body: kopf.Body, spec: agentworkflow.WorkflowSpec, graph: agentworkflow.BuiltGraph, memo: Any
) -> None:
    """Put the workflow's graph into the graph bundle (ConfigMap storage) or take it out."""
    kube, settings = _kube(memo), _settings(memo)
    name, ns = settings.graph_bundle_name, settings.graph_bundle_namespace
    if not ns or not name:
        return
    current = await kube.get("v1", "ConfigMap", ns, name)
    if spec.storage == "configMap":
        want, conflict = agentworkflow.bundle_patch(body, graph, current, name=name, namespace=ns)
        if conflict is not None:
            kopf.warn(body, reason="AgentTypeTaken", message=conflict)
    else:
        want = agentworkflow.bundle_removal(body, spec.agent_type, current)
    await _merge_bundle(kube, body, want)


async def _merge_bundle(kube: KubeClient, body: kopf.Body, want: Mapping[str, Any] | None) -> None:
    """Merge-patch a bundle with ``want`` (nothing when None). A refusal that is not transient
    (e.g. the bundle would exceed 1 MiB) is a ``BundleRejected`` warning on ``body``: the
    resource's own ConfigMap stands; transient errors propagate (the handler retries)."""
    if want is None:
        return
    try:
        await kube.merge(want)
    except TransientApiError:
        raise
    except ApiError as e:
        m = want["metadata"]
        kopf.warn(body, reason="BundleRejected", message=f"ConfigMap {m['namespace']}/{m['name']}: {e}")


async def delete_agentworkflow(body: Mapping[str, Any], memo: Any) -> None:
    kube, settings = _kube(memo), _settings(memo)
    ns = str(body["metadata"]["namespace"])
    try:
        await kube.delete("v1", "ConfigMap", ns, agentworkflow.configmap_name(body))
        spec = agentworkflow.parse_spec(body)
        bundle_ns, bundle_name = settings.graph_bundle_namespace, settings.graph_bundle_name
        if not isinstance(spec, Invalid) and bundle_ns and bundle_name:
            current = await kube.get("v1", "ConfigMap", bundle_ns, bundle_name)
            removal = agentworkflow.bundle_removal(body, spec.agent_type, current)
            if removal is not None:
                await kube.merge(removal)
        # storage: redis: delete the graph document the workflow published, so running
        # schedulers (spec.graphs.from_store) drop the agent type at their next poll.
        url = _spec_redis_url(spec) or settings.redis_url
        for ref in agentworkflow.published_store_refs(body):
            if not url:
                log.warning("%s/%s: no Redis URL to delete graph %s from", ns, body["metadata"]["name"], ref)
            elif not await sources.delete_stored(url, ref.store_namespace, ref.agent_type, ref.digest):
                log.info("graph of %r in the store is not this workflow's (anymore): left", ref.agent_type)
    except (TransientApiError, sources.SourceUnavailable) as e:
        raise kopf.TemporaryError(str(e), delay=settings.retry_delay_s) from e


def _spec_redis_url(spec: agentworkflow.WorkflowSpec | Invalid) -> str:
    return "" if isinstance(spec, Invalid) else spec.redis_url


# --------------------------------------------------------------------------- TenantPolicy


async def reconcile_tenantpolicy(body: kopf.Body, patch: kopf.Patch, memo: Any) -> None:
    kube, settings = _kube(memo), _settings(memo)
    spec = tenantpolicy.parse_spec(body)
    if isinstance(spec, Invalid):
        _fail_invalid(body, patch, spec)
        return
    ns = str(body["metadata"]["namespace"])
    try:
        secret = await kube.get("v1", "Secret", ns, spec.secret_name)
        result = tenantpolicy.reconcile(body, secret, now=_now())
        if isinstance(result, Invalid):
            _fail_invalid(body, patch, result)
            return
        patch.status.update(result.status)
        if result.configmap is not None:
            await kube.apply(result.configmap)
        else:
            await kube.delete("v1", "ConfigMap", ns, tenantpolicy.configmap_name(body))
        await _sync_tenant_bundle(body, spec.tenant, result.configmap, memo)
    except TransientApiError as e:
        raise _retry(body, patch, "ApiUnavailable", str(e), settings.retry_delay_s) from e
    if not result.secret_ok:
        message = str(result.status["conditions"][-1]["message"])
        kopf.warn(body, reason="SecretNotFound", message=message)
        raise kopf.TemporaryError(message, delay=settings.retry_delay_s)


async def _sync_tenant_bundle(
    body: kopf.Body, tenant: str, configmap: Mapping[str, Any] | None, memo: Any
) -> None:
    """Put the policy into the tenant bundle (published) or take it out (Secret missing);
    a key the policy wrote for another tenant (renamed) is taken out."""
    kube, settings = _kube(memo), _settings(memo)
    name, ns = settings.tenant_bundle_name, settings.tenant_bundle_namespace
    if not ns or not name:
        return
    current = await kube.get("v1", "ConfigMap", ns, name)
    for old in tenantpolicy.published_tenants(body):
        if old != tenant and (removal := tenantpolicy.bundle_removal(body, old, current)) is not None:
            current = await kube.merge(removal)
    if configmap is not None:
        document = str(configmap["data"]["tenant.json"])
        want, conflict = tenantpolicy.bundle_patch(body, tenant, document, current, name=name, namespace=ns)
        if conflict is not None:
            kopf.warn(body, reason="TenantTaken", message=conflict)
    else:
        want = tenantpolicy.bundle_removal(body, tenant, current)
    await _merge_bundle(kube, body, want)


async def delete_tenantpolicy(body: Mapping[str, Any], memo: Any) -> None:
    kube, settings = _kube(memo), _settings(memo)
    ns = str(body["metadata"]["namespace"])
    try:
        await kube.delete("v1", "ConfigMap", ns, tenantpolicy.configmap_name(body))
        bundle_ns, bundle_name = settings.tenant_bundle_namespace, settings.tenant_bundle_name
        if bundle_ns and bundle_name:
            current = await kube.get("v1", "ConfigMap", bundle_ns, bundle_name)
            for tenant in tenantpolicy.published_tenants(body):
                removal = tenantpolicy.bundle_removal(body, tenant, current)
                if removal is not None:
                    current = await kube.merge(removal)
    except TransientApiError as e:
        raise kopf.TemporaryError(str(e), delay=settings.retry_delay_s) from e


# --------------------------------------------------------------------------- registry


def build_registry(settings: OperatorSettings) -> kopf.OperatorRegistry:
    """A kopf registry with every handler (one per call: tests run operators side by side)."""
    registry = kopf.OperatorRegistry()
    prefix = settings.prefix

    @kopf.on.startup(registry=registry)
    async def _configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.persistence.finalizer = f"{prefix}/finalizer"
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=prefix)
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=prefix)
        settings.posting.level = logging.INFO
        # The CRDs ship with the chart: no need to watch CRDs or namespaces at runtime (and no
        # RBAC to list them cluster-wide).
        settings.scanning.disabled = True
        settings.watching.server_timeout = 300
        settings.networking.request_timeout = 60

    @kopf.on.login(registry=registry)
    async def _login(**_: Any) -> kopf.ConnectionInfo:
        cfg = settings.kube or KubeConfig.in_cluster()
        return kopf.ConnectionInfo(
            server=cfg.server,
            token=cfg.token,
            ca_path=cfg.ca_file,
            insecure=not cfg.verify_tls if cfg.ca_file is None else None,
            default_namespace="default",
        )

    @kopf.on.cleanup(registry=registry)
    async def _close(memo: MutableMapping[str, Any], **_: Any) -> None:
        await memo["kube"].close()

    for plural, reconcile, delete in (
        (replicapool.PLURAL, reconcile_replicapool, delete_replicapool),
        (agentworkflow.PLURAL, reconcile_agentworkflow, delete_agentworkflow),
        (tenantpolicy.PLURAL, reconcile_tenantpolicy, delete_tenantpolicy),
    ):
        _register(registry, plural, reconcile, delete, settings)
    return registry


def _register(
    registry: kopf.OperatorRegistry, plural: str, reconcile: Any, delete: Any, settings: OperatorSettings
) -> None:
    async def level(body: kopf.Body, patch: kopf.Patch, memo: Any, **_: Any) -> None:
        await reconcile(body, patch, memo)

    async def tick(body: kopf.Body, patch: kopf.Patch, memo: Any, **_: Any) -> None:
        if body.get("metadata", {}).get("deletionTimestamp"):
            return
        # An invalid spec was already reported by the change handlers; wait for a spec change.
        with contextlib.suppress(kopf.PermanentError):
            await reconcile(body, patch, memo)

    async def gone(body: kopf.Body, memo: Any, **_: Any) -> None:
        await delete(body, memo)

    res = (GROUP, VERSION, plural)
    kopf.on.create(*res, id="reconcile", registry=registry)(level)
    kopf.on.update(*res, id="reconcile", registry=registry)(level)
    kopf.on.resume(*res, id="reconcile", registry=registry)(level)
    kopf.timer(
        *res,
        id="resync",
        interval=settings.resync_interval_s,
        initial_delay=settings.resync_interval_s,
        registry=registry,
    )(tick)
    kopf.on.delete(*res, id="cleanup", registry=registry)(gone)


def make_memo(settings: OperatorSettings) -> kopf.Memo:
    memo = kopf.Memo()
    memo["settings"] = settings
    memo["kube"] = KubeClient(settings.kube or KubeConfig.in_cluster())
    return memo


async def run(
    settings: OperatorSettings,
    *,
    namespaces: tuple[str, ...] = (),
    stop_flag: asyncio.Event | None = None,
    ready_flag: asyncio.Event | None = None,
    liveness_endpoint: str | None = None,
) -> None:
    """Run the operator until ``stop_flag`` is set (or forever).

    ``liveness_endpoint`` (e.g. ``http://0.0.0.0:8080/healthz``) serves kopf's health probe.
    """
    await kopf.operator(
        registry=build_registry(settings),
        memo=make_memo(settings),
        standalone=True,
        clusterwide=not namespaces,
        namespaces=namespaces,
        stop_flag=stop_flag,
        ready_flag=ready_flag,
        liveness_endpoint=liveness_endpoint,
    )
