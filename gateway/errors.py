"""The gateway's error hierarchy. Each error carries the gRPC status code it maps to.

The core never imports grpc: codes are plain names of `grpc.StatusCode` members, resolved by the
transport layer (gateway/transport/_errors.py), the one place that turns errors into statuses.
"""

from __future__ import annotations

__all__ = [
    "DeadlineExceeded",
    "FailedPrecondition",
    "GatewayError",
    "Internal",
    "InvalidArgument",
    "LoadError",
    "NotFound",
    "ResourceExhausted",
    "Unavailable",
]


class GatewayError(Exception):
    """Base of every error the gateway reports to a client."""

    code = "INTERNAL"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(GatewayError):
    """Malformed request: tensor datatype, shape, byte size, batch limit, unknown names."""

    code = "INVALID_ARGUMENT"


class NotFound(GatewayError):
    """Unknown model or version."""

    code = "NOT_FOUND"


class Unavailable(GatewayError):
    """Known but not ready, shutting down, or a backend that is down."""

    code = "UNAVAILABLE"


class ResourceExhausted(GatewayError):
    """Overload: a full queue or the concurrency cap."""

    code = "RESOURCE_EXHAUSTED"


class DeadlineExceeded(GatewayError):
    """The request's deadline or queue timeout passed before it could be served."""

    code = "DEADLINE_EXCEEDED"


class FailedPrecondition(GatewayError):
    """The operation is disabled or not allowed in the current state."""

    code = "FAILED_PRECONDITION"


class Internal(GatewayError):
    """A fault inside the gateway or a backend, reported without a Python traceback."""

    code = "INTERNAL"


class LoadError(GatewayError):
    """A model or version could not be loaded; the message says which file and why."""

    code = "INVALID_ARGUMENT"
