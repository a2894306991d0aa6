"""gRPC transport: servicers that convert messages and call the data plane, and the one place
that maps gateway errors to gRPC statuses."""

from ._errors import handled, status_of
from .inference import InferenceServicer

__all__ = ["InferenceServicer", "handled", "status_of"]
