"""Dynamic batching: a batcher per model version, its policy, and the SLO-adaptive controller."""

from .adaptive import AdaptiveController
from .batcher import Batcher, BatchingPolicy, BatchResult, RunBatch, Ticket
from .clock import Clock, LoopClock, ManualClock
from .policy import resolve_policy

__all__ = [
    "AdaptiveController",
    "BatchResult",
    "Batcher",
    "BatchingPolicy",
    "Clock",
    "LoopClock",
    "ManualClock",
    "RunBatch",
    "Ticket",
    "resolve_policy",
]
