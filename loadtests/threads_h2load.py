"""Where a server's CPU goes under h2load: its CPU time per thread (by thread name), and with
--py-spy a profile of its Python threads, over a few seconds of steady load.

    python loadtests/threads_h2load.py [--server a] [--models small] [--seconds 6]
                                       [--py-spy loadtests/results/threads_h2load.raw]

The server is one of bench_h2load.py's (started the same way, the same 64 calls in flight from
h2load on 4 connections). After a warm-up, h2load runs long enough to outlast the window; the
threads' CPU (utime + stime in /proc/PID/task/*/stat) is read at the window's start and end.
py-spy slows the server down (about half its rate), so the per-thread split is taken from a
run without it; the profile is for proportions within the Python threads. py-spy's raw output
(one collapsed stack per line) is summed by function, self and inclusive, for the main thread.
For a gateway, the cyclic garbage collector's passes in the window and the time they took (its
/metrics: modelgate_gc_passes_total, modelgate_gc_pause_seconds_total).
"""

from __future__ import annotations

import argparse
import collections
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from bench_batching import MODELS
from bench_h2load import FLOORS, body, h2load, start, successes

from gateway.examples import mlp
from harness.gateway import metric, scrape
from harness.procfs import cpu_s_by_thread_name


def summarize(raw: Path, top: int = 25) -> str:
    """py-spy's collapsed stacks of the main thread, by function: inclusive and self shares."""
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        if "MainThread" not in frames[0]:
            continue
        n = int(count)
        total += n
        names = [f.split(" (")[0] for f in frames[1:]]
        own[names[-1]] += n
        for name in set(names):
            inclusive[name] += n
    lines = [f"main thread: {total} samples", "| function | inclusive | self |", "|---|---|---|"]
    for name, n in inclusive.most_common(top):
        lines.append(f"| {name} | {n / total:.1%} | {own[name] / total:.1%} |")
    return "\n".join(lines)


def gc_pauses(server: Any) -> tuple[list[float], list[float]] | None:
    """A gateway's collector passes and pause seconds by generation, from its /metrics."""
    port = getattr(server, "metrics_port", 0)
    if not port:
        return None
    text = scrape(port)
    passes = [metric(text, "modelgate_gc_passes_total", generation=str(g)) for g in range(3)]
    return passes, [metric(text, "modelgate_gc_pause_seconds_total", generation=str(g)) for g in range(3)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default="a")
    parser.add_argument("--models", default="small", choices=list(MODELS))
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--py-spy", type=Path, default=None, help="write py-spy's raw profile here")
    parser.add_argument("--triton-venv", default=None)
    args = parser.parse_args()
    name = args.models
    settings = argparse.Namespace(
        connections=4, streams=16, triton_venv=args.triton_venv, baseline=None, measurement_ms=2000,
        gateway_intra_op_threads=None, triton_max_restarts=8,
    )  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        dims = MODELS[name]
        onnx_file = tmp / f"{name}.onnx"
        onnx_file.write_bytes(mlp(dims=dims, seed=1))
        payload = tmp / "request.grpc"
        payload.write_bytes(
            body(name, np.random.default_rng(7).standard_normal((1, dims[0])).astype(np.float32))
        )
        with start(args.server, name, onnx_file, tmp / name, settings) as server:
            pid = server.pgid
            h2load(server.url, payload, argparse.Namespace(**{**vars(settings), "requests": 5000}))  # warm-up
            result: dict[str, Any] = {}
            requests = 500_000 if args.py_spy is None else 250_000  # outlasts the window
            load = threading.Thread(
                target=lambda: result.update(
                    h2load(
                        server.url, payload, argparse.Namespace(**{**vars(settings), "requests": requests})
                    )
                )
            )
            load.start()
            time.sleep(1.0)  # past the connections' start
            counted = FLOORS.get(args.server) is None  # the floors keep no statistics
            first = successes(server.url, name) if counted else 0
            gc_before = gc_pauses(server)
            before, began = cpu_s_by_thread_name(pid), time.monotonic()
            if args.py_spy is not None:
                args.py_spy.parent.mkdir(parents=True, exist_ok=True)
                spy = [sys.executable.replace("python", "py-spy"), "record", "-p", str(pid), "-r", "997"]
                spy += ["-d", str(int(args.seconds)), "-f", "raw", "-o", str(args.py_spy), "--threads"]
                subprocess.run(spy, check=True, capture_output=True)
            else:
                time.sleep(args.seconds)
            after, window = cpu_s_by_thread_name(pid), time.monotonic() - began
            gc_after = gc_pauses(server)
            served = successes(server.url, name) - first if counted else 0
            load.join()
    if not counted:  # estimated from h2load's rate
        served = int(result["req_s"] * window)
    print(f"\n{args.server} on {name}: h2load {result['req_s']:,.0f} req/s over its whole run; "
          f"{served:,} calls in the {window:.1f} s window\n")  # fmt: skip
    print("| thread | CPU s | µs a request |")
    print("|---|---|---|")
    spent = {k: after[k] - before.get(k, 0.0) for k in after}
    for thread, seconds in sorted(spent.items(), key=lambda kv: -kv[1]):
        if seconds > 0:
            print(f"| {thread} | {seconds:.2f} | {seconds / served * 1e6:.1f} |")
    if gc_after is not None and gc_before is not None:
        passes = [round(a - b) for a, b in zip(gc_after[0], gc_before[0], strict=True)]
        paused = sum(gc_after[1]) - sum(gc_before[1])
        print(f"\ncyclic GC in the window (gen 0/1/2): {passes[0]}/{passes[1]}/{passes[2]} passes, "
              f"{paused * 1e3:.1f} ms ({paused / served * 1e6:.2f} µs a request)")  # fmt: skip
    if args.py_spy is not None:
        print("\n" + summarize(args.py_spy))
    return 0


if __name__ == "__main__":
    sys.exit(main())
