"""Server and model metadata through tritonclient, as perf_analyzer and Triton users see them."""

from __future__ import annotations

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from .conftest import ALL_TYPES


def test_server_live_ready_and_metadata(client: grpcclient.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    meta = client.get_server_metadata()
    assert meta.name == "modelgate"
    assert "model_repository" in meta.extensions
    assert "statistics" in meta.extensions


def test_model_metadata_from_config(client: grpcclient.InferenceServerClient) -> None:
    meta = client.get_model_metadata("mlp")
    assert meta.name == "mlp"
    assert list(meta.versions) == ["1", "2"]
    assert meta.platform == "onnxruntime_onnx"
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.inputs] == [("x", "FP32", [-1, 32])]
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.outputs] == [("y", "FP32", [-1, 8])]


def test_model_metadata_derived_from_onnx(client: grpcclient.InferenceServerClient) -> None:
    meta = client.get_model_metadata("identity")
    inputs = {t.name: (t.datatype, list(t.shape)) for t in meta.inputs}
    assert inputs == {f"in_{t}": (t, [-1, 4]) for t in ALL_TYPES}
    config = client.get_model_config("identity").config
    assert config.max_batch_size == 64  # the default for a graph with a dynamic first dimension
    assert {i.name: list(i.dims) for i in config.input} == {f"in_{t}": [4] for t in ALL_TYPES}


def test_model_config_reports_file_and_providers(client: grpcclient.InferenceServerClient) -> None:
    config = client.get_model_config("mlp").config
    assert config.name == "mlp"
    assert config.max_batch_size == 8
    assert [(i.name, list(i.dims)) for i in config.input] == [("x", [32])]
    assert config.version_policy.WhichOneof("policy_choice") == "all"
    assert config.parameters["providers"].string_value == "CPUExecutionProvider"
    assert config.parameters["artifact_digest"].string_value.startswith("sha256:")


def test_version_policy_specific(client: grpcclient.InferenceServerClient) -> None:
    assert list(client.get_model_metadata("pinned").versions) == ["1", "2"]
    with pytest.raises(InferenceServerException) as err:
        client.get_model_metadata("pinned", model_version="3")
    assert err.value.status() == "StatusCode.NOT_FOUND"


def test_model_ready(client: grpcclient.InferenceServerClient) -> None:
    assert client.is_model_ready("mlp")
    assert client.is_model_ready("mlp", "1")
    assert not client.is_model_ready("mlp", "7")
    assert not client.is_model_ready("nope")


def test_unknown_model_is_not_found(client: grpcclient.InferenceServerClient) -> None:
    for call in (lambda: client.get_model_metadata("nope"), lambda: client.get_model_config("nope")):
        with pytest.raises(InferenceServerException) as err:
            call()
        assert err.value.status() == "StatusCode.NOT_FOUND"
        assert "nope" in err.value.message()


def test_repository_index(client: grpcclient.InferenceServerClient) -> None:
    index = client.get_model_repository_index().models
    ready = {(m.name, m.version) for m in index if m.state == "READY"}
    assert {("mlp", "1"), ("mlp", "2"), ("identity", "1"), ("pinned", "1"), ("pinned", "2")} <= ready


def test_statistics_count_inferences(client: grpcclient.InferenceServerClient) -> None:
    def stats() -> tuple[int, int]:
        s = client.get_inference_statistics("pinned", "1").model_stats[0]
        return s.inference_count, s.inference_stats.success.count

    rows_before, ok_before = stats()
    x = grpcclient.InferInput("x", [3, 4], "FP32")
    x.set_data_from_numpy(np.ones((3, 4), np.float32))
    client.infer("pinned", [x], model_version="1")
    assert stats() == (rows_before + 3, ok_before + 1)
    every = client.get_inference_statistics().model_stats  # all models, as perf_analyzer asks
    assert {("mlp", "1"), ("mlp", "2"), ("pinned", "1")} <= {(s.name, s.version) for s in every}
    s = client.get_inference_statistics("pinned", "1").model_stats[0].inference_stats
    assert s.compute_input.count == s.compute_infer.count == s.compute_output.count == s.success.count
