"""Integration fixtures: the real gateway in a subprocess on a free loopback port, a model
repository generated with the `onnx` helpers, and real clients (tritonclient)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.examples import identity, mlp, write_config, write_version

ALL_TYPES = ["BOOL", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64",
             "FP16", "FP32", "FP64", "BYTES"]

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
    write_config(root, "pinned", PINNED_CONFIG)
    for v in (1, 2, 3):
        write_version(root, "pinned", v, mlp((4, 8, 2), seed=10 + v))
    return root


class GatewayProcess:
    """`modelgate serve` in a subprocess. Reads the bound ports from its output."""

    def __init__(self, repo: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.output: list[str] = []
        self._ready = threading.Event()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "--model-repository", str(repo),
             "--grpc-port", "0", "--metrics-port", "0", "--grace-s", "5", *args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env={**os.environ, **(env or {})}, start_new_session=True,
        )
        self.port = 0
        self.metrics_port = 0
        self._ready_lines = 0
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line)
            if m := re.search(r"gRPC listening on [\d.]+:(\d+)", line):
                self.port = int(m.group(1))
            if m := re.search(r"sharing gRPC port (\d+)", line):
                self.port = int(m.group(1))
            if m := re.search(r"metrics on http://[\d.]+:(\d+)", line):
                self.metrics_port = int(m.group(1))
            if ": ready," in line:
                self._ready_lines += 1
                self._ready.set()

    def wait_ready(self, timeout: float = 60.0, lines: int = 1) -> GatewayProcess:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._ready_lines >= lines and self.port:
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError("gateway did not become ready:\n" + self.log())

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.port}"

    def log(self) -> str:
        return "".join(self.output)

    def terminate(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            raise AssertionError("gateway did not stop within %ss:\n%s" % (timeout, self.log())) from None
        self._reader.join(5)
        return code


@pytest.fixture(scope="session")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_repository(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="session")
def gateway(repo: Path) -> Iterator[GatewayProcess]:
    proc = GatewayProcess(repo).wait_ready()
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
