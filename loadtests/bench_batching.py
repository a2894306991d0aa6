"""Dynamic batching benchmark: gateway batching on/off vs Triton, the bare server and ORT.

The gateway with batching on and off, a real Triton, the bare transport ceiling and ONNX Runtime
in-process, side by side in one run.

    python loadtests/bench_batching.py [--concurrency 1,8,32,64,128] [--measurement-ms 2000]
                                       [--models small,wide] [--modes unary,streaming]
                                       [--servers a,b,c,d,g] [--skip-triton] [--time-budget-s 1800]

Two models, both `gateway.examples.mlp` (FP32, ReLU, dynamic batch dimension, 1-row requests):
  small  32 -> 256 -> 256 -> 8                 what the serving stack costs (the model is ~20 µs)
  wide   64 -> 2048 -> 2048 -> 2048 -> 8       what batching is worth (a 1-row call costs > 1 ms)

For each model, one after the other, each on free loopback ports (127.0.0.1), perf_analyzer at
each concurrency against
  (a) the gateway, batching on  (max_batch_size 64, max_queue_delay_us 500)
  (b) the gateway, batching off
  (g) the gateway, batching on, on the grpcio transport ((a) and (b) run on the native one)
  (p) the gateway, batching on, native, with `native_batch: false`: the drop-in server's one
      asyncio task per call instead of the batch path (gateway/transport/native.py)
  (z) (a) with max_queue_delay_us 0: batches of what has arrived, no waiting for more
  (r) (a) at an earlier commit (--baseline REV, harness/baseline.py): before/after in one run
  (q) (p) at that earlier commit
  (h) (g) at that earlier commit
  (y) (c) with max_queue_delay_microseconds 0 (as (z))
  (c) a real Triton 2.51, Python backend running the same ONNX file with ONNX Runtime (1 intra-op
      thread), dynamic batching (max batch 64, 500 µs delay). If it dies, the crash is recorded,
      it is restarted and the row is retried at half the concurrency (then 1/4, 1/8).
  (d) the bare grpc.aio server (loadtests/bare_server.py): precomputed answers, no model
  (e) ONNX Runtime called in-process (no network), batch 1/8/64/256, 1 intra-op thread and ORT's
      default; the best rows/s is the ceiling for the in-process backend.
Unary and streaming (ModelStreamInfer) for every server. Per row also: mean rows per backend
execution (from ModelStatistics deltas) and CPU time of the server's process group per inference.

Prints one markdown table per model and mode (ratio to (d) for small, to (b) for wide), the target
ratios, and writes loadtests/results/bench_batching.json (+ .png, when matplotlib is importable).
The 2-core machine is noisy: compare the ratios of one run, not absolute numbers across runs.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
from gateway.examples import mlp  # noqa: E402
from harness.bare_server import start_bare_server_subprocess, stop_bare_server  # noqa: E402
from harness.baseline import baseline_env, checkout  # noqa: E402
from harness.gateway import GatewayProcess  # noqa: E402
from harness.perf_analyzer import FIELDS, infer_stats, run_perf_analyzer  # noqa: E402
from harness.procfs import group_cpu_s, processes  # noqa: E402
from harness.triton import TritonError, TritonServer, make_onnx_python_model, triton_available  # noqa: E402

RESULTS = ROOT / "loadtests" / "results"
MODELS: dict[str, tuple[int, ...]] = {"small": (32, 256, 256, 8), "wide": (64, 2048, 2048, 2048, 8)}
BASELINE = {"small": "d", "wide": "b"}  # the ratio column of each model's tables
SERVERS = {
    "a": "gateway batching on (a)",
    "b": "gateway batching off (b)",
    "c": "Triton python+ORT (c)",
    "y": "Triton python+ORT, no queue delay (y)",
    "d": "bare grpc.aio (d)",
    "g": "gateway batching on, grpcio transport (g)",
    "p": "gateway batching on, native, a task per call (p)",
    "z": "gateway batching on, no queue delay (z)",
    "r": "gateway batching on, at --baseline (r)",
    "q": "gateway batching on, native, a task per call, at --baseline (q)",
    "h": "gateway batching on, grpcio transport, at --baseline (h)",
}
# batching, transport, native_batch (the batch path; (p) is the drop-in's one task per call)
GATEWAYS = {
    "a": ("on", "native", True),
    "b": ("off", "native", True),
    "g": ("on", "grpcio", True),
    "p": ("on", "native", False),
    "z": ("on", "native", True),
    "r": ("on", "native", True),  # (a) at an earlier commit (--baseline REV)
    "q": ("on", "native", False),  # (p) at an earlier commit (--baseline REV)
    "h": ("on", "grpcio", True),  # (g) at an earlier commit (--baseline REV)
}
AT_BASELINE = {"r", "q", "h"}
DEFAULT_SERVERS = ["a", "b", "c", "d", "g", "p", "z"]
NO_DELAY = {"z", "y"}  # max_queue_delay_us 0: a batch of what is queued when the batcher looks
MAX_BATCH = 64
QUEUE_DELAY_US = 500
ORT_BATCHES = (1, 8, 64, 256)
TRITON_RETRY_DIVISORS = (2, 4, 8)  # a crashed Triton row is retried at c/2, then c/4, c/8


def log(msg: str) -> None:
    print(f"bench_batching: {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# machine facts, CPU accounting, statistics
# --------------------------------------------------------------------------------------------
def machine_facts() -> dict[str, Any]:
    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    cpu_model = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import onnxruntime

    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model,
        "loadavg_start": list(os.getloadavg()),
        "commit": git("rev-parse", "HEAD"),
        "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
        "python": platform.python_version(),
        "onnxruntime": onnxruntime.__version__,
        "platform": platform.platform(),
        "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
    }


def model_parameters(url: str, model: str) -> dict[str, str]:
    """The `parameters` of the model's config (ModelConfig): the gateway reports its ORT settings
    and its inline cost model there. {} when there are none or the call fails."""
    try:
        import tritonclient.grpc as tgrpc

        client = tgrpc.InferenceServerClient(url)
        try:
            config = client.get_model_config(model, as_json=True, client_timeout=5).get("config", {})
        finally:
            client.close()
    except Exception as exc:
        log(f"ModelConfig on {url} failed: {type(exc).__name__}: {exc}")
        return {}
    params = config.get("parameters", {}) or {}
    return {k: v.get("string_value", "") if isinstance(v, dict) else str(v) for k, v in params.items()}


# --------------------------------------------------------------------------------------------
# (e) ONNX Runtime in-process
# --------------------------------------------------------------------------------------------
def measure_ort(model_path: Path, in_dim: int, seconds: float) -> list[dict[str, Any]]:
    """Per-call time of ORT on this file for each batch size; 1 intra-op thread and ORT's default.

    Each point: 3 warm-up calls, then calls for ``seconds`` (at least 5, at most 5000)."""
    import numpy as np
    import onnxruntime as ort

    rows = []
    for threads in (1, 0):
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        sess = ort.InferenceSession(str(model_path), opts, providers=["CPUExecutionProvider"])
        feed = sess.get_inputs()[0].name
        for batch in ORT_BATCHES:
            x = np.random.default_rng(0).standard_normal((batch, in_dim)).astype(np.float32)
            for _ in range(3):
                sess.run(None, {feed: x})
            times: list[float] = []
            end = time.perf_counter() + seconds
            while len(times) < 5000 and (len(times) < 5 or time.perf_counter() < end):
                t0 = time.perf_counter()
                sess.run(None, {feed: x})
                times.append(time.perf_counter() - t0)
            times.sort()
            med = statistics.median(times)
            rows.append(
                {
                    "intra_op_threads": "1" if threads == 1 else "default",
                    "batch": batch,
                    "calls": len(times),
                    "p50_ms": med * 1e3,
                    "p99_ms": times[min(len(times) - 1, int(0.99 * len(times)))] * 1e3,
                    "rows_s": batch / med,
                }
            )
        del sess
    return rows


# --------------------------------------------------------------------------------------------
# servers
# --------------------------------------------------------------------------------------------
GATEWAY_CONFIG_PBTXT = """\
name: "{name}"
backend: "onnxruntime"
max_batch_size: {max_batch}
input [ {{ name: "x", data_type: TYPE_FP32, dims: [ {in_dim} ] }} ]
output [ {{ name: "y", data_type: TYPE_FP32, dims: [ {out_dim} ] }} ]
dynamic_batching {{ max_queue_delay_microseconds: {delay} }}
"""


def gateway_repo(root: Path, name: str, onnx_file: Path, in_dim: int, out_dim: int) -> Path:
    repo = root / "gateway-models"
    (repo / name / "1").mkdir(parents=True, exist_ok=True)
    (repo / name / "1" / "model.onnx").write_bytes(onnx_file.read_bytes())
    (repo / name / "config.pbtxt").write_text(
        GATEWAY_CONFIG_PBTXT.format(
            name=name, max_batch=MAX_BATCH, in_dim=in_dim, out_dim=out_dim, delay=QUEUE_DELAY_US
        )
    )
    return repo


def gateway_yaml(
    root: Path,
    name: str,
    batching: bool,
    intra_op_threads: int | None,
    native_batch: bool = True,
    delay_us: int = QUEUE_DELAY_US,
) -> Path:
    """The gateway's YAML for (a) or (b). The model's own `models.<name>.batching` section is
    what decides: it outranks config.pbtxt's dynamic_batching, which outranks the global
    `batching` (and so `--batching off`)."""
    if batching:
        section = [
            '    mode: "on"',
            f"    max_batch_size: {MAX_BATCH}",
            f"    max_queue_delay_us: {delay_us}",
        ]
    else:
        section = ['    mode: "off"']
    lines = ["batching:", *[ln[2:] for ln in section], "models:", f"  {name}:", "    batching:"]
    lines += ["  " + ln for ln in section]
    if intra_op_threads is not None:
        lines += ["onnxruntime:", f"  intra_op_threads: {intra_op_threads}"]
    if not native_batch:
        lines += ["native_batch: false"]
    path = root / f"gateway-{'on' if batching else 'off'}.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


class Server:
    """One peer under test: a URL, a process group for CPU accounting, a liveness check."""

    def __init__(self, url: str, pgid: int, alive: Callable[[], bool], metrics_port: int = 0) -> None:
        self.url = url
        self.pgid = pgid
        self.alive = alive
        self.metrics_port = metrics_port  # a gateway's /metrics (0: none)


@contextmanager
def start_server(
    key: str, name: str, dims: tuple[int, ...], onnx_file: Path, tmp: Path, args: argparse.Namespace
) -> Iterator[Any]:
    """Start server ``key`` serving model ``name``; yield a Server (Triton: the TritonServer too)."""
    in_dim, out_dim = dims[0], dims[-1]
    if key in GATEWAYS:
        mode, transport, native_batch = GATEWAYS[key]
        repo = gateway_repo(tmp / key, name, onnx_file, in_dim, out_dim)
        delay = 0 if key in NO_DELAY else QUEUE_DELAY_US
        cfg = gateway_yaml(tmp / key, name, mode == "on", args.gateway_intra_op_threads, native_batch, delay)
        env = None
        if key in AT_BASELINE:
            if args.baseline_tree is None:
                raise SystemExit(f"server ({key}) needs --baseline REV")
            env = baseline_env(args.baseline_tree)
        flags = ("--config", str(cfg), "--batching", mode, "--transport", transport, "--log-level", "warning")
        gw = GatewayProcess(repo, *flags, env=env)
        try:
            gw.wait_ready(timeout=120)
            yield Server(gw.url, gw.proc.pid, lambda: gw.proc.poll() is None, gw.metrics_port), None
        finally:
            code = gw.terminate()
            if code != 0:
                log(f"gateway ({key}) exited with {code}; its output:\n{gw.log()[-3000:]}")
    elif key in ("c", "y"):
        repo = tmp / f"triton-models-{key}"
        make_onnx_python_model(
            repo,
            name,
            onnx_file,
            "x",
            in_dim,
            "y",
            out_dim,
            max_batch_size=MAX_BATCH,
            max_queue_delay_us=0 if key in NO_DELAY else QUEUE_DELAY_US,
        )
        triton = TritonServer(repo, venv=args.triton_venv, log_path=tmp / f"tritonserver-{key}.log")
        try:
            triton.start()
            yield Server(triton.grpc_url, triton.pid or 0, lambda: triton.running), triton
        finally:
            triton.stop()
    elif key == "d":
        proc, port = start_bare_server_subprocess(
            model=name, input_dim=in_dim, output_dim=out_dim, max_seconds=args.time_budget_s + 600
        )
        try:
            yield Server(f"127.0.0.1:{port}", proc.pid, lambda: proc.poll() is None), None
        finally:
            stop_bare_server(proc)
    else:
        raise ValueError(key)


# --------------------------------------------------------------------------------------------
# measuring
# --------------------------------------------------------------------------------------------
def our_perf_analyzers() -> list[int]:
    """Pids of the perf_analyzer processes this process started (its direct children)."""
    me = os.getpid()
    return [pid for pid, comm, fields in processes() if int(fields[1]) == me and comm == "perf_analyzer"]


@contextmanager
def server_watchdog(server: Server) -> Iterator[None]:
    """While the block runs, poll the server; if it dies, kill our perf_analyzer child (by pid):
    against a dead server it would otherwise wait for its whole timeout."""
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(0.25):
            if not server.alive():
                for pid in our_perf_analyzers():
                    log(f"server died: killing perf_analyzer pid {pid}")
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                return

    thread = threading.Thread(target=watch, name="server-watchdog", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(5)


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.t0 = time.monotonic()
        self.rows: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []

    def over_budget(self) -> bool:
        return time.monotonic() - self.t0 > self.args.time_budget_s

    def one(
        self, server: Server, name: str, dims: tuple[int, ...], conc: int, mode: str, label: str
    ) -> dict[str, Any]:
        """One perf_analyzer run at one concurrency, with statistics and CPU deltas around it."""
        if self.over_budget():
            row = {k: None for k in FIELDS}
            row.update(label=label, model=name, mode=mode, batch_size=1, concurrency=conc)
            row.update(status="skipped", error=f"time budget of {self.args.time_budget_s:.0f} s spent")
            return row
        before = infer_stats(server.url, name)
        cpu0, w0 = group_cpu_s(server.pgid), time.monotonic()
        with server_watchdog(server):
            row = run_perf_analyzer(
                server.url,
                name,
                [f"x:{dims[0]}"],
                [conc],
                measurement_ms=self.args.measurement_ms,
                streaming=mode == "streaming",
                label=label,
                log=log,
            )[0]
        cpu1, w1 = group_cpu_s(server.pgid), time.monotonic()
        after = infer_stats(server.url, name) if server.alive() else None
        row["server_s"] = round(w1 - w0, 2)
        row["server_cpu_s"] = cpu1 - cpu0
        row["server_cpu_cores"] = (cpu1 - cpu0) / (w1 - w0) if w1 > w0 else None
        row["rows_per_exec"] = None
        row["server_cpu_us_per_infer"] = None
        if before and after and after[1] > before[1]:
            n_rows, n_exec = after[0] - before[0], after[1] - before[1]
            row["rows_per_exec"] = n_rows / n_exec
            row["server_cpu_us_per_infer"] = (cpu1 - cpu0) / n_rows * 1e6 if n_rows else None
        return row

    def measure(
        self,
        key: str,
        server: Server,
        triton: TritonServer | None,
        name: str,
        dims: tuple[int, ...],
        mode: str,
    ) -> None:
        for conc in self.args.concurrency:
            if not server.alive():  # Triton gave up (too many crashes, or no restart)
                row = {k: None for k in FIELDS}
                row.update(label=SERVERS[key], model=name, mode=mode, batch_size=1, concurrency=conc)
                row.update(
                    status="failed", error="server not running", server=key, requested_concurrency=conc
                )
                self.rows.append(row)
                continue
            row = self.one(server, name, dims, conc, mode, SERVERS[key])
            row.update(server=key, requested_concurrency=conc)
            if triton is None or server.alive():
                self.rows.append(row)
                continue
            # Triton died during this row: record it, restart, retry lower (bounded)
            lower = [max(1, conc // d) for d in TRITON_RETRY_DIVISORS if conc // d >= 1]
            lower = list(dict.fromkeys(c for c in lower if c < conc))
            done = False
            for attempt, c in enumerate([conc, *lower]):
                if attempt:
                    row = self.one(server, name, dims, c, mode, SERVERS[key])
                    row.update(server=key, requested_concurrency=conc)
                if server.alive():
                    row["note"] = f"Triton died at c={conc}; retried at c={c}"
                    self.rows.append(row)
                    done = True
                    break
                code = triton.stop()
                event = {
                    "model": name,
                    "mode": mode,
                    "concurrency": c,
                    "row_concurrency": conc,
                    "exit_code": code,
                    "perf_analyzer_status": row["status"],
                    "log": triton.failure_report(),
                }
                self.events.append(event)
                log(f"Triton died ({name} {mode} c={c}, exit code {code}):\n{event['log']}")
                if sum(1 for e in self.events if e["model"] == name) > self.args.triton_max_restarts:
                    log("too many Triton crashes; not restarting it")
                    break
                try:
                    triton.restart()
                except TritonError as exc:
                    log(f"Triton restart failed: {exc}")
                    self.events.append({"model": name, "server": key, "error": f"restart failed: {exc}"})
                    break
                server.pgid = triton.pid or 0  # a new process group
            if not done:
                row = dict(row, status="failed", note=f"Triton died at c={conc} and at every lower retry")
                for k in ("throughput_infer_s", "p50_ms", "p99_ms"):
                    row[k] = None
                self.rows.append(row)


# --------------------------------------------------------------------------------------------
# reporting
# --------------------------------------------------------------------------------------------
def _f(value: Any, fmt: str = "{:,.1f}") -> str:
    return fmt.format(value) if isinstance(value, (int, float)) else "—"


def find(rows: list[dict[str, Any]], model: str, mode: str, server: str, conc: int) -> dict[str, Any] | None:
    for r in rows:
        if (r["model"], r["mode"], r["server"], r["requested_concurrency"]) == (model, mode, server, conc):
            return r
    return None


def good(row: dict[str, Any] | None) -> bool:
    return bool(row) and row["status"] in ("ok", "unstable") and bool(row["throughput_infer_s"])


def ratio(
    a: dict[str, Any] | None, b: dict[str, Any] | None, key: str = "throughput_infer_s"
) -> float | None:
    if good(a) and good(b) and a[key] and b[key]:  # type: ignore[index]
        return a[key] / b[key]  # type: ignore[index]
    return None


def md_row(cells: list[Any]) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def table(bench: Bench, model: str, mode: str, ort_best: dict[str, Any] | None) -> str:
    base = BASELINE[model]
    measured = {(r["model"], r["mode"], r["server"]) for r in bench.rows}
    base_mode = mode if (model, mode, base) in measured else "unary"
    head = f"× {base}" + ("" if base_mode == mode else f" {base_mode}")
    cols = ["server", "concurrency", "infer/s", "p50 ms", "p99 ms", head]
    cols += ["rows/exec", "server CPU µs/infer", "status"]
    out = [md_row(cols), md_row(["---"] * len(cols))]
    for key in SERVERS:
        for r in (r for r in bench.rows if (r["model"], r["mode"], r["server"]) == (model, mode, key)):
            conc = r["requested_concurrency"]
            shown = str(conc) if r["concurrency"] == conc else f"{conc} (ran at {r['concurrency']})"
            rt = ratio(r, find(bench.rows, model, base_mode, base, conc))
            status = r["status"] + (f": {r['note']}" if r.get("note") else "")
            cells = [SERVERS[key], shown, _f(r["throughput_infer_s"])]
            cells += [_f(r["p50_ms"], "{:.2f}"), _f(r["p99_ms"], "{:.2f}"), _f(rt, "{:.2f}")]
            cells += [_f(r.get("rows_per_exec"), "{:.1f}"), _f(r.get("server_cpu_us_per_infer"), "{:,.0f}")]
            out.append(md_row([*cells, status]))
    if ort_best:
        label = (
            f"ORT in-process (e), batch {ort_best['batch']}, {ort_best['intra_op_threads']} intra-op threads"
        )
        cells = [label, "—", f"{_f(ort_best['rows_s'])} rows/s", _f(ort_best["p50_ms"], "{:.2f}")]
        cells += [_f(ort_best["p99_ms"], "{:.2f}"), "—", ort_best["batch"], "—", "per call, no network"]
        out.append(md_row(cells))
    return "\n".join(out)


def notes(bench: Bench, model: str, mode: str) -> list[str]:
    """Checks on what a table shows."""
    out = []
    rows = [r for r in bench.rows if (r["model"], r["mode"]) == (model, mode)]
    leaky = [r for r in rows if r["server"] == "b" and (r.get("rows_per_exec") or 1) > 1.05]
    if leaky:
        out.append(
            "**(b) batched anyway** (rows/exec > 1 at c="
            + ",".join(str(r["concurrency"]) for r in leaky)
            + "): batching off is not off."
        )
    if mode == "streaming" and any(r["server"] == "d" for r in rows):
        out.append(
            "(d) answers one request at a time per stream (an async generator: read, yield, read) "
            "and perf_analyzer opens one stream per worker thread (16 at most by default), so at "
            "high concurrency (d) streaming is not a ceiling."
        )
    return out


def ort_table(rows: list[dict[str, Any]]) -> str:
    out = ["| intra-op threads | batch | µs/call (p50) | rows/s |", "|---|---|---|---|"]
    for r in rows:
        out.append(
            f"| {r['intra_op_threads']} | {r['batch']} | {r['p50_ms'] * 1e3:,.0f} | {r['rows_s']:,.0f} |"
        )
    return "\n".join(out)


def target_ratios(bench: Bench, concs: list[int]) -> tuple[list[str], dict[str, Any]]:
    """The issue's targets, at c=64 (or the nearest concurrency measured)."""
    c = min(concs, key=lambda x: (abs(x - 64), -x))
    at = "" if c == 64 else f" (no c=64 in this run: at c={c})"
    rows, lines, out = bench.rows, [], {"concurrency": c}

    def put(key: str, text: str, value: float | None, fmt: str = "{:.2f}") -> None:
        out[key] = value
        lines.append(f"- {text}: **{_f(value, fmt)}**")

    put(
        "small_unary_a_over_d",
        f"small, unary, c={c}: gateway (a) / bare (d) throughput{at}",
        ratio(find(rows, "small", "unary", "a", c), find(rows, "small", "unary", "d", c)),
    )
    for key, what in (
        ("a", "native, batching on"),
        ("b", "native, batching off"),
        ("g", "grpcio, batching on"),
        ("p", "native, a task per call, batching on"),
    ):
        put(
            f"small_unary_{key}_over_triton",
            f"small, unary, c={c}: gateway ({what}) / Triton (c) throughput{at}",
            ratio(find(rows, "small", "unary", key, c), find(rows, "small", "unary", "c", c)),
        )
    put(
        "small_unary_a_over_p",
        f"small, unary, c={c}: batch path (a) / a task per call (p) throughput{at}",
        ratio(find(rows, "small", "unary", "a", c), find(rows, "small", "unary", "p", c)),
    )
    put(
        "small_unary_a_over_triton_cpu",
        f"small, unary, c={c}: gateway (a) / Triton (c) server CPU per request (lower is better){at}",
        ratio(
            find(rows, "small", "unary", "a", c),
            find(rows, "small", "unary", "c", c),
            "server_cpu_us_per_infer",
        ),
    )
    one = min(concs)
    put(
        "small_unary_a_over_triton_p50_c1",
        f"small, unary, c={one}: gateway (a) / Triton (c) p50 latency (lower is better)",
        ratio(find(rows, "small", "unary", "a", one), find(rows, "small", "unary", "c", one), "p50_ms"),
    )
    sa, tc = find(rows, "small", "streaming", "a", c), find(rows, "small", "unary", "c", c)
    put(
        "small_stream_a_over_triton_unary_throughput",
        f"small, c={c}: gateway (a) streaming / Triton (c) unary throughput{at}",
        ratio(sa, tc),
    )
    put(
        "small_stream_a_over_triton_unary_p99",
        f"small, c={c}: gateway (a) streaming / Triton (c) unary p99 (lower is better){at}",
        ratio(sa, tc, "p99_ms"),
    )
    for mode in ("unary", "streaming"):
        wa = find(rows, "wide", mode, "a", c)
        put(
            f"wide_{mode}_on_over_off",
            f"wide, {mode}, c={c}: batching on (a) / off (b) throughput{at}",
            ratio(wa, find(rows, "wide", mode, "b", c)),
        )
        put(
            f"wide_{mode}_a_over_triton",
            f"wide, {mode}, c={c}: gateway (a) / Triton (c) throughput{at}",
            ratio(wa, find(rows, "wide", mode, "c", c)),
        )
    # the streaming-vs-Triton-unary comparison at every concurrency, for the record
    per_c = {}
    for cc in concs:
        s, t = find(rows, "small", "streaming", "a", cc), find(rows, "small", "unary", "c", cc)
        per_c[cc] = {"throughput": ratio(s, t), "p99": ratio(s, t, "p99_ms")}
    out["small_stream_a_vs_triton_unary_by_concurrency"] = per_c
    return lines, out


