"""modelgate: a Triton-compatible (KServe v2 / Open Inference Protocol) model serving gateway."""

__version__ = "0.1.0"

__all__ = ["__version__"]
