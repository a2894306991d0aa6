"""grpc.health.v1 for the gateway: per-model and overall status (service "").

grpcio-health-checking's servicer keeps a Watch stream open for as long as the client keeps it,
so on SIGTERM an open Watch held the exit for the whole grace period. Here a Watch stream ends
(OK) once the server drains, right after it has sent NOT_SERVING: the watcher learns the news,
then the drain goes on without it.
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
from grpc_health.v1 import health_pb2

__all__ = ["Health"]

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICE_UNKNOWN = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN


class Health:
    """Check, List and Watch, served with health_pb2_grpc.add_HealthServicer_to_server."""

    def __init__(self) -> None:
        self._status: dict[str, Any] = {"": NOT_SERVING}
        self._changed = asyncio.Condition()
        self._draining = False

    async def Check(
        self, request: health_pb2.HealthCheckRequest, context: Any
    ) -> health_pb2.HealthCheckResponse:
        status = self._status.get(request.service)
        if status is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service '{request.service}'")
        return health_pb2.HealthCheckResponse(status=status)

    async def List(self, request: Any, context: Any) -> Any:
        return health_pb2.HealthListResponse(
            statuses={name: health_pb2.HealthCheckResponse(status=s) for name, s in self._status.items()}
        )

    async def Watch(self, request: health_pb2.HealthCheckRequest, context: Any) -> None:
        sent = None
        async with self._changed:
            while True:
                status = self._status.get(request.service, SERVICE_UNKNOWN)
                if status != sent:
                    await context.write(health_pb2.HealthCheckResponse(status=status))
                    sent = status
                if self._draining:
                    return
                await self._changed.wait()

    async def set(self, service: str, status: Any) -> None:
        """A service's status (ignored once draining: everything is NOT_SERVING then)."""
        if self._draining:
            return
        async with self._changed:
            self._status[service] = status
            self._changed.notify_all()

    async def enter_graceful_shutdown(self) -> None:
        """Every service NOT_SERVING for good; Watch streams send it and end."""
        async with self._changed:
            self._draining = True
            self._status = dict.fromkeys(self._status, NOT_SERVING)
            self._changed.notify_all()
