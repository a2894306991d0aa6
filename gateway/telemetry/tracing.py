"""Trace context that crosses the gateway: the caller's W3C `traceparent`, forwarded to remote
backends so their spans join the caller's trace."""

from __future__ import annotations

from contextvars import ContextVar

__all__ = ["TRACEPARENT"]

TRACEPARENT: ContextVar[str | None] = ContextVar("traceparent", default=None)
"""The `traceparent` of the request being served (set by the transport, read by backends)."""