def plot(bench: Bench, ort_best: dict[str, dict[str, Any]], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log(f"no plot: it needs matplotlib (`{Path(sys.executable).parent}/pip install matplotlib`)")
        return False
    panels = sorted(
        {(r["model"], r["mode"]) for r in bench.rows},
        key=lambda p: (list(MODELS).index(p[0]), p[1] != "unary"),
    )
    if not panels:
        return False
    models = [m for m in MODELS if any(p[0] == m for p in panels)]
    modes = [m for m in ("unary", "streaming") if any(p[1] == m for p in panels)]
    fig, axes = plt.subplots(
        len(models), len(modes), figsize=(6.5 * len(modes), 4.8 * len(models)), squeeze=False
    )
    for i, model in enumerate(models):
        for j, mode in enumerate(modes):
            ax = axes[i][j]
            ax.set_title(f"{model} {'x'.join(map(str, MODELS[model]))}, {mode}, 1-row requests")
            for key, label in SERVERS.items():
                pts = [
                    r
                    for r in bench.rows
                    if (r["model"], r["mode"], r["server"]) == (model, mode, key) and good(r)
                ]
                if not pts:
                    continue
                pts.sort(key=lambda r: r["concurrency"])
                xs, ys = [r["p99_ms"] for r in pts], [r["throughput_infer_s"] for r in pts]
                ax.plot(xs, ys, marker="o", label=label)
                for r, x, y in zip(pts, xs, ys, strict=True):
                    ax.annotate(
                        f"c{r['concurrency']}", (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points"
                    )
            best = ort_best.get(model)
            top = max(
                (r["throughput_infer_s"] for r in bench.rows if r["model"] == model and good(r)), default=0
            )
            if best and best["rows_s"] <= 20 * top:
                label = f"ORT in-process (e), batch {best['batch']}"
                ax.axhline(best["rows_s"], color="grey", linestyle="--", linewidth=1, label=label)
            elif best:  # far above every server: a note, not a line that flattens the panel
                note = (
                    f"ORT in-process (e): {best['rows_s']:,.0f} rows/s, batch {best['batch']} (off the chart)"
                )
                ax.text(0.01, 0.99, note, transform=ax.transAxes, fontsize=7, va="top", color="grey")
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("p99 latency (ms)")
            ax.set_ylabel("throughput (infer/s)")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=7)
    fig.suptitle(
        f"modelgate bench_batching, {bench.args.measurement_ms} ms windows, "
        f"{len(os.sched_getaffinity(0))} cores"
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


# --------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------
def _list(choices: tuple[str, ...] | None = None) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        vals = [v for v in text.replace(" ", "").split(",") if v]
        bad = [v for v in vals if choices is not None and v not in choices]
        if not vals or bad:
            raise argparse.ArgumentTypeError(f"expected a comma-separated subset of {choices}, got {text!r}")
        return vals

    return parse


def _concs(text: str) -> list[int]:
    vals = [int(v) for v in text.replace(" ", "").split(",") if v]
    if not vals or any(v < 1 for v in vals):
        raise argparse.ArgumentTypeError("expected a comma-separated list of integers >= 1")
    return vals


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    ap.add_argument("--concurrency", type=_concs, default=[1, 8, 32, 64, 128], help="e.g. 1,8,64")
    ap.add_argument("--measurement-ms", type=int, default=2000, help="perf_analyzer window (3 to 5 per row)")
    ap.add_argument("--models", type=_list(tuple(MODELS)), default=list(MODELS), help="small,wide")
    ap.add_argument(
        "--modes", type=_list(("unary", "streaming")), default=["unary", "streaming"], help="unary,streaming"
    )
    ap.add_argument(
        "--servers", type=_list(tuple(SERVERS)), default=DEFAULT_SERVERS, help="subset of a,b,c,d,g,p,z,r"
    )
    ap.add_argument(
        "--streaming-servers",
        type=_list(tuple(SERVERS)),
        default=DEFAULT_SERVERS,
        help="which of them also run streaming",
    )
    ap.add_argument("--baseline", metavar="REV", default=None, help="the commit (r), (q) and (h) run")
    ap.add_argument("--skip-triton", action="store_true", help="leave out (c)")
    ap.add_argument("--triton-venv", default=None, help="default .venv-triton (harness/setup_triton.sh)")
    ap.add_argument("--triton-max-restarts", type=int, default=8, help="per model")
    ap.add_argument(
        "--gateway-intra-op-threads",
        type=int,
        default=None,
        help="onnxruntime.intra_op_threads for (a)/(b); default: the gateway's own (cores / workers)",
    )
    ap.add_argument("--ort-seconds", type=float, default=0.5, help="time per (e) point")
    ap.add_argument(
        "--time-budget-s",
        type=float,
        default=1800,
        help="after this long, remaining rows are skipped (marked so)",
    )
    ap.add_argument("--out", type=Path, default=RESULTS / "bench_batching.json")
    ap.add_argument("--plot", type=Path, default=RESULTS / "bench_batching.png")
    args = ap.parse_args()
    with ExitStack() as stack:
        args.baseline_tree = stack.enter_context(checkout(args.baseline)) if args.baseline else None
        return run(args)


def run(args: argparse.Namespace) -> int:
    servers = [s for s in args.servers if not (s == "c" and args.skip_triton)]
    if "c" in servers and not triton_available(args.triton_venv):
        log("no Triton venv (run harness/setup_triton.sh): leaving out (c)")
        servers.remove("c")
    facts = machine_facts()
    log(f"machine: {facts['nproc']} cores, loadavg {facts['loadavg_start']}, commit {facts['commit']}")
    bench = Bench(args)
    ort_rows: dict[str, list[dict[str, Any]]] = {}
    ort_best: dict[str, dict[str, Any]] = {}
    one_row_ms: dict[str, dict[str, float]] = {}
    server_info: dict[str, dict[str, Any]] = {}

    with tempfile.TemporaryDirectory(prefix="bench_batching_") as tmpdir:
        tmp = Path(tmpdir)
        for name in args.models:
            dims = MODELS[name]
            onnx_file = tmp / f"{name}.onnx"
            onnx_file.write_bytes(mlp(dims=dims, seed=1))
            log(f"{name}: (e) ONNX Runtime in-process, batches {ORT_BATCHES}")
            ort_rows[name] = measure_ort(onnx_file, dims[0], args.ort_seconds)
            ort_best[name] = max(ort_rows[name], key=lambda r: r["rows_s"])
            one_row_ms[name] = {r["intra_op_threads"]: r["p50_ms"] for r in ort_rows[name] if r["batch"] == 1}
            for key in servers:
                modes = [m for m in args.modes if m == "unary" or key in args.streaming_servers]
                if not modes:
                    continue
                log(f"{name}: starting {SERVERS[key]}")
                t_start = time.monotonic()
                try:
                    with start_server(key, name, dims, onnx_file, tmp / name, args) as (server, triton):
                        log(
                            f"{name}: {SERVERS[key]} up on {server.url} in {time.monotonic() - t_start:.1f} s"
                        )
                        info: dict[str, Any] = {"startup_s": round(time.monotonic() - t_start, 2)}
                        info["config_parameters"] = model_parameters(server.url, name)
                        server_info[f"{name}/{key}"] = info
                        for mode in modes:
                            bench.measure(key, server, triton, name, dims, mode)
                except (TritonError, RuntimeError, AssertionError) as exc:
                    log(f"{name}: {SERVERS[key]} could not be started/measured: {exc}")
                    bench.events.append({"model": name, "server": key, "error": str(exc)[-3000:]})

    facts["loadavg_end"] = list(os.getloadavg())
    facts["wall_s"] = round(time.monotonic() - bench.t0, 1)

    # ---- report -----------------------------------------------------------------------------
    print(
        f"\n# bench_batching — {facts['nproc']} cores ({facts['cpu_model']}), loadavg at start "
        f"{facts['loadavg_start']}, commit {facts['commit']}{' (dirty)' if facts['dirty'] else ''}, "
        f"{facts['wall_s']} s\n"
    )
    threads = args.gateway_intra_op_threads or "the gateway's default (cores / workers)"
    print(
        f"`{facts['command']}`; perf_analyzer windows {args.measurement_ms} ms, 1-row FP32 requests; "
        f"(a) max_batch_size {MAX_BATCH}, max_queue_delay_us {QUEUE_DELAY_US}; "
        f"(c) Triton Python backend, ORT with 1 intra-op thread, dynamic batching, same delay and max; "
        f"(a)/(b) ORT intra-op threads: {threads}. rows/exec: rows per backend execution "
        f"(ModelStatistics delta); server CPU: the server's process group, per inference.\n"
    )
    for name in args.models:
        ms = one_row_ms[name]
        print(f"## {name} {'→'.join(map(str, MODELS[name]))}\n")
        best = ort_best[name]
        print(
            f"(e) ONNX Runtime in-process, 1-row call: {ms['1']:.3f} ms with 1 intra-op thread, "
            f"{ms['default']:.3f} ms with ORT's default threads. Best: {best['rows_s']:,.0f} rows/s "
            f"(batch {best['batch']}, {best['intra_op_threads']} intra-op threads).\n"
        )
        if name == "wide" and ms["1"] < 1.0:
            print("**warning: the wide model's 1-row call costs under 1 ms here; batching shows less.**\n")
        print(ort_table(ort_rows[name]) + "\n")
        for mode in args.modes:
            if any((r["model"], r["mode"]) == (name, mode) for r in bench.rows):
                print(f"### {name}, {mode}\n")
                print(table(bench, name, mode, ort_best[name]) + "\n")
                for note in notes(bench, name, mode):
                    print(f"- {note}")
                print()
    lines, targets = target_ratios(bench, args.concurrency)
    print("## Target ratios\n")
    print("\n".join(lines) + "\n")
    if bench.events:
        print("## Failures\n")
        for e in bench.events:
            where = f"{e['model']} {e.get('mode', '')} c={e.get('concurrency', '—')}"
            if e.get("row_concurrency") not in (None, e.get("concurrency")):
                where += f" (retry for the c={e['row_concurrency']} row)"
            what = f"Triton exit code {e['exit_code']}" if "exit_code" in e else e.get("error", "")[:300]
            print(f"- {where}: {what}")
        print()

    args.out.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "machine": facts,
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "servers": {k: SERVERS[k] for k in servers},
        "server_info": server_info,
        "models": {k: list(MODELS[k]) for k in args.models},
        "one_row_ms": one_row_ms,
        "ort": ort_rows,
        "ort_best": ort_best,
        "rows": bench.rows,
        "targets": targets,
        "events": bench.events,
    }
    args.out.write_text(json.dumps(doc, indent=2, default=str))
    log(f"wrote {args.out}")
    if plot(bench, ort_best, args.plot):
        log(f"wrote {args.plot}")
    failed = [r for r in bench.rows if r["status"] == "failed"]
    return 1 if failed or not bench.rows else 0


if __name__ == "__main__":
    sys.exit(main())
