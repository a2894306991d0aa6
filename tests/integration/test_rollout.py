"""Automatic rollouts in the real gateway: a healthy canary promoted through every step (one
worker and two), and canaries rolled back for errors, a slower p99 and answers that disagree
with the baseline's; a rolled-back canary stays at 0% across a restart."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import yaml
from tritonclient.utils import InferenceServerException

from gateway.examples import mlp, slow, write_version
from harness.gateway import GatewayProcess, metric, scrape

pytestmark = pytest.mark.timeout(180)


def gather_model(limit: int = 2) -> bytes:
    """x [B, 32] -> y [B, 8]: a table lookup indexed by int(x[:, :8]). It warms up on zeros and
    fails at run time (index out of range) once any of those features reaches `limit`."""
    from onnx import TensorProto, helper, numpy_helper

    table = numpy_helper.from_array(np.arange(limit, dtype=np.float32), "table")
    starts = numpy_helper.from_array(np.array([0], np.int64), "starts")
    ends = numpy_helper.from_array(np.array([8], np.int64), "ends")
    axes = numpy_helper.from_array(np.array([1], np.int64), "axes")
    graph = helper.make_graph(
        [
            helper.make_node("Slice", ["x", "starts", "ends", "axes"], ["head"]),
            helper.make_node("Cast", ["head"], ["index"], to=TensorProto.INT64),
            helper.make_node("Gather", ["table", "index"], ["y"]),
        ],
        "gather",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 8])],
        [table, starts, ends, axes],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


class Hammer:
    """Clients calling a model (`m`) without pause until stopped; counts answers by version."""

    def __init__(
        self, url: str, width: int = 32, value: float = 0.5, threads: int = 4, model: str = "m"
    ) -> None:
        self.stop = threading.Event()
        self.model = model
        self.versions: dict[str, int] = {}
        self.errors: dict[str, int] = {}
        self._lock = threading.Lock()
        self.x = np.full((1, width), value, np.float32)
        self.threads = [threading.Thread(target=self._run, args=(url,)) for _ in range(threads)]
        for t in self.threads:
            t.start()

    def _run(self, url: str) -> None:
        with grpcclient.InferenceServerClient(url) as c:
            x = grpcclient.InferInput("x", list(self.x.shape), "FP32")
            x.set_data_from_numpy(self.x)
            while not self.stop.is_set():
                try:
                    key = c.infer(self.model, [x]).get_response().model_version
                    counts = self.versions
                except InferenceServerException as exc:
                    key, counts = str(exc.status()), self.errors
                with self._lock:
                    counts[key] = counts.get(key, 0) + 1

    def finish(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(60)


def start(tmp_path: Path, rollout: dict[str, Any], *args: str, **model: Any) -> GatewayProcess:
    config = tmp_path / "gateway.yaml"
    spec = {"canary": "2", "interval_s": 0.5, "min_requests": 40, **rollout}
    section = {"traffic": {"1": 100}, "rollout": spec, **model}
    config.write_text(yaml.safe_dump({"state_dir": str(tmp_path / "state"), "models": {"m": section}}))
    return GatewayProcess(tmp_path / "models", "--config", str(config), *args)


def wait_log(proc: GatewayProcess, text: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while text not in proc.log():
        assert time.monotonic() < deadline, f"no '{text}' in:\n{proc.log()}"
        time.sleep(0.05)


def weight(proc: GatewayProcess, version: str) -> float:
    return metric(scrape(proc.metrics_port), "modelgate_traffic_weight", model="m", version=version)


@pytest.mark.parametrize("workers", [1, 2])
def test_a_healthy_canary_is_promoted_through_every_step(tmp_path: Path, workers: int) -> None:
    write_version(tmp_path / "models", "m", 1, mlp(seed=1))
    write_version(tmp_path / "models", "m", 2, mlp(seed=2))
    rollout = {"steps": [20, 50, 100], "max_p99_ratio": 5.0, "max_shadow_disagreement": None}
    proc = start(tmp_path, rollout, "--workers", str(workers)).wait_ready(lines=workers)
    load = Hammer(proc.url)
    try:
        wait_log(proc, "promoted: every gate passed")
    finally:
        load.finish()
    text = proc.log()
    assert text.index("step 2: canary at 50") < text.index("step 3: canary at 100") < text.index("promoted")
    assert "rolled back" not in text and load.errors == {}
    assert load.versions.get("1", 0) > 0 and load.versions.get("2", 0) > 0
    assert only(proc, "2", 32, 0.5)  # every worker serves the promoted weights
    assert weight(proc, "2") == 1.0 and weight(proc, "1") == 0.0
    text = scrape(proc.metrics_port)
    assert metric(text, "modelgate_rollout_state", model="m", canary="2", state="promoted") == 1
    assert metric(text, "modelgate_rollout_step", model="m", canary="2") == 3  # the last of 3 steps
    assert proc.terminate() == 0, proc.log()


def only(
    proc: GatewayProcess, version: str, width: int, value: float, timeout: float = 15, model: str = "m"
) -> bool:
    """Whether, within `timeout`, half a second of load is served by `version` alone, error-free
    (workers take the new weights within a poll interval of the runtime file)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        load = Hammer(proc.url, width=width, value=value, model=model)
        time.sleep(0.5)
        load.finish()
        if set(load.versions) == {version} and not load.errors:
            return True
    return False


