"""What a backend is to the rest of the gateway: something that runs a batch of arrays."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from ..tensors import Signature

__all__ = ["Backend"]


class Backend(Protocol):
    """One loaded model version. `infer` takes validated arrays (the batch dimension first when
    the signature is batched) and returns the requested outputs by name."""

    signature: Signature
    concurrency: int
    """How many calls are worth running at once (the batcher keeps that many batches in flight)."""

    @property
    def info(self) -> Mapping[str, str]:
        """Facts worth reporting to clients: providers in use, artifact digest, ..."""
        ...

    def upstream(self) -> Mapping[str, Any]:
        """Remote servers' state and counters for /metrics: `retries` and per-endpoint
        `endpoints` (address, calls by status, ejections, ejected, outstanding). Empty for a
        backend that calls nobody."""
        ...

    async def infer(
        self, inputs: Mapping[str, np.ndarray], outputs: Sequence[str], deadline: float | None = None
    ) -> dict[str, np.ndarray]:
        """`deadline` is on the event loop's clock: a backend that calls out passes it on."""
        ...

    async def close(self) -> None: ...
