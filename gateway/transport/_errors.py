"""The one place where gateway errors become gRPC statuses.

Every unary handler is wrapped by `handled`: a GatewayError aborts the call with its status and
message; anything unexpected is logged with a request id and reported as INTERNAL carrying only
that id, so no Python exception text ever reaches a client as UNKNOWN.
"""

from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc

from ..errors import GatewayError

__all__ = ["handled", "internal_message", "status_of"]

log = logging.getLogger("gateway.transport")

T = TypeVar("T")
Handler = Callable[[Any, Any, grpc.aio.ServicerContext], Awaitable[T]]


def status_of(error: GatewayError) -> grpc.StatusCode:
    return getattr(grpc.StatusCode, error.code, grpc.StatusCode.INTERNAL)


def internal_message(what: str, error: BaseException | None = None) -> str:
    """Log the exception being handled (or `error`) and return the message a client may see."""
    request_id = uuid.uuid4().hex[:16]
    log.error("internal error in %s (request id %s)", what, request_id, exc_info=error or True)
    return f"internal error (request id {request_id})"


def handled(method: Handler[T]) -> Handler[T]:
    name = method.__name__

    @functools.wraps(method)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> T:
        try:
            return await method(self, request, context)
        except GatewayError as exc:
            await context.abort(status_of(exc), exc.message)
        except grpc.aio.AbortError:
            raise
        except Exception:
            await context.abort(grpc.StatusCode.INTERNAL, internal_message(name))
        raise AssertionError("unreachable: abort raises")

    return wrapper
