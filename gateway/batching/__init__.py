"""Dynamic batching: a batcher per model version, and the SLO-adaptive controller."""

from .batcher import Batcher, BatchingPolicy, BatchResult
from .clock import Clock, LoopClock, ManualClock

__all__ = ["BatchResult", "Batcher", "BatchingPolicy", "Clock", "LoopClock", "ManualClock"]
