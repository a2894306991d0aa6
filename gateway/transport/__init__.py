"""gRPC transport: the two servers (native and grpcio), servicers that convert messages and call
the data plane, and the one place that maps gateway errors to gRPC statuses."""

from ._errors import handled, status_of
from ._server import Transport, deadline_of, native_available, new_server, resolve_transport
from .inference import InferenceServicer, add_inference_service

__all__ = [
    "InferenceServicer",
    "Transport",
    "add_inference_service",
    "deadline_of",
    "handled",
    "native_available",
    "new_server",
    "resolve_transport",
    "status_of",
]
