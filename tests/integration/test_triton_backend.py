"""Versions served by a real Triton Inference Server (harness/triton.py), through the gateway."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aioclient
from tritonclient.utils import InferenceServerException

from gateway.examples import identity, mlp, write_config, write_version
from harness.gateway import GatewayProcess, metric, scrape
from harness.triton import TritonServer, free_port, make_onnx_python_model

# No skip: a missing or broken Triton fails these tests (`make test` and `make integration` set
# it up; by hand: `make triton-peer`). Each fixture starts a real server, so files on disk alone
# prove nothing.
pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def onnx_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("onnx")
    files = {"mlp": root / "mlp.onnx", "int64": root / "int64.onnx", "fp64": root / "fp64.onnx"}
    files["mlp"].write_bytes(mlp(seed=21))
    files["int64"].write_bytes(identity(["INT64"]))
    files["fp64"].write_bytes(identity(["FP64"]))
    return files


def triton_repo(root: Path, onnx_files: dict[str, Path], sleep_ms: float = 0) -> Path:
    make_onnx_python_model(root, "mlp", onnx_files["mlp"], "x", 32, "y", 8, extra_sleep_ms=sleep_ms)
    make_onnx_python_model(root, "ints", onnx_files["int64"], "x", 4, "y", 4, dtype="INT64")
    make_onnx_python_model(root, "doubles", onnx_files["fp64"], "x", 4, "y", 4, dtype="FP64")
    return root


@pytest.fixture(scope="module")
def tritons(
    tmp_path_factory: pytest.TempPathFactory, onnx_files: dict[str, Path]
) -> Iterator[list[TritonServer]]:
    repo = triton_repo(tmp_path_factory.mktemp("triton-repo"), onnx_files)
    servers = [TritonServer(repo, log_path=tmp_path_factory.mktemp("tlog") / f"t{i}.log") for i in range(2)]
    try:
        for s in servers:
            s.start()
        yield servers
    finally:
        for s in servers:
            s.close()


def gateway_for(
    tmp_path: Path, models: dict[str, Any], *args: str, repo: Path | None = None
) -> GatewayProcess:
    repo = repo or (tmp_path / "models")
    repo.mkdir(exist_ok=True)
    config = {"models": models, "triton": {"probe_interval_s": 0.2, "eject_after_failures": 2}}
    (tmp_path / "gateway.json").write_text(json.dumps(config))  # JSON is YAML
    return GatewayProcess(repo, "--config", str(tmp_path / "gateway.json"), *args).wait_ready()


def remote(*servers: TritonServer, model: str = "mlp") -> dict[str, Any]:
    return {
        "versions": {"1": {"backend": "triton", "endpoints": [s.grpc_url for s in servers], "model": model}}
    }


def infer(client: Any, model: str, x: np.ndarray, **kw: Any) -> Any:
    tensor = grpcclient.InferInput(
        "x", list(x.shape), {np.float32: "FP32", np.int64: "INT64", np.float64: "FP64"}[x.dtype.type]
    )
    tensor.set_data_from_numpy(x)
    return client.infer(model, [tensor], **kw)


def test_pass_through_matches_the_model_run_directly(
    tmp_path: Path, tritons: list[TritonServer], onnx_files: dict[str, Path]
) -> None:
    proc = gateway_for(
        tmp_path,
        {
            "fraud": remote(tritons[0]),
            "ints": remote(tritons[0], model="ints"),
            "doubles": remote(tritons[0], model="doubles"),
        },
    )
    try:
        client = grpcclient.InferenceServerClient(proc.url)
        meta = client.get_model_metadata("fraud")
        assert [(t.name, t.datatype, list(t.shape)) for t in meta.inputs] == [("x", "FP32", [-1, 32])]
        session = ort.InferenceSession(str(onnx_files["mlp"]), providers=["CPUExecutionProvider"])
        for rows in (1, 5):
            x = np.random.default_rng(rows).standard_normal((rows, 32)).astype(np.float32)
            result = infer(client, "fraud", x)
            assert result.get_response().model_version == "1"
            np.testing.assert_allclose(
                result.as_numpy("y"), session.run(None, {"x": x})[0], rtol=1e-5, atol=1e-6
            )
        params = infer(client, "fraud", x, parameters={"cost": True}).get_response().parameters
        assert params["cost_cpu_measured"].bool_param is False  # Triton's CPU is its own
        assert params["cost_us"].double_param == 0 and params["cost_wall_us"].double_param > 0
        text = scrape(proc.metrics_port)
        assert metric(text, "modelgate_backend_cpu_seconds_total", model="fraud") == 0
        assert metric(text, "modelgate_backend_wall_seconds_total", model="fraud") > 0
        ints = np.array([[2**40, -3, 0, 7]], dtype=np.int64)
        np.testing.assert_array_equal(infer(client, "ints", ints).as_numpy("y"), ints)
        doubles = np.array([[1e300, -0.5, np.pi, 0.0]], dtype=np.float64)
        np.testing.assert_array_equal(infer(client, "doubles", doubles).as_numpy("y"), doubles)
        config = client.get_model_config("fraud").config
        assert config.parameters["backend"].string_value == "triton"
        with pytest.raises(InferenceServerException) as err:  # Triton's own validation passes through
            infer(client, "fraud", np.zeros((1, 31), np.float32))
        assert err.value.status() == "StatusCode.INVALID_ARGUMENT"
    finally:
        assert proc.terminate() == 0


def test_gateway_batching_makes_fewer_triton_calls(tmp_path: Path, tritons: list[TritonServer]) -> None:
    proc = gateway_for(tmp_path, {"fraud": remote(tritons[1])}, "--batching", "on")
    try:

        def triton_requests() -> int:
            with grpcclient.InferenceServerClient(tritons[1].grpc_url) as c:
                return int(c.get_inference_statistics("mlp").model_stats[0].inference_stats.success.count)

        before = triton_requests()

        async def burst() -> None:
            async with aioclient.InferenceServerClient(proc.url) as c:

                async def one(i: int) -> None:
                    x = aioclient.InferInput("x", [1, 32], "FP32")
                    x.set_data_from_numpy(np.full((1, 32), i, np.float32))
                    await c.infer("fraud", [x])

                await asyncio.gather(*(one(i) for i in range(64)))

        asyncio.run(burst())
        assert triton_requests() - before < 64 * 0.5
    finally:
        assert proc.terminate() == 0


def hammer(url: str, stop: threading.Event, results: list[str], deadline_s: float = 2.0) -> None:
    client = grpcclient.InferenceServerClient(url)
    x = np.ones((1, 32), np.float32)
    while not stop.is_set() and len(results) < 50_000:
        try:
            infer(client, "fraud", x, client_timeout=deadline_s)
            results.append("OK")
        except InferenceServerException as exc:
            results.append(str(exc.status()))


def test_one_of_two_endpoints_killed(tmp_path: Path, onnx_files: dict[str, Path]) -> None:
    repo = triton_repo(tmp_path / "triton", onnx_files)
    a, b = (
        TritonServer(repo, log_path=tmp_path / "a.log").start(),
        TritonServer(repo, log_path=tmp_path / "b.log").start(),
    )
    proc = gateway_for(tmp_path, {"fraud": remote(a, b)})
    stop, results = threading.Event(), []
    threads = [threading.Thread(target=hammer, args=(proc.url, stop, results)) for _ in range(4)]
    try:
        for t in threads:
            t.start()
        time.sleep(1.0)
        killed_at = len(results)
        b.kill()
        time.sleep(3.0)
        stop.set()
        for t in threads:
            t.join()
        after = results[killed_at:]
        failures = [r for r in after if r != "OK"]
        assert set(failures) <= {"StatusCode.UNAVAILABLE"}
        assert len(failures) <= 4  # at most the calls in flight on the killed server
        assert after[-20:] == ["OK"] * 20  # its traffic moved to the other one
        # SREs see it in /metrics: b ejected (and still, its probes fail), a serving, nothing stuck
        text = scrape(proc.metrics_port)
        where = {"model": "fraud", "version": "1"}
        assert metric(text, "modelgate_upstream_ejected", **where, endpoint=b.grpc_url) == 1
        assert metric(text, "modelgate_upstream_ejected", **where, endpoint=a.grpc_url) == 0
        assert metric(text, "modelgate_upstream_ejections_total", **where, endpoint=b.grpc_url) >= 1
        calls = "modelgate_upstream_calls_total"
        a_ok = metric(text, calls, **where, endpoint=a.grpc_url, code="OK")
        b_ok = metric(text, calls, **where, endpoint=b.grpc_url, code="OK")
        b_failed = metric(text, calls, **where, endpoint=b.grpc_url, code="UNAVAILABLE")
        assert b_ok > 0 and a_ok > b_ok  # both served until the kill, then only a
        # every failed call to b either reached the client or was sent again to a
        retries = metric(text, "modelgate_upstream_retries_total", **where)
        assert b_failed == len(failures) + retries
        assert metric(text, "modelgate_upstream_outstanding", **where) == 0
    finally:
        stop.set()
        assert proc.terminate() == 0
        a.close()
        b.close()


def test_triton_killed_and_restarted_recovers(tmp_path: Path, onnx_files: dict[str, Path]) -> None:
    triton = TritonServer(triton_repo(tmp_path / "triton", onnx_files), log_path=tmp_path / "t.log").start()
    proc = gateway_for(tmp_path, {"fraud": remote(triton)})
    try:
        client = grpcclient.InferenceServerClient(proc.url)
        x = np.ones((1, 32), np.float32)
        infer(client, "fraud", x)
        triton.kill()
        began = time.monotonic()
        with pytest.raises(InferenceServerException) as err:
            infer(client, "fraud", x, client_timeout=5)
        assert err.value.status() == "StatusCode.UNAVAILABLE"
        assert time.monotonic() - began < 5  # answered, not hung until the deadline
        triton.restart()
        deadline = time.monotonic() + 15
        while True:
            try:
                infer(client, "fraud", x, client_timeout=2)
                break
            except InferenceServerException:
                assert time.monotonic() < deadline, "no recovery within 15 s of Triton's restart"
                time.sleep(0.1)
        recovered = time.monotonic() - began
        assert recovered < 30
    finally:
        assert proc.terminate() == 0
        triton.close()


def test_slow_triton_deadline_exceeded_without_retry_storm(
    tmp_path: Path, onnx_files: dict[str, Path]
) -> None:
    triton = TritonServer(
        triton_repo(tmp_path / "triton", onnx_files, sleep_ms=600), log_path=tmp_path / "t.log"
    )
    triton.start()
    proc = gateway_for(tmp_path, {"fraud": remote(triton)})
    try:
        client = grpcclient.InferenceServerClient(proc.url)
        codes, took = [], []
        for _ in range(5):
            began = time.monotonic()
            with pytest.raises(InferenceServerException) as err:
                infer(client, "fraud", np.ones((1, 32), np.float32), client_timeout=0.2)
            took.append(time.monotonic() - began)
            codes.append(err.value.status())
        assert set(codes) == {"StatusCode.DEADLINE_EXCEEDED"}
        assert max(took) < 1.0
        time.sleep(1.5)
        with grpcclient.InferenceServerClient(triton.grpc_url) as c:
            stats = c.get_inference_statistics("mlp").model_stats[0].inference_stats
        assert stats.success.count + stats.fail.count <= 5  # one remote call per request at most
    finally:
        assert proc.terminate() == 0
        triton.close()


def test_signature_mismatch_fails_the_load_and_the_old_version_keeps_serving(
    tmp_path: Path, tritons: list[TritonServer]
) -> None:
    repo = tmp_path / "models"
    good = (
        'max_batch_size: 64\ninput [{name: "x", data_type: TYPE_FP32, dims: [32]}]\n'
        'output [{name: "y", data_type: TYPE_FP32, dims: [8]}]\n'
    )
    write_config(repo, "fraud", good)
    proc = gateway_for(tmp_path, {"fraud": remote(tritons[0])}, repo=repo)
    try:
        client = grpcclient.InferenceServerClient(proc.url)
        assert infer(client, "fraud", np.ones((1, 32), np.float32)).as_numpy("y").shape == (1, 8)
        write_config(repo, "fraud", good.replace("dims: [32]", "dims: [16]"))
        with pytest.raises(InferenceServerException) as err:
            client.load_model("fraud")
        message = err.value.message()
        assert "'x'" in message and "FP32 [-1, 16]" in message and "FP32 [-1, 32]" in message
        assert infer(client, "fraud", np.ones((1, 32), np.float32)).as_numpy("y").shape == (1, 8)
    finally:
        assert proc.terminate() == 0


def test_mismatch_at_start_up_leaves_the_model_unavailable(
    tmp_path: Path, tritons: list[TritonServer]
) -> None:
    repo = tmp_path / "models"
    write_config(
        repo, "fraud", 'max_batch_size: 64\ninput [{name: "x", data_type: TYPE_INT32, dims: [32]}]\n'
    )
    proc = gateway_for(tmp_path, {"fraud": remote(tritons[0])}, repo=repo)
    try:
        index = {
            m.name: m for m in grpcclient.InferenceServerClient(proc.url).get_model_repository_index().models
        }
        assert index["fraud"].state == "UNAVAILABLE"
        assert "INT32" in index["fraud"].reason and "FP32" in index["fraud"].reason
    finally:
        assert proc.terminate() == 0


def test_caller_deadline_reaches_triton(tmp_path: Path, tritons: list[TritonServer]) -> None:
    """A request with a 1 µs deadline answers DEADLINE_EXCEEDED and the gateway serves on. The
    gateway refuses it before the remote call only when nothing is left by then; otherwise the
    call goes with the little that is left (test_trace_forwarding.py checks the value) and
    Triton drops it, so Triton's count may include it (loadtests/deadline_reach.py measures how
    many such calls reach a remote, and with how much left)."""
    proc = gateway_for(tmp_path, {"fraud": remote(tritons[0])})
    try:
        with grpc.insecure_channel(proc.url) as channel:
            grpc.channel_ready_future(channel).result(timeout=10)
        client = grpcclient.InferenceServerClient(proc.url)
        before = _triton_requests(tritons[0])
        with pytest.raises(InferenceServerException) as err:
            infer(client, "fraud", np.ones((1, 32), np.float32), client_timeout=0.000001)
        assert err.value.status() == "StatusCode.DEADLINE_EXCEEDED"
        infer(client, "fraud", np.ones((1, 32), np.float32), client_timeout=30)  # one that arrives
        assert before + 1 <= _triton_requests(tritons[0]) <= before + 2  # it, and maybe the expired one
    finally:
        assert proc.terminate() == 0


def _triton_requests(triton: TritonServer) -> int:
    with grpcclient.InferenceServerClient(triton.grpc_url) as c:
        stats = c.get_inference_statistics("mlp").model_stats
        return sum(s.inference_stats.success.count + s.inference_stats.fail.count for s in stats)


def test_a_gateway_started_before_its_triton_serves_once_triton_is_up(
    tmp_path: Path, onnx_files: dict[str, Path]
) -> None:
    """Start in any order: the remote version's load is retried (backing off) until Triton
    answers; meanwhile the model is UNAVAILABLE with the reason and ServerReady is false."""
    port = free_port()
    triton = TritonServer(
        triton_repo(tmp_path / "triton", onnx_files), grpc_port=port, log_path=tmp_path / "t.log"
    )
    config = {"versions": {"1": {"backend": "triton", "endpoints": [f"127.0.0.1:{port}"], "model": "mlp"}}}
    proc = gateway_for(tmp_path, {"fraud": config})
    try:
        assert "0 of 1 models loaded (failed: fraud)" in proc.log()
        client = grpcclient.InferenceServerClient(proc.url)
        assert not client.is_server_ready()
        x = np.ones((1, 32), np.float32)
        with pytest.raises(InferenceServerException) as err:
            infer(client, "fraud", x)
        assert err.value.status() == "StatusCode.UNAVAILABLE" and "no endpoint served" in err.value.message()
        triton.start()
        deadline = time.monotonic() + 60  # retries back off to 2, 4, 8 s ... after a few failures
        while True:
            try:
                infer(client, "fraud", x, client_timeout=5)
                break
            except InferenceServerException:
                assert time.monotonic() < deadline, proc.log()
                time.sleep(0.2)
        assert client.is_server_ready() and client.is_model_ready("fraud")
        assert "trying the failed load again" in proc.log()
    finally:
        assert proc.terminate() == 0, proc.log()
        triton.close()


def test_a_triton_canary_whose_triton_dies_mid_rollout_is_rolled_back(
    tmp_path: Path, onnx_files: dict[str, Path]
) -> None:
    from tests.integration.test_rollout import Hammer, only, wait_log

    triton = TritonServer(triton_repo(tmp_path / "triton", onnx_files), log_path=tmp_path / "t.log").start()
    write_version(tmp_path / "models", "fraud", 1, onnx_files["mlp"].read_bytes())  # the baseline, local
    rollout = {"canary": "2", "steps": [50, 100], "interval_s": 60, "min_requests": 20}
    rollout |= {"max_p99_ratio": None, "max_shadow_disagreement": None}
    model = {**remote(triton), "traffic": {"1": 100}, "rollout": rollout}
    model["versions"]["2"] = model["versions"].pop("1")  # the canary is version 2, on Triton
    config = {"models": {"fraud": model}, "state_dir": str(tmp_path / "state")}
    config["triton"] = {"probe_interval_s": 0.2, "eject_after_failures": 2}
    (tmp_path / "gateway.json").write_text(json.dumps(config))
    proc = GatewayProcess(tmp_path / "models", "--config", str(tmp_path / "gateway.json")).wait_ready()
    load = Hammer(proc.url, model="fraud")
    try:
        deadline = time.monotonic() + 30
        while load.versions.get("2", 0) < 30:  # the canary serves its half
            assert time.monotonic() < deadline, (load.versions, proc.log())
            time.sleep(0.05)
        triton.kill()
        wait_log(proc, "rolled back at step 1")
    finally:
        load.finish()
    try:
        line = next(ln for ln in proc.log().splitlines() if "rolled back at step 1" in ln)
        assert "error rate" in line, line
        assert load.errors.get("StatusCode.UNAVAILABLE", 0) > 0
        assert only(proc, "1", 32, 0.5, model="fraud")  # the baseline alone, error-free
    finally:
        assert proc.terminate() == 0, proc.log()
        triton.close()
