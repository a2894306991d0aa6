"""Integration fixtures: the real gateway in a subprocess on a free loopback port, a model
repository generated with the `onnx` helpers, and real clients (tritonclient).

Every integration test runs once per transport (native, grpcio), as uvicorn tests both of its
HTTP implementations: the `transport` fixture sets GATEWAY_TRANSPORT, which every gateway a test
starts inherits. `pytest -k native` or `-k grpcio` picks one."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.examples import identity, mlp, write_config, write_version
from harness.gateway import GatewayProcess

ALL_TYPES = [
    "BOOL",
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "UINT8",
    "UINT16",
    "UINT32",
    "UINT64",
    "FP16",
    "FP32",
    "FP64",
    "BYTES",
]

TYPED_TYPES = [t for t in ALL_TYPES if t != "FP16"]  # FP16 has no typed contents field

MLP_CONFIG = """
name: "mlp"
max_batch_size: 8
input [ { name: "x", data_type: TYPE_FP32, dims: [ 32 ] } ]
output [ { name: "y", data_type: TYPE_FP32, dims: [ 8 ] } ]
version_policy: { all { } }
"""

# Versions 1 and 2 only: version 3 exists on disk but the policy does not select it.
PINNED_CONFIG = """
max_batch_size: 4
version_policy: { specific { versions: [1, 2] } }
"""


def build_repository(root: Path) -> Path:
    write_config(root, "mlp", MLP_CONFIG)
    for v in (1, 2):
        write_version(root, "mlp", v, mlp(seed=v))
    write_version(root, "identity", 1, identity(ALL_TYPES))  # no config.pbtxt: derived
    write_version(root, "identity_typed", 1, identity(TYPED_TYPES))
    write_config(root, "pinned", PINNED_CONFIG)
    for v in (1, 2, 3):
        write_version(root, "pinned", v, mlp((4, 8, 2), seed=10 + v))
    return root


TRANSPORTS = ("native", "grpcio")


@pytest.fixture(scope="session", params=TRANSPORTS, autouse=True)
def transport(request: pytest.FixtureRequest) -> Iterator[str]:
    previous = os.environ.get("GATEWAY_TRANSPORT")
    os.environ["GATEWAY_TRANSPORT"] = request.param
    yield str(request.param)
    if previous is None:
        os.environ.pop("GATEWAY_TRANSPORT", None)
    else:
        os.environ["GATEWAY_TRANSPORT"] = previous


@pytest.fixture(scope="session")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_repository(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="session")
def gateway(repo: Path, transport: str) -> Iterator[GatewayProcess]:
    proc = GatewayProcess(repo).wait_ready()
    assert f"({transport} transport)" in proc.log(), proc.log()
    yield proc
    code = proc.terminate()
    assert code == 0, proc.log()
    assert "Traceback" not in proc.log(), proc.log()


@pytest.fixture(scope="session")
def client(gateway: GatewayProcess):  # type: ignore[no-untyped-def]
    import tritonclient.grpc as grpcclient

    c = grpcclient.InferenceServerClient(gateway.url)
    yield c
    c.close()
