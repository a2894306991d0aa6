"""The real gateway as a child process, for tests and load tests: `modelgate serve` on free
loopback ports, with the bound ports read back from its output. A context manager:
`with GatewayProcess(repo, *flags) as gateway:` waits until it is ready and stops it after."""

from __future__ import annotations

import itertools
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

__all__ = ["GatewayProcess", "metric", "scrape"]


class GatewayProcess:
    """`modelgate serve` in a subprocess. Reads the bound ports from its output. It runs in a
    directory of its own, so that its default `state_dir` (admin changes, rollouts) is too."""

    def __init__(
        self, repo: Path, *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
    ) -> None:
        self.output: list[str] = []
        self.cwd = cwd or Path(tempfile.mkdtemp(prefix="modelgate-test-"))
        self._ready = threading.Event()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gateway",
                "serve",
                "--model-repository",
                str(repo),
                "--grpc-port",
                "0",
                "--metrics-port",
                "0",
                "--admin-port",
                "0",
                "--grace-s",
                "5",
                *args,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, **(env or {})},
            cwd=self.cwd,
            start_new_session=True,
        )
        self.port = 0
        self.metrics_port = 0
        self.admin_port = 0
        self._admin_off = any(a == "--admin-port" and b == "-1" for a, b in itertools.pairwise(args))
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
            if m := re.search(r"admin API on [\d.]+:(\d+)", line):
                self.admin_port = int(m.group(1))
            if ": ready," in line:  # workers share stdout: count every one on the line
                self._ready_lines += line.count(": ready,")
                self._ready.set()

    def wait_ready(self, timeout: float = 60.0, lines: int = 1) -> GatewayProcess:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._ready_lines >= lines and self.port and (self.admin_port or self._admin_off):
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        if self.proc.poll() is None:  # a gateway that never got ready must not outlive the test
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        raise AssertionError("gateway did not become ready:\n" + self.log())

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def admin_url(self) -> str:
        return f"127.0.0.1:{self.admin_port}"

    def log(self) -> str:
        return "".join(self.output)

    def __enter__(self) -> GatewayProcess:
        return self.wait_ready()

    def __exit__(self, *exc: object) -> None:
        self.terminate()

    def terminate(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            raise AssertionError(f"gateway did not stop within {timeout}s:\n{self.log()}") from None
        self._reader.join(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return code


def scrape(port: int) -> str:
    """The Prometheus text a gateway (or its supervisor) serves on `port`."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        return str(r.read().decode())


def metric(text: str, name: str, **labels: str) -> float:
    """The sum of the samples of `name` whose labels include `labels`."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith((name + "{", name + " ")) and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def new_connection(url: str) -> Any:
    """A tritonclient on a TCP connection of its own, so that the kernel picks a worker for it.
    grpc shares connections between channels with the same arguments (its global subchannel
    pool), and one closed a moment ago can still be there for the next client: on a busy
    machine "a new client each time" kept one connection, so one worker served every call."""
    import tritonclient.grpc as grpcclient

    options = [
        ("grpc.use_local_subchannel_pool", 1),
        ("grpc.max_send_message_length", -1),
        ("grpc.max_receive_message_length", -1),
    ]
    return grpcclient.InferenceServerClient(url, channel_args=options)
