"""SAGA's Kubernetes operator.

Layout:

- :mod:`saga.operator.reconcile`: pure reconcile functions, one module per custom resource
  (``ReplicaPool``, ``AgentWorkflow``, ``TenantPolicy``). Spec in, desired Kubernetes
  objects and status out; an invalid spec yields an :class:`~saga.operator.reconcile.common.Invalid`
  value with a message a user can act on. No Kubernetes, kopf or network library is imported
  there (an import-linter contract enforces it).
- :mod:`saga.operator.kube`: a small asyncio client for the Kubernetes REST API (create-or-patch,
  get, delete), used by the handlers.
- :mod:`saga.operator.sources`: fetch traces for an ``AgentWorkflow`` (ConfigMap, Redis key,
  SDK event stream) and store built graphs in Redis.
- :mod:`saga.operator.handlers`: thin kopf handlers over the reconcile functions.
- :mod:`saga.operator.cli`: ``saga operator run``.
"""

if __name__ == "operator":  # pragma: no cover - only when the repo root shadows the stdlib
    # This folder is meant to be imported as ``saga.operator``. Being imported as the top-level
    # ``operator`` means the repository root is on ``sys.path`` (``python -m``/``-c`` run from the
    # checkout) and is hiding the standard library's ``operator`` module.
    raise ImportError(
        "the repository's operator/ folder is shadowing Python's standard 'operator' module: "
        "run Python with -P or PYTHONSAFEPATH=1 when the current directory is the SAGA checkout "
        "(the Makefile does), or use the installed `saga` command"
    )
