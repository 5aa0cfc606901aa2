"""The SDK's typed errors, mapped once from gRPC status codes."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import grpc


class SagaError(Exception):
    """Base of the SDK's errors. ``code`` is the gRPC status code name."""

    code = "UNKNOWN"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFoundError(SagaError):
    code = "NOT_FOUND"


class InvalidArgumentError(SagaError):
    code = "INVALID_ARGUMENT"


class AlreadyExistsError(SagaError):
    code = "ALREADY_EXISTS"


class AuthenticationError(SagaError):
    code = "UNAUTHENTICATED"


class PermissionDeniedError(SagaError):
    code = "PERMISSION_DENIED"


class RejectedError(SagaError):
    """Admission control refused the call; retry after ``retry_after_s`` seconds."""

    code = "RESOURCE_EXHAUSTED"

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class UnavailableError(SagaError):
    code = "UNAVAILABLE"


_BY_CODE: dict[grpc.StatusCode, type[SagaError]] = {
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgumentError,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExistsError,
    grpc.StatusCode.UNAUTHENTICATED: AuthenticationError,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDeniedError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: RejectedError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
}


def from_rpc_error(
    code: grpc.StatusCode | None, details: str | None, trailing: Iterable[Any] | None = None
) -> SagaError:
    cls = _BY_CODE.get(code) if code is not None else None
    message = details or (code.name if code is not None else "unknown error")
    if cls is RejectedError:
        retry = None
        for item in trailing or ():
            key, value = item[0], item[1]
            if key == "retry-after-ms":
                try:
                    retry = int(value) / 1000.0
                except ValueError:
                    retry = None
        return RejectedError(message, retry)
    if cls is None:
        err = SagaError(message)
        err.code = code.name if code is not None else "UNKNOWN"
        return err
    return cls(message)
