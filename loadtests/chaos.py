"""Faults under steady load: what each one costs.

    python loadtests/chaos.py [--workers 2] [--clients 8] [--deadline-s 5] [--no-triton]
                              [--trace-ratio 0.01]

Serves the example repository's `mlp` with `--workers 2` (and, when the Triton peer is set up:
`make triton-peer`, a model `fraud` on two real Triton servers), drives it with 8 clients (6
unary, 2 on ModelStreamInfer, every call with a deadline) and, in turn:

    t=8 s   SIGKILL a worker                       (it is restarted)
    t=18 s  SIGSTOP a worker for 5 s               (its heartbeat misses: it is replaced)
    t=32 s  swap mlp's version 3 times through the admin API (2 s apart)
    t=44 s  kill one Triton endpoint, start it again 5 s later   (with Triton)
    t=54 s  stop the OTLP collector, bring one back on its port 5 s later

Tracing is on throughout: the calls carry no `traceparent`, `telemetry.tracing.sampler_ratio`
(`--trace-ratio`) samples them, and the spans go over OTLP/gRPC to a real receiver in this
process (harness/otlp.py) with `export_timeout_s: 1` and an export every 0.5 s, so that exports
fail while the collector is down and their spans are counted as dropped.

For each fault: the requests that failed, by status; calls that took longer than their deadline
plus a second (hung: there must be none); and the time until throughput is back to 90% of what
it was before the fault. Every answer's version is checked against the version it names, so a
wrong answer cannot pass silently. For the collector: spans received after it is back and how
soon the first came, and modelgate_trace_spans_dropped_total before the stop and at the end. A
plot of throughput, p99 and failures per second with the faults marked goes to
loadtests/results/chaos.png, the figures to loadtests/results/chaos.json. Exits 1 when a call
hung, an answer was wrong, a call failed while the collector was away, no span arrived after it
came back or no dropped span was counted. Loopback only; it stops itself.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import onnxruntime as ort
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from gateway._proto import admin_pb2, admin_pb2_grpc
from gateway.examples import example_repository, mlp
from harness.bench import RESULTS, table
from harness.gateway import GatewayProcess, metric, scrape
from harness.otlp import OtlpReceiver
from harness.procfs import children, stat
from harness.triton import TritonServer, make_onnx_python_model, triton_available

X = np.linspace(-1, 1, 32, dtype=np.float32).reshape(1, 32)
COLLECTOR_FAULT = "stop the OTLP collector 5 s"


class Record:
    """Every call: when it ended, how long it took, its status, the version that answered."""

    def __init__(self) -> None:
        self.calls: list[tuple[float, float, str, str]] = []
        self.wrong: list[str] = []
        self.lock = threading.Lock()

    def add(self, end: float, took: float, status: str, version: str = "") -> None:
        with self.lock:
            self.calls.append((end, took, status, version))


def expected() -> dict[str, np.ndarray]:
    return {
        str(v): ort.InferenceSession(mlp(seed=v), providers=["CPUExecutionProvider"]).run(None, {"x": X})[0]
        for v in (1, 2, 3)
    }


def client_loop(
    url: str, model: str, stop: threading.Event, record: Record, deadline_s: float, answers: Any
) -> None:
    with grpcclient.InferenceServerClient(url) as c:
        x = grpcclient.InferInput("x", [1, 32], "FP32")
        x.set_data_from_numpy(X)
        while not stop.is_set():
            began = time.monotonic()
            try:
                result = c.infer(model, [x], client_timeout=deadline_s)
                version = result.get_response().model_version
                if answers is not None and not np.allclose(result.as_numpy("y"), answers[version], atol=1e-5):
                    record.wrong.append(f"{model} version {version}")
                record.add(time.monotonic(), time.monotonic() - began, "OK", version)
            except InferenceServerException as exc:
                record.add(
                    time.monotonic(), time.monotonic() - began, str(exc.status()).replace("StatusCode.", "")
                )
                time.sleep(0.01)  # a refused call comes back at once: do not spin on it


def stream_loop(url: str, stop: threading.Event, record: Record, deadline_s: float, answers: Any) -> None:
    done = threading.Semaphore(0)
    began = [0.0]

    def callback(result: Any, error: Any) -> None:
        took = time.monotonic() - began[0]
        if error is not None and stop.is_set() and str(error.status()) == "StatusCode.CANCELLED":
            done.release()  # the stream's own end: stop_stream(cancel_requests=True) below
            return
        if error is not None:
            record.add(time.monotonic(), took, str(error.status()).replace("StatusCode.", ""))
        else:
            version = result.get_response().model_version
            if not np.allclose(result.as_numpy("y"), answers[version], atol=1e-5):
                record.wrong.append(f"mlp version {version} (stream)")
            record.add(time.monotonic(), took, "OK", version)
        done.release()

    while not stop.is_set():  # a stream whose worker died ends: open another
        with grpcclient.InferenceServerClient(url) as c:
            x = grpcclient.InferInput("x", [1, 32], "FP32")
            x.set_data_from_numpy(X)
            c.start_stream(callback, stream_timeout=None)
            try:
                while not stop.is_set():
                    began[0] = time.monotonic()
                    try:
                        c.async_stream_infer("mlp", [x])
                    except InferenceServerException:  # the stream ended (its failure went to callback)
                        break
                    if not done.acquire(timeout=deadline_s + 1):
                        record.add(time.monotonic(), deadline_s + 1, "HUNG (stream)")
                        break
            finally:
                c.stop_stream(cancel_requests=True)


def workers_of(supervisor: int) -> list[int]:
    named = ((p, stat(f"/proc/{p}/stat")) for p in children(supervisor))
    return sorted(p for p, found in named if found and found[0].startswith("modelgate-w"))


def per_second(record: Record, t0: float, end: float) -> list[dict[str, Any]]:
    seconds = []
    for s in range(int(end - t0)):
        calls = [c for c in record.calls if t0 + s <= c[0] < t0 + s + 1]
        ok = [c[1] for c in calls if c[2] == "OK"]
        seconds.append(
            {
                "t": s,
                "ok": len(ok),
                "failed": len(calls) - len(ok),
                "p99_ms": 1e3 * (statistics.quantiles(ok, n=100)[98] if len(ok) >= 2 else 0.0),
            }
        )
    return seconds


def recovery(seconds: list[dict[str, Any]], at: float) -> float | None:
    """Seconds from `at` until a second's throughput is back to 90% of the 5 s before it."""
    before = [s["ok"] for s in seconds if at - 5 <= s["t"] < at]
    if not before:
        return None
    target = 0.9 * statistics.median(before)
    for s in seconds:
        if s["t"] >= at and s["ok"] >= target and s["t"] > at:
            return s["t"] - at
    return None


