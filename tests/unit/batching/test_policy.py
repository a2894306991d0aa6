"""Which models batch and with what settings: YAML over config.pbtxt over defaults."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from google.protobuf import text_format

from gateway._proto import model_config_pb2 as mc
from gateway.batching import resolve_policy
from gateway.settings import load_settings

DECLARED = """
max_batch_size: 32
dynamic_batching {
  preferred_batch_size: [4, 8]
  max_queue_delay_microseconds: 300
  default_queue_policy { max_queue_size: 10 default_timeout_microseconds: 5000 }
  priority_levels: 3
  default_priority_level: 2
}
"""


def config(text: str = "") -> mc.ModelConfig:
    return text_format.Parse(text, mc.ModelConfig())


def settings(tmp_path: Path, **data: Any) -> Any:
    return load_settings(overrides={"model_repository": tmp_path, **data})


def test_config_pbtxt_dynamic_batching_is_honoured(tmp_path: Path) -> None:
    policy, target = resolve_policy(settings(tmp_path), "m", config(DECLARED), 32, 1)
    assert policy is not None and target is None
    assert policy.max_batch_size == 32
    assert policy.preferred_batch_sizes == (4, 8)
    assert policy.max_queue_delay_s == pytest.approx(300e-6)
    assert (policy.max_queue_size, policy.default_timeout_s) == (10, 0.005)
    assert (policy.priority_levels, policy.default_priority) == (3, 2)


def test_auto_batches_only_where_asked(tmp_path: Path) -> None:
    s = settings(tmp_path, models={"asked": {"batching": {"max_queue_delay_us": 100}}})
    assert resolve_policy(s, "plain", config(), 8, 1) == (None, None)
    asked, _ = resolve_policy(s, "asked", config(), 8, 1)
    assert asked is not None and asked.max_queue_delay_s == pytest.approx(100e-6)


def test_global_switch_overrides_config_pbtxt(tmp_path: Path) -> None:
    assert resolve_policy(settings(tmp_path, batching={"mode": "off"}), "m", config(DECLARED), 32, 1) == (
        None,
        None,
    )
    on, _ = resolve_policy(settings(tmp_path, batching={"mode": "on"}), "plain", config(), 16, 2)
    assert on is not None and (on.max_batch_size, on.max_inflight_batches) == (16, 2)


def test_model_section_wins(tmp_path: Path) -> None:
    s = settings(
        tmp_path,
        batching={"mode": "off", "max_queue_delay_us": 900},
        models={"m": {"batching": {"mode": "on", "max_batch_size": 100, "target_p99_ms": 15}}},
    )
    policy, target = resolve_policy(s, "m", config(DECLARED), 32, 1)
    assert policy is not None and target == 15
    assert policy.max_batch_size == 32  # never above the model's own limit
    assert policy.max_queue_delay_s == pytest.approx(300e-6)  # config.pbtxt over the global default


def test_models_without_a_batch_dimension_never_batch(tmp_path: Path) -> None:
    assert resolve_policy(settings(tmp_path, batching={"mode": "on"}), "m", config(), 0, 1) == (None, None)


def test_yaml_on_and_off_booleans(tmp_path: Path) -> None:
    (tmp_path / "g.yaml").write_text(f"model_repository: {tmp_path}\nbatching:\n  mode: off\n")
    assert load_settings(tmp_path / "g.yaml").batching.mode == "off"
