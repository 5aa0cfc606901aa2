"""SGLang backend adapter: per-replica HTTP clients, replica pool, discovery.

The contract is :mod:`saga.service.backend.api`; see ``docs/backend.md``.
"""
