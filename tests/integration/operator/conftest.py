"""The operator running against kmock, an in-memory Kubernetes API emulator.

No real API server can run on these machines (no kube-apiserver, no container runtime);
kmock's ``KubernetesEmulator`` serves discovery, list, watch, create, merge-patch and delete
over real HTTP on a free loopback port and keeps objects in memory, including finalizer
semantics (a DELETE of an object with finalizers only sets ``deletionTimestamp``). It has no
controllers: Deployments never get ready pods and owner references are not garbage-collected,
which is why the operator's delete handlers remove owned objects themselves.

The operator runs in-process (``kopf.operator`` in a task, cluster-wide: kmock 0.8 cannot
serve ``/api/v1/namespaces``, which kopf lists when given namespaces) with short resync and
retry intervals; tests poll the emulator's objects with a bounded timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import kmock
import pytest

from saga.operator.handlers import OperatorSettings, run
from saga.operator.kube import KubeConfig

RESOURCES: dict[str, kmock.ResourceInfo] = {
    "saga.dev/v1alpha1/replicapools": kmock.ResourceInfo(
        kind="ReplicaPool",
        singular="replicapool",
        namespaced=True,
        subresources={"status"},
        verbs={"get", "list", "watch", "create", "patch", "update", "delete"},
    ),
    "saga.dev/v1alpha1/agentworkflows": kmock.ResourceInfo(
        kind="AgentWorkflow",
        singular="agentworkflow",
        namespaced=True,
        subresources={"status"},
        verbs={"get", "list", "watch", "create", "patch", "update", "delete"},
    ),
    "saga.dev/v1alpha1/tenantpolicies": kmock.ResourceInfo(
        kind="TenantPolicy",
        singular="tenantpolicy",
        namespaced=True,
        subresources={"status"},
        verbs={"get", "list", "watch", "create", "patch", "update", "delete"},
    ),
    "apps/v1/deployments": kmock.ResourceInfo(kind="Deployment", namespaced=True),
    "apps/v1/statefulsets": kmock.ResourceInfo(kind="StatefulSet", namespaced=True),
    "v1/services": kmock.ResourceInfo(kind="Service", namespaced=True),
    "v1/configmaps": kmock.ResourceInfo(kind="ConfigMap", namespaced=True),
    "v1/secrets": kmock.ResourceInfo(kind="Secret", namespaced=True),
    "v1/events": kmock.ResourceInfo(kind="Event", namespaced=True),
    # Discovered only (kopf's backbone needs it); never listed by a cluster-wide operator.
    "v1/namespaces": kmock.ResourceInfo(kind="Namespace", namespaced=False),
}
PLURALS = {"ReplicaPool": "replicapools", "AgentWorkflow": "agentworkflows", "TenantPolicy": "tenantpolicies"}
NS = "ml"


class Cluster:
    """Helpers over the emulator: create/patch/delete through HTTP, read objects, poll."""

    def __init__(self, emulator: kmock.KubernetesEmulator, server: kmock.Server) -> None:
        self.k = emulator
        self.url = str(server.url).rstrip("/")
        self.http = server.client
        self._uid = 0

    def path(self, api_version: str, plural: str, name: str | None = None) -> str:
        base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
        p = f"{base}/namespaces/{NS}/{plural}"
        return f"{p}/{name}" if name else p

    async def create(self, obj: dict[str, Any], plural: str | None = None) -> None:
        self._uid += 1
        obj.setdefault("metadata", {}).setdefault("namespace", NS)
        obj["metadata"].setdefault("uid", f"uid-{self._uid}")
        obj["metadata"].setdefault("generation", 1)
        # kmock assigns no resourceVersion; kopf's JSON patches test for one.
        obj["metadata"].setdefault("resourceVersion", "1")
        plural = plural or PLURALS[obj["kind"]]
        async with self.http.post(self.path(obj["apiVersion"], plural), json=obj) as r:
            assert r.status < 300, await r.text()

    async def patch(self, api_version: str, plural: str, name: str, body: dict[str, Any]) -> None:
        headers = {"Content-Type": "application/merge-patch+json"}
        async with self.http.patch(self.path(api_version, plural, name), json=body, headers=headers) as r:
            assert r.status < 300, await r.text()

    async def delete(self, api_version: str, plural: str, name: str) -> None:
        async with self.http.delete(self.path(api_version, plural, name)) as r:
            assert r.status < 300, await r.text()

    def get(self, resource: str, name: str) -> dict[str, Any] | None:
        key = (kmock.resource(resource), NS, name)
        if key not in self.k.objects or self.k.objects[key].deleted:
            return None
        raw: dict[str, Any] = self.k.objects[key].raw
        return raw

    async def wait_for(self, what: str, check: Callable[[], Any], timeout: float = 20.0) -> Any:
        """Poll ``check`` until it returns a truthy value (bounded; no fixed sleeps)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            value = check()
            if value:
                return value
            if loop.time() > deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for {what}")
            await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def running_cluster(**settings: Any) -> AsyncIterator[Cluster]:
    """kmock plus the operator running against it (``settings``: OperatorSettings overrides)."""
    async with kmock.KubernetesEmulator() as emulator, kmock.Server(emulator) as server:
        for key, info in RESOURCES.items():
            emulator.resources[key] = info
        cl = Cluster(emulator, server)
        opts: dict[str, Any] = {
            "resync_interval_s": 1.0,
            "retry_delay_s": 0.5,
            "kube": KubeConfig.for_server(cl.url, verify_tls=False),
            "graph_bundle_name": "saga-graphs",
            "graph_bundle_namespace": NS,
            "tenant_bundle_name": "saga-tenants",
            "tenant_bundle_namespace": NS,
        }
        opts.update(settings)
        stop = asyncio.Event()
        ready = asyncio.Event()
        task = asyncio.create_task(run(OperatorSettings(**opts), stop_flag=stop, ready_flag=ready))
        await asyncio.wait_for(ready.wait(), timeout=20)
        try:
            yield cl
        finally:
            stop.set()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(task, timeout=20)


@pytest.fixture
async def cluster() -> AsyncIterator[Cluster]:
    async with running_cluster() as cl:
        yield cl
