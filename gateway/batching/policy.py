"""Which versions batch, and how: the YAML settings over the model's config.pbtxt."""

from __future__ import annotations

from .._proto import model_config_pb2 as mc
from ..settings import BatchingSettings, Settings
from .batcher import BatchingPolicy

__all__ = ["DEFAULT_QUEUE_DELAY_US", "DEFAULT_QUEUE_SIZE", "resolve_policy"]

DEFAULT_QUEUE_DELAY_US = 500
DEFAULT_QUEUE_SIZE = 4096


def _or(value: int | None, default: int) -> int:
    return default if value is None else value


def _from_config(config: mc.ModelConfig) -> BatchingSettings | None:
    """Triton's `dynamic_batching { ... }` as batching settings (None when absent)."""
    if config.WhichOneof("scheduling_choice") != "dynamic_batching":
        return None
    db = config.dynamic_batching
    queue = db.default_queue_policy
    return BatchingSettings(
        preferred_batch_size=list(db.preferred_batch_size) or None,
        max_queue_delay_us=db.max_queue_delay_microseconds,
        max_queue_size=queue.max_queue_size or None,
        timeout_us=queue.default_timeout_microseconds or None,
        priority_levels=db.priority_levels or None,
        default_priority_level=db.default_priority_level or None,
    )


def resolve_policy(
    settings: Settings, model: str, config: mc.ModelConfig, max_batch_size: int, inflight: int
) -> tuple[BatchingPolicy | None, float | None]:
    """The batching policy of a model's versions and its p99 target, or (None, None) when the
    model does not batch. Values: models.<name>.batching > config.pbtxt > batching. Whether it
    batches: the model's own `mode` if set; else the global `mode` when it is on or off (the
    operator's switch, e.g. --batching off); else (auto) whether config.pbtxt or the YAML asks."""
    if max_batch_size <= 0:
        return None, None
    declared = _from_config(config)
    own = settings.models.get(model)
    merged = settings.batching
    if declared is not None:
        merged = declared.over(merged)
    if own is not None and own.batching is not None:
        merged = own.batching.over(merged)
    own_batching = own.batching if own is not None else None
    mode = (own_batching.mode if own_batching is not None else None) or settings.batching.mode or "auto"
    if mode == "auto":
        mode = "on" if declared is not None or own_batching is not None else "off"
    if mode == "off":
        return None, None
    size = min(merged.max_batch_size or max_batch_size, max_batch_size)
    levels = merged.priority_levels or 1
    policy = BatchingPolicy(
        max_batch_size=size,
        max_queue_delay_s=_or(merged.max_queue_delay_us, DEFAULT_QUEUE_DELAY_US) / 1e6,
        preferred_batch_sizes=tuple(sorted(p for p in merged.preferred_batch_size or () if 0 < p <= size)),
        max_queue_size=merged.max_queue_size or DEFAULT_QUEUE_SIZE,
        default_timeout_s=merged.timeout_us / 1e6 if merged.timeout_us else None,
        priority_levels=levels,
        default_priority=min(merged.default_priority_level or levels, levels),
        max_inflight_batches=inflight,
    )
    return policy, merged.target_p99_ms