def dropped_spans(proc: GatewayProcess) -> float:
    return metric(scrape(proc.metrics_port), "modelgate_trace_spans_dropped_total")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--deadline-s", type=float, default=5.0)
    parser.add_argument("--no-triton", action="store_true")
    parser.add_argument("--trace-ratio", type=float, default=0.01, help="telemetry.tracing.sampler_ratio")
    args = parser.parse_args()
    use_triton = not args.no_triton and triton_available()
    tmp = Path(tempfile.mkdtemp(prefix="chaos-"))
    models = tmp / "models"
    example_repository(models)
    collector = OtlpReceiver()
    tracing = {"enabled": True, "endpoint": collector.endpoint, "sampler_ratio": args.trace_ratio}
    config: dict[str, Any] = {
        "worker_heartbeat_s": 2,
        "models": {"mlp": {"traffic": {"1": 100}}},
        "triton": {"probe_interval_s": 0.5, "eject_after_failures": 2},
        "telemetry": {"tracing": {**tracing, "export_timeout_s": 1}},
    }
    tritons: list[TritonServer] = []
    if use_triton:
        repo = tmp / "triton"
        onnx = tmp / "mlp1.onnx"
        onnx.write_bytes(mlp(seed=1))
        make_onnx_python_model(repo, "mlp", onnx, "x", 32, "y", 8)
        tritons = [TritonServer(repo, log_path=tmp / f"triton{i}.log").start() for i in range(2)]
        endpoints = [t.grpc_url for t in tritons]
        config["models"]["fraud"] = {
            "versions": {"1": {"backend": "triton", "endpoints": endpoints, "model": "mlp"}}
        }
    (tmp / "gateway.json").write_text(json.dumps(config))
    proc = GatewayProcess(
        models, "--config", str(tmp / "gateway.json"), "--workers", str(args.workers),
        env={"OTEL_BSP_SCHEDULE_DELAY": "500"},  # the SDK's export interval (ms): 5 s by default
    )  # fmt: skip
    proc.wait_ready(lines=args.workers, timeout=120)
    admin = admin_pb2_grpc.AdminServiceStub(grpc.insecure_channel(proc.admin_url))
    answers = expected()
    record, stop = Record(), threading.Event()
    unary = max(1, args.clients - 2 - (1 if use_triton else 0))
    threads = [
        threading.Thread(target=client_loop, args=(proc.url, "mlp", stop, record, args.deadline_s, answers))
        for _ in range(unary)
    ]
    threads += [
        threading.Thread(target=stream_loop, args=(proc.url, stop, record, args.deadline_s, answers))
        for _ in range(2)
    ]
    if use_triton:
        fraud = {"1": answers["1"]}
        threads.append(
            threading.Thread(
                target=client_loop, args=(proc.url, "fraud", stop, record, args.deadline_s, fraud)
            )
        )
    t0 = time.monotonic()
    for t in threads:
        t.start()
    faults: list[tuple[str, float]] = []
    traced: dict[str, Any] = {}

    def at(second: float) -> None:
        time.sleep(max(0.0, t0 + second - time.monotonic()))

    try:
        at(8)
        faults.append(("SIGKILL a worker", time.monotonic() - t0))
        os.kill(workers_of(proc.proc.pid)[0], signal.SIGKILL)
        at(18)
        faults.append(("SIGSTOP a worker 5 s", time.monotonic() - t0))
        stopped = workers_of(proc.proc.pid)[-1]
        os.kill(stopped, signal.SIGSTOP)
        at(23)
        try:
            os.kill(stopped, signal.SIGCONT)  # if the supervisor has not replaced it yet
        except ProcessLookupError:
            pass
        at(32)
        faults.append(("3 version swaps (admin API)", time.monotonic() - t0))
        for i, version in enumerate(("2", "3", "1")):
            at(32 + 2 * i)
            admin.SetTraffic(admin_pb2.SetTrafficRequest(model="mlp", weights={version: 100}), timeout=30)
        if tritons:
            at(44)
            faults.append(("kill a Triton endpoint for 5 s", time.monotonic() - t0))
            tritons[0].kill()
            at(49)
            tritons[0].start()
        at(54)
        traced["spans_before"] = len(collector.spans())
        traced["dropped_before"] = dropped_spans(proc)
        faults.append((COLLECTOR_FAULT, time.monotonic() - t0))
        collector.stop()
        at(59)
        collector = OtlpReceiver(port=collector.port)  # the gateway's exporter finds it again
        back = time.monotonic()
        while collector.exports == 0 and time.monotonic() < t0 + 68:
            time.sleep(0.05)
        if collector.exports:
            traced["first_export_after_s"] = round(time.monotonic() - back, 2)
        at(68)
        traced["spans_after"] = len(collector.spans())
        traced["dropped_after"] = dropped_spans(proc)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
        end = time.monotonic()
        status = proc.terminate()
        collector.stop()
        for t in tritons:
            t.stop()
    seconds = per_second(record, t0, end)
    rows = []
    bounds = [f[1] for f in faults] + [end - t0]
    for (name, when), until in zip(faults, bounds[1:], strict=True):
        calls = [c for c in record.calls if t0 + when <= c[0] < t0 + until]
        failed = Counter(c[2] for c in calls if c[2] != "OK")
        hung = sum(1 for c in calls if c[1] > args.deadline_s + 1)
        rows.append({"fault": name, "at_s": round(when, 1), "calls": len(calls), "failed": dict(failed),
                     "hung": hung, "recovered_s": _round(recovery(seconds, when))})  # fmt: skip
    total = Counter(c[2] for c in record.calls)
    span = f"{end - t0:.0f} s"
    print(f"\nchaos: {len(record.calls)} calls over {span}, {args.workers} workers, Triton: {bool(tritons)}")
    head = ["fault", "at s", "calls until the next", "failed (status: n)", "hung", "back to 90% after s"]
    failed = [", ".join(f"{k}: {v}" for k, v in sorted(r["failed"].items())) or "none" for r in rows]
    keys = ("fault", "at_s", "calls", "failed", "hung", "recovered_s")
    print(
        table(head, ([f if k == "failed" else r[k] for k in keys] for r, f in zip(rows, failed, strict=True)))
    )
    print(f"all calls: {dict(total)}; wrong answers: {len(record.wrong)}; gateway exit status {status}")
    print(
        f"OTLP collector (sampling {args.trace_ratio:g}): {traced.get('spans_before', 0)} spans before the"
        f" stop; after it came back {traced.get('spans_after', 0)} spans, the first export"
        f" {traced.get('first_export_after_s', 'never')} s after; modelgate_trace_spans_dropped_total"
        f" {traced.get('dropped_before', 0):g} before the stop, {traced.get('dropped_after', 0):g} at the end"
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "chaos.json").write_text(
        json.dumps({"faults": rows, "seconds": seconds, "total": dict(total), "tracing": traced}, indent=1)
    )
    _plot(seconds, faults)
    hung = sum(r["hung"] for r in rows)
    collector_ok = (
        not any(r["failed"] for r in rows if r["fault"] == COLLECTOR_FAULT)
        and traced.get("spans_after", 0) > 0
        and traced.get("dropped_after", 0) > traced.get("dropped_before", 0)
    )
    return 1 if hung or record.wrong or not collector_ok else 0


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _plot(seconds: list[dict[str, Any]], faults: list[tuple[str, float]]) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 6), sharex=True)
    t = [s["t"] for s in seconds]
    top.plot(t, [s["ok"] for s in seconds], label="answers/s")
    top.bar(t, [s["failed"] for s in seconds], color="red", label="failed/s")
    bottom.plot(t, [s["p99_ms"] for s in seconds], color="gray", label="p99 ms")
    for name, when in faults:
        for ax in (top, bottom):
            ax.axvline(when, color="orange", linestyle="--")
        top.annotate(name, (when, top.get_ylim()[1] * 0.9), rotation=90, fontsize=7, va="top")
    top.legend(loc="lower left")
    bottom.legend(loc="upper left")
    bottom.set_xlabel("seconds")
    fig.tight_layout()
    fig.savefig(RESULTS / "chaos.png", dpi=90)


if __name__ == "__main__":
    sys.exit(main())
