"""Changing traffic on a running gateway: a config file edit (watched, a ConfigMap's symlink
swap included), SIGHUP and RepositoryModelLoad, under continuous load, with zero failed
requests; refused configs that change nothing; every worker on the new revision."""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as grpcclient
import yaml
from tritonclient.utils import InferenceServerException

from gateway.examples import mlp, write_config, write_version
from harness.gateway import GatewayProcess, metric, new_connection, scrape

pytestmark = pytest.mark.timeout(240)

SEEDS = {"1": 1, "2": 2, "3": 3}
X = np.linspace(-1, 1, 32, dtype=np.float32).reshape(1, 32)
EXPECTED = {
    v: ort.InferenceSession(mlp(seed=s), providers=["CPUExecutionProvider"]).run(None, {"x": X})[0]
    for v, s in SEEDS.items()
}


def repo(root: Path) -> Path:
    """Versions 1, 2, 3 on disk; the version policy serves only 1, so 2 and 3 are loaded when
    a traffic policy names them and unloaded when none does."""
    for version, seed in SEEDS.items():
        write_version(root / "models", "m", int(version), mlp(seed=seed))
    write_config(root / "models", "m", "max_batch_size: 8\nversion_policy: { specific { versions: [1] } }\n")
    return root / "models"


def serve(tmp_path: Path, traffic: dict[str, Any], *args: str, lines: int = 1) -> tuple[GatewayProcess, Path]:
    """A gateway over repo(tmp_path) whose config file gives model m `traffic`; and that file."""
    models = repo(tmp_path)
    config = tmp_path / "gateway.yaml"
    write(config, traffic)
    return GatewayProcess(models, "--config", str(config), *args).wait_ready(lines=lines), config


