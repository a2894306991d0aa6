"""Memory and latency over a long run: is anything growing?

    python loadtests/soak.py [--minutes 5] [--concurrency 32] [--rate-fraction F] [--streaming]
                             [--workers 1] [--server gateway|bare]

Serves the example repository (batching on for `mlp`, its canary and shadow as `make run`
has them), drives it with perf_analyzer in back-to-back windows for --minutes, and samples the
resident memory (RSS) of every gateway process after each window. With --rate-fraction (the
issue's run: `--minutes 10 --rate-fraction 0.8`) it first measures the peak at --concurrency for
5 s, then sends that fraction of it as a fixed request rate. Prints a table (window, infer/s,
p99, RSS per process), the RSS change and the p99 ratio between the first window after
warm-up and the last, and the requests the gateway failed over the run (its /metrics). Exits 1
if RSS grew by more than --max-growth-mib (20 MiB), p99 by more than --max-p99-growth (1.5x),
or any request failed. Results go to loadtests/results/soak.json, a plot to soak.png.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from gateway.examples import example_repository
from harness.bare_server import BareServer
from harness.bench import RESULTS, table, write_results
from harness.gateway import GatewayProcess, scrape
from harness.perf_analyzer import run_perf_analyzer
from harness.procfs import children, rss_mib

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--window-ms", type=int, default=10_000)
    parser.add_argument("--streaming", action="store_true")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument(
        "--server", choices=("gateway", "bare"), default="gateway",
        help="bare: the same windows against harness/bare_server.py (is a drift the machine's?)",
    )  # fmt: skip
    parser.add_argument("--max-growth-mib", type=float, default=20.0)
    parser.add_argument("--max-p99-growth", type=float, default=1.5)
    parser.add_argument("--rate-fraction", type=float, help="a fixed rate: this share of the measured peak")
    parser.add_argument("--out", type=Path, default=RESULTS / "soak.json")
    args = parser.parse_args()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        if args.server == "bare":
            bare = BareServer().start()
            url, pids, stop = bare.address, lambda: [bare.pid], bare.stop
        else:
            example = example_repository(Path(tmp) / "models")
            config = ROOT / "gateway.example.yaml"
            gateway = GatewayProcess(example, "--workers", str(args.workers), "--config", str(config))
            gateway.wait_ready(lines=args.workers)
            url, pids = gateway.url, lambda: [gateway.proc.pid, *children(gateway.proc.pid)]
            stop = gateway.terminate
            failed_before = _failed(gateway.metrics_port)
        try:
            rate = None
            if args.rate_fraction:
                [peak] = run_perf_analyzer(url, "mlp", ["x:32"], [args.concurrency], measurement_ms=5000,
                                           streaming=args.streaming, label="peak", max_trials=3)  # fmt: skip
                rate = round(args.rate_fraction * (peak["throughput_infer_s"] or 0), 1)
                print(f"peak {peak['throughput_infer_s']} infer/s: sending {rate}/s", flush=True)
            end = time.monotonic() + args.minutes * 60
            window = 0
            while time.monotonic() < end:
                [r] = run_perf_analyzer(
                    url, "mlp", ["x:32"], [args.concurrency], measurement_ms=args.window_ms,
                    streaming=args.streaming, label=f"w{window}", max_trials=3, request_rate=rate,
                    extra_args=["--max-threads", str(args.concurrency)] if rate else (),
                )  # fmt: skip
                rss = {pid: round(rss_mib(pid), 1) for pid in pids()}
                rows.append({"window": window, "t_s": round(args.minutes * 60 - (end - time.monotonic())),
                             "infer_s": r["throughput_infer_s"], "p99_ms": r["p99_ms"], "status": r["status"],
                             "rss_mib": rss})  # fmt: skip
                speed = f"{r['throughput_infer_s']} infer/s, p99 {r['p99_ms']} ms"
                print(f"window {window}: {speed}, RSS MiB {rss}", flush=True)
                window += 1
            failed = _failed(gateway.metrics_port) - failed_before if args.server == "gateway" else 0.0
        finally:
            stop()
    keys = ("window", "t_s", "infer_s", "p99_ms", "rss_mib")
    head = ["window", "t (s)", "infer/s", "p99 ms", "RSS MiB (per process)"]
    print("\n" + table(head, ([r[k] for k in keys] for r in rows)))
    growth, p99_growth = 0.0, 1.0
    if len(rows) >= 3:
        first, last = rows[1]["rss_mib"], rows[-1]["rss_mib"]  # window 0 is warm-up
        growth = max(last.get(pid, 0) - first.get(pid, 0) for pid in first)
        p99_growth = (rows[-1]["p99_ms"] or 0) / (rows[1]["p99_ms"] or 1)
        last_window = rows[-1]["window"]
        print(f"\nRSS growth, window 1 to {last_window}: {growth:+.1f} MiB (limit {args.max_growth_mib})")
        print(f"p99, window {last_window} / window 1: {p99_growth:.2f}x (limit {args.max_p99_growth})")
    print(f"requests the gateway failed over the run: {failed:.0f}")
    write_results(args.out, {"args": vars(args) | {"out": str(args.out)}, "rows": rows, "failed": failed})
    _plot(rows, args.out.with_suffix(".png"))
    return 1 if growth > args.max_growth_mib or p99_growth > args.max_p99_growth or failed else 0


def _failed(metrics_port: int) -> float:
    """Requests answered with any status but OK, so far (the gateway's /metrics)."""
    text = scrape(metrics_port)
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("modelgate_requests_total{") and 'code="OK"' not in line
    )


def _plot(rows: list[dict[str, Any]], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    t = [r["t_s"] for r in rows]
    fig, axes = plt.subplots(3, 1, figsize=(9, 7), sharex=True)
    axes[0].plot(t, [r["infer_s"] or 0 for r in rows], label="infer/s")
    axes[1].plot(t, [r["p99_ms"] or 0 for r in rows], color="gray", label="p99 ms")
    axes[2].plot(
        t, [sum(r["rss_mib"].values()) for r in rows], color="green", label="RSS MiB (all processes)"
    )
    for ax in axes:
        ax.legend(loc="lower left")
    axes[2].set_xlabel("seconds")
    fig.tight_layout()
    fig.savefig(path, dpi=90)


if __name__ == "__main__":
    sys.exit(main())