def rolled_back(proc: GatewayProcess, why: str, width: int = 32, value: float = 0.5) -> None:
    """The rollout rolled back for `why`, and the baseline alone serves again."""
    wait_log(proc, "rolled back at step 1")
    line = next(ln for ln in proc.log().splitlines() if "rolled back at step 1" in ln)
    assert why in line, line
    assert only(proc, "1", width, value)
    assert weight(proc, "1") == 1.0 and weight(proc, "2") == 0.0
    text = scrape(proc.metrics_port)
    assert metric(text, "modelgate_rollbacks_total", model="m", reason=why.replace(" ", "_")) == 1
    assert metric(text, "modelgate_rollout_state", model="m", canary="2", state="rolled_back") == 1
    assert metric(text, "modelgate_rollout_canary_weight", model="m", canary="2") == 0


def test_a_canary_that_errs_is_rolled_back_and_stays_back_after_a_restart(tmp_path: Path) -> None:
    write_version(tmp_path / "models", "m", 1, mlp(seed=1))
    write_version(tmp_path / "models", "m", 2, gather_model())
    rollout = {"steps": [30, 100], "interval_s": 30}  # the gate fires long before the interval ends
    proc = start(tmp_path, rollout).wait_ready()
    load = Hammer(proc.url, value=5.0)  # the canary fails on these inputs, the baseline does not
    try:
        rolled_back(proc, "error rate", value=5.0)
    finally:
        load.finish()
    assert load.errors.get("StatusCode.INTERNAL", 0) > 0
    assert proc.terminate() == 0, proc.log()
    again = start(tmp_path, rollout).wait_ready()  # the same config: the rollback holds
    try:
        assert weight(again, "1") == 1.0 and weight(again, "2") == 0.0  # from the first request on
        wait_log(again, "rolled_back at step 1")
        assert only(again, "1", 32, 5.0)
    finally:
        assert again.terminate() == 0, again.log()


def test_a_slower_canary_is_rolled_back(tmp_path: Path) -> None:
    write_version(tmp_path / "models", "m", 1, mlp((256, 256), seed=1))
    write_version(tmp_path / "models", "m", 2, slow(1_500))  # ~15 ms a call, same signature
    rollout = {"steps": [30, 100], "interval_s": 30, "max_p99_ratio": 2.0}
    proc = start(tmp_path, rollout, batching={"mode": "off"}).wait_ready()
    load = Hammer(proc.url, width=256)
    try:
        rolled_back(proc, "p99 ratio", width=256)
    finally:
        load.finish()
    assert proc.terminate() == 0, proc.log()


def test_a_canary_that_disagrees_with_the_baseline_is_rolled_back(tmp_path: Path) -> None:
    write_version(tmp_path / "models", "m", 1, mlp(seed=1))
    write_version(tmp_path / "models", "m", 2, mlp(seed=2))  # another model: every answer differs
    rollout = {"steps": [10, 100], "interval_s": 30, "max_p99_ratio": None, "max_shadow_disagreement": 0.05}
    proc = start(tmp_path, rollout, shadow={"2": 1.0}).wait_ready()
    load = Hammer(proc.url)
    try:
        rolled_back(proc, "shadow disagreement")
    finally:
        load.finish()
    assert load.errors == {}
    assert proc.terminate() == 0, proc.log()
