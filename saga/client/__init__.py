"""The SAGA Python SDK: sync (:class:`SagaClient`) and asyncio (:class:`AsyncSagaClient`)
clients of the ``saga.v1`` gRPC API, with session and tool context managers and an optional
event log that feeds the Agent Execution Graphs."""

from saga.client._common import Chunk, Generation, Usage
from saga.client.aio import AsyncSagaClient, AsyncSession
from saga.client.errors import (
    AlreadyExistsError,
    AuthenticationError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    RejectedError,
    SagaError,
    UnavailableError,
)
from saga.client.sync import SagaClient, Session

__all__ = [
    "AlreadyExistsError",
    "AsyncSagaClient",
    "AsyncSession",
    "AuthenticationError",
    "Chunk",
    "Generation",
    "InvalidArgumentError",
    "NotFoundError",
    "PermissionDeniedError",
    "RejectedError",
    "SagaClient",
    "SagaError",
    "Session",
    "UnavailableError",
    "Usage",
]