def write(path: Path, traffic: dict[str, Any]) -> None:
    """Replace the config atomically, as an editor or a deploy tool does."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump({"models": {"m": traffic}}))
    tmp.replace(path)


def check(result: Any) -> tuple[str, int]:
    """(version, revision) of an answer whose content is checked against that version."""
    r = result.get_response()
    np.testing.assert_allclose(result.as_numpy("y"), EXPECTED[r.model_version], rtol=1e-5, atol=1e-6)
    return r.model_version, r.parameters["policy_revision"].int64_param


def one(url: str) -> tuple[str, int]:
    """One call on a new connection (with several workers, the kernel picks the worker)."""
    with new_connection(url) as c:
        x = grpcclient.InferInput("x", [1, 32], "FP32")
        x.set_data_from_numpy(X)
        return check(c.infer("m", [x]))


def wait_revision(url: str, revision: int, timeout: float = 30) -> tuple[str, int]:
    deadline = time.monotonic() + timeout
    while True:
        seen = one(url)
        if seen[1] >= revision or time.monotonic() > deadline:
            return seen
        time.sleep(0.05)


class Load:
    """Clients calling without pause until stopped, unary and streaming: every answer checked
    against the version it names, every failure kept."""

    def __init__(self, url: str, unary: int = 6, streams: int = 2) -> None:
        self.url = url
        self.stop = threading.Event()
        self.seen: Counter[tuple[str, int]] = Counter()
        self.failures: list[Any] = []
        self._lock = threading.Lock()
        self.threads = [threading.Thread(target=self._unary) for _ in range(unary)]
        self.threads += [threading.Thread(target=self._stream) for _ in range(streams)]
        for t in self.threads:
            t.start()

    def _record(self, result: Any) -> None:
        try:
            answer = check(result)
        except AssertionError as exc:
            answer = None
            self.failures.append(exc)
        with self._lock:
            if answer is not None:
                self.seen[answer] += 1

    def _unary(self) -> None:
        with grpcclient.InferenceServerClient(self.url) as c:
            x = grpcclient.InferInput("x", [1, 32], "FP32")
            x.set_data_from_numpy(X)
            while not self.stop.is_set():
                try:
                    self._record(c.infer("m", [x]))
                except InferenceServerException as exc:
                    self.failures.append(exc)

    def _stream(self) -> None:
        done = threading.Semaphore(0)

        def callback(result: Any, error: Any) -> None:
            if error is not None:
                self.failures.append(error)
            else:
                self._record(result)
            done.release()

        with grpcclient.InferenceServerClient(self.url) as c:
            x = grpcclient.InferInput("x", [1, 32], "FP32")
            x.set_data_from_numpy(X)
            c.start_stream(callback)
            try:
                while not self.stop.is_set():
                    c.async_stream_infer("m", [x])
                    if not done.acquire(timeout=30):
                        self.failures.append("stream answer missing")
                        return
            finally:
                c.stop_stream()

    def finish(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(60)


def test_swaps_under_load_fail_no_request(tmp_path: Path) -> None:
    """v1 -> v2 -> v1 -> v2 by file edit, by SIGHUP after an edit the watcher has not seen yet,
    and a RepositoryModelLoad in between, under 20 s of load from 8 clients."""
    proc, config = serve(tmp_path, {"traffic": {"1": 100}})
    load = Load(proc.url)
    began = time.monotonic()
    try:
        time.sleep(1)
        revision = 1
        for target in ("2", "1", "2"):
            write(config, {"traffic": {target: 100}})
            revision += 1
            assert wait_revision(proc.url, revision) == (target, revision)
            time.sleep(1)
        with grpcclient.InferenceServerClient(proc.url) as c:  # a reload from disk under load
            c.load_model("m")
        revision += 1  # it reached every worker through a revision of its own
        assert one(proc.url) == ("2", revision)
        time.sleep(1)
        os.kill(proc.proc.pid, signal.SIGHUP)  # same file: a revision with nothing changed
        revision += 1
        assert wait_revision(proc.url, revision) == ("2", revision)
        time.sleep(max(0.0, 20 - (time.monotonic() - began)))
    finally:
        load.finish()
    assert load.failures == []
    assert {v for v, _ in load.seen} == {"1", "2"} and sum(load.seen.values()) > 1000
    # once a revision was served, no answer came from an older one's version after it settled
    assert load.seen[("2", revision)] > 0
    assert proc.terminate() == 0, proc.log()
    assert proc.log().count("config revision") == 5 and "Traceback" not in proc.log()


def test_swaps_by_repository_model_load_reach_every_worker_under_load(tmp_path: Path) -> None:
    """v1 -> v2 -> v3 -> v2 by files changed on disk and RepositoryModelLoad, with 2 workers,
    under 20 s of load from 8 clients: the call reaches every worker, no request fails."""
    models = tmp_path / "models"
    write_version(models, "m", 1, mlp(seed=SEEDS["1"]))
    write_config(models, "m", "max_batch_size: 8\n")  # the default policy: the latest version
    proc = GatewayProcess(models, "--workers", "2").wait_ready(lines=2)
    load = Load(proc.url)
    began = time.monotonic()
    try:
        time.sleep(1)
        for step, (add, remove, serving) in enumerate([("2", None, "2"), ("3", None, "3"), (None, "3", "2")]):
            if add is not None:
                write_version(models, "m", int(add), mlp(seed=SEEDS[add]))
            if remove is not None:
                shutil.rmtree(models / "m" / remove)
            with grpcclient.InferenceServerClient(proc.url) as c:
                c.load_model("m")  # answers once this worker took it
            deadline = time.monotonic() + 10
            while {one(proc.url)[0] for _ in range(10)} != {serving}:  # new connections: both workers
                assert time.monotonic() < deadline, proc.log()
            time.sleep(max(0.0, (step + 1) * 6 - (time.monotonic() - began)))
        time.sleep(max(0.0, 20 - (time.monotonic() - began)))
    finally:
        load.finish()
    assert load.failures == []
    assert {v for v, _ in load.seen} == {"1", "2", "3"} and sum(load.seen.values()) > 1000
    assert proc.terminate() == 0, proc.log()
    assert proc.log().count("applied from model control") == 6, proc.log()  # 3 revisions x 2 workers


def test_refused_configs_change_nothing(tmp_path: Path) -> None:
    proc, config = serve(tmp_path, {"traffic": {"1": 100}})
    try:
        for bad, why in (
            ({"traffic": {"1": -1}}, "negative weight"),
            ({"traffic": {"7": 100}}, "version '7'"),
            ({"traffic": {"1": 100}, "batching": {"max_batch_size": 4}}, "models.m.batching (restart"),
            ({"traffic": {"1": 100}, "shadow": {"1": 0.5}}, "a shadow of the primary itself"),
        ):
            refusals = proc.log().count("refused")
            write(config, bad)
            deadline = time.monotonic() + 30
            while proc.log().count("refused") == refusals and time.monotonic() < deadline:
                time.sleep(0.05)
            assert why in proc.log().splitlines()[-1] or why in proc.log(), proc.log()
            assert one(proc.url) == ("1", 1)  # the old revision serves on
        refusals = proc.log().count("refused")
        config.write_text("models: [not, a, mapping")  # not even YAML
        deadline = time.monotonic() + 30
        while proc.log().count("refused") == refusals and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "cannot read config" in proc.log() and one(proc.url) == ("1", 1)
        write(config, {"traffic": {"2": 100}})  # a good one after all that
        assert wait_revision(proc.url, 2) == ("2", 2)
    finally:
        assert proc.terminate() == 0, proc.log()


def test_a_symlink_swap_is_seen_and_a_shadow_is_loaded_and_unloaded(tmp_path: Path) -> None:
    """Kubernetes mounts a ConfigMap as a symlink to a directory that a new one replaces."""
    models = repo(tmp_path)
    for name, traffic in (
        ("a", {"traffic": {"1": 100}}),
        ("b", {"traffic": {"1": 100}, "shadow": {"3": 1.0}}),
    ):
        (tmp_path / name).mkdir()
        write(tmp_path / name / "gateway.yaml", traffic)
    link = tmp_path / "current"
    link.symlink_to(tmp_path / "a")
    config = link / "gateway.yaml"
    proc = GatewayProcess(models, "--config", str(config)).wait_ready()
    try:
        with grpcclient.InferenceServerClient(proc.url) as c:
            assert [m.version for m in c.get_model_repository_index().models] == ["1"]
        swap = tmp_path / "next"
        swap.symlink_to(tmp_path / "b")
        swap.replace(link)  # atomic, as kubelet does
        assert wait_revision(proc.url, 2) == ("1", 2)
        with grpcclient.InferenceServerClient(proc.url) as c:  # v3 was loaded for the shadow
            assert [m.version for m in c.get_model_repository_index().models] == ["1", "3"]
        for _ in range(20):
            one(proc.url)
        deadline = time.monotonic() + 30
        agree = 0.0
        while time.monotonic() < deadline:
            text = scrape(proc.metrics_port)
            agree = metric(text, "modelgate_shadow_requests_total", model="m", shadow="3", outcome="disagree")
            if agree >= 20:
                break
            time.sleep(0.1)
        assert agree >= 20  # v3 is another model: every copy disagrees
        swap = tmp_path / "next"
        swap.symlink_to(tmp_path / "a")
        swap.replace(link)
        assert wait_revision(proc.url, 3) == ("1", 3)
        with grpcclient.InferenceServerClient(proc.url) as c:  # nothing keeps v3 any more
            assert [m.version for m in c.get_model_repository_index().models] == ["1"]
    finally:
        assert proc.terminate() == 0, proc.log()


def test_every_worker_serves_the_new_revision_within_a_second(tmp_path: Path) -> None:
    proc, config = serve(tmp_path, {"traffic": {"1": 100}}, "--workers", "2", lines=2)
    try:
        write(config, {"traffic": {"2": 100}})
        deadline = time.monotonic() + 30
        while proc.log().count("config revision 2 applied") < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        applied = [line for line in proc.log().splitlines() if "config revision 2 applied" in line]
        assert len(applied) == 2, proc.log()
        answers = {one(proc.url) for _ in range(30)}  # a new connection each: both workers
        assert answers == {("2", 2)}, answers
        at = [datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f") for line in applied]
        assert abs((at[1] - at[0]).total_seconds()) <= 1.0, applied  # each worker polls every 0.5 s
    finally:
        assert proc.terminate() == 0, proc.log()
