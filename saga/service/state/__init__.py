"""Shared scheduler state: session bindings, fair-share totals, graph documents.

The contract is :mod:`saga.service.state.api`; see ``docs/state.md``.
"""
