"""A small asyncio client for the Kubernetes REST API (the handlers' only way to write objects).

Why not the ``kubernetes`` package: it is synchronous (a thread per call under kopf's event
loop) and deserializes into generated models; the operator only needs get / create /
merge-patch / delete of plain JSON objects, which this does over one ``aiohttp`` session.

Two ways to write: :meth:`KubeClient.apply` for objects the operator renders whole (a
converging apply: the merge patch from :func:`saga.operator.reconcile.apply.converge_patch`
also deletes the keys a previous rendering set and this one lacks, and nothing is sent when
the live object already matches), and :meth:`KubeClient.merge` for a partial merge patch of a
shared object (the graph and tenant bundles, where each writer owns a few keys).

Connection: :meth:`KubeConfig.in_cluster` reads the ServiceAccount token and CA from
``/var/run/secrets/kubernetes.io/serviceaccount`` (the chart runs the operator that way);
:meth:`KubeConfig.for_server` points at any URL (tests: the kmock emulator; development:
``kubectl proxy``).

Errors: 404 is :class:`NotFound`, 409 :class:`Conflict`; 5xx, 429 and connection errors are
:class:`TransientApiError` (the handlers turn them into kopf temporary errors, retried with
back-off); other 4xx are :class:`ApiError` (a request the API will not accept as sent).
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from saga.operator.reconcile.apply import converge_patch, with_tree

Json = dict[str, Any]
SA_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")

# (apiVersion, kind) -> (API path prefix, plural) for the kinds the operator touches.
KINDS: Mapping[tuple[str, str], tuple[str, str]] = {
    ("apps/v1", "Deployment"): ("/apis/apps/v1", "deployments"),
    ("apps/v1", "StatefulSet"): ("/apis/apps/v1", "statefulsets"),
    ("v1", "Service"): ("/api/v1", "services"),
    ("v1", "ConfigMap"): ("/api/v1", "configmaps"),
    ("v1", "Secret"): ("/api/v1", "secrets"),
}


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(f"HTTP {status}: {message}")


class NotFound(ApiError):
    pass


class Conflict(ApiError):
    pass


class TransientApiError(ApiError):
    """Worth retrying: server errors, throttling, connection failures."""


@dataclass(frozen=True, slots=True)
class KubeConfig:
    server: str  # e.g. https://10.0.0.1:443
    token: str | None = None
    ca_file: str | None = None
    verify_tls: bool = True
    timeout_s: float = 30.0  # per request; the API server answers in milliseconds when healthy

    @classmethod
    def in_cluster(cls) -> KubeConfig:
        import os

        host = os.environ.get("KUBERNETES_SERVICE_HOST")
        port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
        if not host:
            raise RuntimeError("not running in a cluster (KUBERNETES_SERVICE_HOST unset); pass --server")
        token = (SA_DIR / "token").read_text().strip()
        return cls(server=f"https://{host}:{port}", token=token, ca_file=str(SA_DIR / "ca.crt"))

    @classmethod
    def for_server(cls, server: str, token: str | None = None, *, verify_tls: bool = True) -> KubeConfig:
        return cls(server=server.rstrip("/"), token=token, verify_tls=verify_tls)


def object_path(api_version: str, kind: str, namespace: str, name: str | None = None) -> str:
    try:
        prefix, plural = KINDS[(api_version, kind)]
    except KeyError:
        raise ValueError(f"the operator does not manage {api_version} {kind}") from None
    base = f"{prefix}/namespaces/{namespace}/{plural}"
    return f"{base}/{name}" if name else base


class KubeClient:
    """get / apply (create or converge) / merge (create or merge-patch) / delete of namespaced
    objects."""

    def __init__(self, config: KubeConfig) -> None:
        self.config = config
        self._session: aiohttp.ClientSession | None = None

    async def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            headers = {"Accept": "application/json"}
            if self.config.token:
                headers["Authorization"] = f"Bearer {self.config.token}"
            ssl_ctx: ssl.SSLContext | bool = True
            if self.config.ca_file:
                ssl_ctx = ssl.create_default_context(cafile=self.config.ca_file)
            elif not self.config.verify_tls:
                ssl_ctx = False
            self._session = aiohttp.ClientSession(
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=self.config.timeout_s),
                connector=aiohttp.TCPConnector(ssl=ssl_ctx),
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _request(
        self, method: str, path: str, body: Any = None, content_type: str | None = None
    ) -> Json:
        http = await self._http()
        headers = {"Content-Type": content_type} if content_type else None
        try:
            async with http.request(method, self.config.server + path, json=body, headers=headers) as resp:
                text = await resp.text()
                if resp.status < 300:
                    if not text:
                        return {}
                    data: Json = await resp.json(content_type=None)
                    return data
        except (aiohttp.ClientConnectionError, TimeoutError) as e:
            raise TransientApiError(0, f"{method} {path}: {e}") from e
        msg = f"{method} {path}: {text[:500]}"
        if resp.status == 404:
            raise NotFound(404, msg)
        if resp.status == 409:
            raise Conflict(409, msg)
        if resp.status >= 500 or resp.status == 429:
            raise TransientApiError(resp.status, msg)
        raise ApiError(resp.status, msg)

    async def get(self, api_version: str, kind: str, namespace: str, name: str) -> Json | None:
        try:
            return await self._request("GET", object_path(api_version, kind, namespace, name))
        except NotFound:
            return None

    async def apply(self, obj: Mapping[str, Any]) -> Json:
        """Create ``obj`` or make the live object equal it in every field the operator owns
        (fields a previous apply set and ``obj`` lacks are removed); idempotent, and no write
        when the live object already matches. Returns the object as stored."""
        existing = await self.get(*_identity(obj))
        if existing is None:
            try:
                return await self._create(obj, with_tree(obj))
            except Conflict:  # created concurrently: converge onto what is there
                existing = await self.get(*_identity(obj))
                if existing is None:
                    raise
        patch = converge_patch(obj, existing)
        if patch is None:
            return existing
        return await self._merge_patch(obj, patch)

    async def merge(self, obj: Mapping[str, Any]) -> Json:
        """Create ``obj`` or merge-patch the existing one with it (RFC 7386: ``null`` removes a
        key, absent keys are left alone). For objects several writers share (the bundles)."""
        if await self.get(*_identity(obj)) is None:
            try:
                return await self._create(obj, _drop_nulls(obj))
            except Conflict:
                pass  # created concurrently: fall through to patch
        patch = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "status")}
        return await self._merge_patch(obj, patch)

    async def _create(self, obj: Mapping[str, Any], body: Json) -> Json:
        """POST ``body`` as the object ``obj`` names (raises :class:`Conflict` when it exists)."""
        api_version, kind, ns, _name = _identity(obj)
        return await self._request("POST", object_path(api_version, kind, ns), body)

    async def _merge_patch(self, obj: Mapping[str, Any], patch: Json) -> Json:
        """Merge-patch (RFC 7386) the object ``obj`` names with ``patch``."""
        return await self._request(
            "PATCH", object_path(*_identity(obj)), patch, "application/merge-patch+json"
        )

    async def delete(self, api_version: str, kind: str, namespace: str, name: str) -> bool:
        """Delete; ``False`` when it was already gone."""
        try:
            await self._request("DELETE", object_path(api_version, kind, namespace, name))
        except NotFound:
            return False
        return True


def _identity(obj: Mapping[str, Any]) -> tuple[str, str, str, str]:
    """``(apiVersion, kind, namespace, name)`` of a manifest."""
    m = obj["metadata"]
    return str(obj["apiVersion"]), str(obj["kind"]), str(m["namespace"]), str(m["name"])


def _drop_nulls(value: Any) -> Any:
    """A merge patch as a new object: ``null`` entries mean "absent"."""
    if isinstance(value, Mapping):
        return {k: _drop_nulls(v) for k, v in value.items() if v is not None}
    return value
