"""The service's typed errors and the one table that maps them to gRPC and HTTP statuses.

The core raises only :class:`ServiceError` subclasses; the gRPC servicer and the OpenAI
endpoint convert them with :func:`grpc_status` / :func:`http_status` and nothing else, so a
kind of failure always gets the same status on both transports.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc


class ServiceError(Exception):
    """Base of the service's errors; ``message`` is safe to show to the client."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(ServiceError):
    """Unknown or ended session."""


class InvalidArgument(ServiceError):
    """Malformed or out-of-range request fields (including oversized prompts)."""


class AlreadyExists(ServiceError):
    """A session id that is already open."""


class Unauthenticated(ServiceError):
    """Missing or unknown API key."""


class PermissionDenied(ServiceError):
    """Another tenant's session, or a tenant the API key does not grant."""


class Rejected(ServiceError):
    """Admission control refused the call; retry after ``retry_after_s`` seconds."""

    def __init__(self, message: str, *, reason: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.reason = reason
        self.retry_after_s = retry_after_s


class Unavailable(ServiceError):
    """No healthy replica, or the replica failed the call (a started stream ends with this)."""


class Internal(ServiceError):
    """A bug or an unexpected answer (a replica returning garbage)."""


@dataclass(frozen=True, slots=True)
class StatusMapping:
    grpc_code: grpc.StatusCode
    http_status: int
    openai_type: str  # OpenAI error JSON "type"


# The one table. Order matters only for subclasses (none overlap today).
STATUS_TABLE: dict[type[ServiceError], StatusMapping] = {
    NotFound: StatusMapping(grpc.StatusCode.NOT_FOUND, 404, "not_found_error"),
    InvalidArgument: StatusMapping(grpc.StatusCode.INVALID_ARGUMENT, 400, "invalid_request_error"),
    AlreadyExists: StatusMapping(grpc.StatusCode.ALREADY_EXISTS, 409, "invalid_request_error"),
    Unauthenticated: StatusMapping(grpc.StatusCode.UNAUTHENTICATED, 401, "authentication_error"),
    PermissionDenied: StatusMapping(grpc.StatusCode.PERMISSION_DENIED, 403, "permission_error"),
    Rejected: StatusMapping(grpc.StatusCode.RESOURCE_EXHAUSTED, 429, "rate_limit_error"),
    Unavailable: StatusMapping(grpc.StatusCode.UNAVAILABLE, 503, "service_unavailable_error"),
    Internal: StatusMapping(grpc.StatusCode.INTERNAL, 500, "server_error"),
}

RETRY_AFTER_MS_KEY = "retry-after-ms"  # gRPC trailing metadata key of a Rejected's hint


def mapping(err: ServiceError) -> StatusMapping:
    for cls in type(err).__mro__:
        m = STATUS_TABLE.get(cls)
        if m is not None:
            return m
    return STATUS_TABLE[Internal]
