"""gateway.settings: defaults < YAML < GATEWAY_* environment < overrides, validated once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.settings import OnnxRuntimeSettings, Settings, SettingsError, load_settings


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = tmp_path / "models"
    path.mkdir()
    return path


def yaml_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gateway.yaml"
    path.write_text(text)
    return path


def invalid(*fragments: str, **kwargs: Any) -> str:
    kwargs.setdefault("environ", {})
    with pytest.raises(SettingsError) as info:
        load_settings(**kwargs)
    for fragment in fragments:
        assert fragment in str(info.value), str(info.value)
    return str(info.value)


def test_defaults(repo: Path) -> None:
    s = load_settings(overrides={"model_repository": repo}, environ={})
    assert s.model_repository == repo
    assert (s.host, s.grpc_port, s.metrics_port, s.workers) == ("127.0.0.1", 8001, 8002, 1)
    assert s.model_control_mode == "explicit"
    assert s.log_level == "info"
    assert s.onnxruntime == OnnxRuntimeSettings()
    assert s.onnxruntime.providers is None
    assert s.onnxruntime.default_max_batch_size == 64


def test_yaml_over_defaults(tmp_path: Path, repo: Path) -> None:
    config = yaml_file(tmp_path, f"model_repository: {repo}\ngrpc_port: 9001\nworkers: 2\n")
    s = load_settings(config, environ={})
    assert (s.grpc_port, s.workers, s.metrics_port) == (9001, 2, 8002)


def test_env_over_yaml(tmp_path: Path, repo: Path) -> None:
    config = yaml_file(tmp_path, f"model_repository: {repo}\ngrpc_port: 9001\nworkers: 2\n")
    s = load_settings(config, environ={"GATEWAY_GRPC_PORT": "9002", "GATEWAY_LOG_LEVEL": "debug"})
    assert (s.grpc_port, s.workers, s.log_level) == (9002, 2, "debug")


def test_env_alone_can_name_the_repository(repo: Path) -> None:
    s = load_settings(environ={"GATEWAY_MODEL_REPOSITORY": str(repo)})
    assert s.model_repository == repo


def test_overrides_over_env(tmp_path: Path, repo: Path) -> None:
    config = yaml_file(tmp_path, f"model_repository: {repo}\ngrpc_port: 9001\n")
    s = load_settings(config, overrides={"grpc_port": 9003}, environ={"GATEWAY_GRPC_PORT": "9002"})
    assert s.grpc_port == 9003


def test_none_overrides_are_ignored(tmp_path: Path, repo: Path) -> None:
    config = yaml_file(tmp_path, f"model_repository: {repo}\ngrpc_port: 9001\n")
    s = load_settings(
        config, overrides={"grpc_port": None, "workers": None}, environ={"GATEWAY_WORKERS": "3"}
    )
    assert (s.grpc_port, s.workers) == (9001, 3)


def test_unrelated_and_nested_env_variables_are_ignored(repo: Path) -> None:
    environ = {"GATEWAY_ONNXRUNTIME": "not a mapping", "GATEWAY_NOPE": "1", "GRPC_PORT": "1"}
    s = load_settings(overrides={"model_repository": repo}, environ=environ)
    assert s.grpc_port == 8001
    assert s.onnxruntime == OnnxRuntimeSettings()


def test_real_environment_is_not_read_when_environ_given(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_GRPC_PORT", "9999")
    assert load_settings(overrides={"model_repository": repo}, environ={}).grpc_port == 8001


def test_onnxruntime_section(tmp_path: Path, repo: Path) -> None:
    config = yaml_file(
        tmp_path,
        f"""
model_repository: {repo}
onnxruntime:
  providers: [CPUExecutionProvider]
  intra_op_threads: 2
  executor_threads: 3
  inline_below_us: 0
