"""A real Prometheus server as a test peer: Debian's `prometheus` binary (harness/setup_prometheus.sh,
`make prometheus-peer`) on a free loopback port, with a config and a data directory of its own,
scraping the given targets every `interval_s`.

Library::

    from harness.prometheus import PrometheusServer
    with PrometheusServer([f"127.0.0.1:{gateway.metrics_port}"]) as prom:
        prom.wait_for("modelgate_requests_total")
        prom.query('sum by (code) (rate(modelgate_requests_total[1m]))')

Standard library only; loopback only (the web UI and API too).
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

__all__ = ["PrometheusError", "PrometheusServer", "prometheus_binary"]

HOST = "127.0.0.1"


class PrometheusError(RuntimeError):
    """Prometheus is not installed, did not start, or refused a query."""


def prometheus_binary() -> str:
    found = shutil.which("prometheus")
    if found is None:
        raise PrometheusError("no prometheus: run `make prometheus-peer` (harness/setup_prometheus.sh)")
    return found


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


class PrometheusServer:
    """One Prometheus process: `start()` waits for /-/ready, `close()` stops it (SIGTERM, then
    SIGKILL) and removes its directory."""

    def __init__(self, targets: Sequence[str], interval_s: float = 1.0, job: str = "modelgate") -> None:
        self.targets = list(targets)
        self.interval_s = interval_s
        self.job = job
        self.port = 0
        self.dir = Path(tempfile.mkdtemp(prefix="modelgate-prometheus-"))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def config(self) -> str:
        interval = f"{int(self.interval_s * 1000)}ms"
        return json.dumps(  # JSON is YAML
            {
                "global": {"scrape_interval": interval, "evaluation_interval": interval},
                "scrape_configs": [{"job_name": self.job, "static_configs": [{"targets": self.targets}]}],
            }
        )

    def start(self, timeout: float = 60.0) -> PrometheusServer:
        binary = prometheus_binary()
        (self.dir / "prometheus.yml").write_text(self.config())
        self.port = _free_port()
        log = (self.dir / "prometheus.log").open("wb")
        self.proc = subprocess.Popen(
            [
                binary,
                f"--config.file={self.dir / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.dir / 'data'}",
                f"--web.listen-address={HOST}:{self.port}",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.dir,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise PrometheusError(f"prometheus exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as r:
                    if r.status == 200:
                        return self
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.1)
        self.close()
        raise PrometheusError(f"prometheus not ready within {timeout}s:\n{self.log()}")

    def log(self) -> str:
        try:
            return (self.dir / "prometheus.log").read_text(errors="replace")
        except OSError:
            return ""

    def api(self, path: str, **params: str | list[str]) -> Any:
        """GET /api/v1/<path>; the `data` of a successful answer."""
        query = urllib.parse.urlencode(params, doseq=True)
        try:
            with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=10) as r:
                body = json.loads(r.read())
        except urllib.error.HTTPError as exc:  # 400/422: a query Prometheus refused, and why
            body = json.loads(exc.read() or b"{}")
        if body.get("status") != "success":
            raise PrometheusError(f"{path} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query now: its samples (a vector's; a scalar as one sample)."""
        data = self.api("query", query=expr)
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        return list(data["result"])

    def wait_for(self, expr: str, timeout: float = 30.0) -> list[dict[str, Any]]:
        """Poll `expr` until it has samples (Prometheus scraped what it needs)."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.query(expr)
            if found:
                return found
            if time.monotonic() > deadline:
                raise PrometheusError(f"no samples for {expr} within {timeout}s:\n{self.log()}")
            time.sleep(self.interval_s / 4)

    def close(self, timeout: float = 15.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> PrometheusServer:
        return self.start() if self.proc is None else self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
