"""Backends run model versions: ONNX Runtime in-process (onnxruntime.py) or remote Triton
servers (triton.py), behind one protocol (base.py)."""

from .base import Backend

__all__ = ["Backend"]