""",
    )
    ort = load_settings(config, environ={}).onnxruntime
    assert ort.providers == ["CPUExecutionProvider"]
    assert (ort.intra_op_threads, ort.executor_threads, ort.inline_below_us) == (2, 3, 0.0)
    assert ort.default_max_batch_size == 64


def test_empty_yaml_is_all_defaults(tmp_path: Path, repo: Path) -> None:
    s = load_settings(yaml_file(tmp_path, ""), overrides={"model_repository": repo}, environ={})
    assert s.grpc_port == 8001


def test_settings_are_frozen(repo: Path) -> None:
    s = load_settings(overrides={"model_repository": repo}, environ={})
    with pytest.raises(ValueError, match="frozen"):
        s.grpc_port = 1  # type: ignore[misc]
    assert isinstance(s, Settings)


# -- invalid ----------------------------------------------------------------------------------


def test_negative_workers(repo: Path) -> None:
    invalid("workers", overrides={"model_repository": repo, "workers": -1})


def test_workers_from_env_zero(repo: Path) -> None:
    invalid("workers", overrides={"model_repository": repo}, environ={"GATEWAY_WORKERS": "0"})


def test_grpc_port_out_of_range(repo: Path) -> None:
    invalid("grpc_port", overrides={"model_repository": repo, "grpc_port": 70000})


def test_non_integer_port_from_env(repo: Path) -> None:
    invalid("grpc_port", overrides={"model_repository": repo}, environ={"GATEWAY_GRPC_PORT": "eighty"})


def test_bad_literal(repo: Path) -> None:
    invalid("model_control_mode", overrides={"model_repository": repo, "model_control_mode": "poll"})


def test_unknown_key_in_yaml(tmp_path: Path, repo: Path) -> None:
    config = yaml_file(tmp_path, f"model_repository: {repo}\ngrcp_port: 9001\n")
    invalid("grcp_port", config_file=config)


def test_unknown_key_in_onnxruntime_section(tmp_path: Path, repo: Path) -> None:
    config = yaml_file(tmp_path, f"model_repository: {repo}\nonnxruntime:\n  threads: 2\n")
    invalid("onnxruntime.threads", config_file=config)


def test_invalid_value_in_onnxruntime_section(tmp_path: Path, repo: Path) -> None:
    config = yaml_file(tmp_path, f"model_repository: {repo}\nonnxruntime:\n  intra_op_threads: 0\n")
    invalid("onnxruntime.intra_op_threads", config_file=config)


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", "42\n"])
def test_non_mapping_yaml(tmp_path: Path, text: str) -> None:
    invalid("mapping", config_file=yaml_file(tmp_path, text))


def test_malformed_yaml(tmp_path: Path) -> None:
    config = yaml_file(tmp_path, "grpc_port: [unclosed\n")
    invalid(str(config), config_file=config)


def test_missing_config_file(tmp_path: Path) -> None:
    invalid("cannot read config", config_file=tmp_path / "absent.yaml")


def test_missing_repository_directory(tmp_path: Path) -> None:
    invalid("model_repository", "not a directory", overrides={"model_repository": tmp_path / "absent"})


def test_repository_is_required() -> None:
    invalid("model_repository")


def test_every_problem_is_listed(repo: Path) -> None:
    message = invalid(
        "workers", "grpc_port", overrides={"model_repository": repo, "workers": 0, "grpc_port": -5}
    )
    assert message.startswith("invalid configuration")


def test_traffic_problems_are_all_listed_at_once(repo: Path) -> None:
    bad = {
        "traffic": {"1": -5, "x": 0},
        "shadow": {"1": 1.5, "2": 0.5},
        "sticky": {"key": "a", "parameter": "b"},
        "canary": "2",
    }
    with pytest.raises(SettingsError) as err:
        load_settings(overrides={"model_repository": repo, "models": {"m": bad}}, environ={})
    text = str(err.value)
    for expected in (
        "version 'x' is not a number",
        "version '1' has a negative weight",
        "the weights sum to 0",
        "version '1': share must be in (0, 1]",
        "exactly one of `key` (metadata) or `parameter`",
        "models.m.canary: Extra inputs are not permitted",
    ):
        assert expected in text, (expected, text)


def test_a_shadow_of_the_only_version_that_takes_traffic_is_refused(repo: Path) -> None:
    model = {"traffic": {"1": 100, "2": 0}, "shadow": {"1": 0.5}}
    with pytest.raises(SettingsError, match="version '1' is the only version that takes traffic"):
        load_settings(overrides={"model_repository": repo, "models": {"m": model}}, environ={})
    # a canary mirrored from the baseline's requests: its own requests are not mirrored to it
    model = {"traffic": {"1": 90, "2": 10}, "shadow": {"2": 1.0}}
    assert load_settings(overrides={"model_repository": repo, "models": {"m": model}}, environ={})


def test_sticky_needs_a_split(repo: Path) -> None:
    with pytest.raises(SettingsError, match="sticky needs a traffic split"):
        load_settings(
            overrides={"model_repository": repo, "models": {"m": {"sticky": {"key": "k"}}}}, environ={}
        )


def test_a_valid_traffic_section(repo: Path) -> None:
    model = {
        "traffic": {"1": 90, "2": 10},
        "sticky": {"parameter": "user"},
        "shadow": {"3": 0.25},
        "compare": {"atol": 0.01, "rtol": 0},
    }
    s = load_settings(overrides={"model_repository": repo, "models": {"m": model}}, environ={})
    m = s.models["m"]
    assert m.traffic == {"1": 90, "2": 10} and m.shadow == {"3": 0.25} and m.compare.atol == 0.01
    assert m.sticky is not None and m.sticky.parameter == "user" and m.shadow_max_inflight == 64
