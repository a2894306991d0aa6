"""Backends run model versions: ONNX Runtime in-process (more to come behind the same protocol)."""

from .base import Backend

__all__ = ["Backend"]
