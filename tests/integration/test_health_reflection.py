"""Standard gRPC services: grpc.health.v1 (overall and per model) and server reflection."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

SERVING = health_pb2.HealthCheckResponse.SERVING


@pytest.fixture(scope="module")
def channel(gateway: Any) -> Any:
    with grpc.insecure_channel(gateway.url) as ch:
        yield ch


def test_health_overall_and_per_model(channel: grpc.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "mlp", "identity", "pinned"):
        assert health.Check(health_pb2.HealthCheckRequest(service=service)).status == SERVING, service
    with pytest.raises(grpc.RpcError) as err:
        health.Check(health_pb2.HealthCheckRequest(service="no-such-model"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_reflection_lists_and_describes_services(channel: grpc.Channel) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)

    def ask(**kwargs: Any) -> Any:
        return next(iter(stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(**kwargs)]))))

    services = {s.name for s in ask(list_services="").list_services_response.service}
    assert {"inference.GRPCInferenceService", "grpc.health.v1.Health"} <= services
    found = ask(file_containing_symbol="inference.ModelInferRequest")
    assert found.file_descriptor_response.file_descriptor_proto, found
    missing = ask(file_containing_symbol="inference.NoSuchThing")
    assert missing.error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]
