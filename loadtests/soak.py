"""Memory and latency over a long run: is anything growing?

    python loadtests/soak.py [--minutes 5] [--concurrency 32] [--streaming] [--workers 1]
                             [--server gateway|bare]

Serves the example repository (batching on for `mlp`), drives it with perf_analyzer in
back-to-back windows for --minutes, and samples the resident memory (RSS) of every gateway
process after each window. Prints a table (window, infer/s, p99, RSS per process) and the RSS
change between the first window after warm-up and the last; exits 1 if it grew by more than
--max-growth-mib (default 20 MiB). Results also go to loadtests/results/soak.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "loadtests")]

from bare_server import start_bare_server_subprocess, stop_bare_server  # noqa: E402
from perf_analyzer import run_perf_analyzer  # noqa: E402
from procfs import children, rss_mib  # noqa: E402

from gateway.examples import example_repository  # noqa: E402
from tests.peers.gateway import GatewayProcess  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--window-ms", type=int, default=10_000)
    parser.add_argument("--streaming", action="store_true")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument(
        "--server", choices=("gateway", "bare"), default="gateway",
        help="bare: the same windows against loadtests/bare_server.py (is a drift the machine's?)",
    )  # fmt: skip
    parser.add_argument("--max-growth-mib", type=float, default=20.0)
    parser.add_argument("--out", type=Path, default=ROOT / "loadtests" / "results" / "soak.json")
    args = parser.parse_args()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        if args.server == "bare":
            bare, port = start_bare_server_subprocess()
            url, pids, stop = f"127.0.0.1:{port}", lambda: [bare.pid], lambda: stop_bare_server(bare)
        else:
            gateway = GatewayProcess(example_repository(Path(tmp)), "--workers", str(args.workers))
            gateway.wait_ready(lines=args.workers)
            url, pids = gateway.url, lambda: [gateway.proc.pid, *children(gateway.proc.pid)]
            stop = gateway.terminate
        try:
            end = time.monotonic() + args.minutes * 60
            window = 0
            while time.monotonic() < end:
                [r] = run_perf_analyzer(
                    url, "mlp", ["x:32"], [args.concurrency], measurement_ms=args.window_ms,
                    streaming=args.streaming, label=f"w{window}", max_trials=3,
                )  # fmt: skip
                rss = {pid: round(rss_mib(pid), 1) for pid in pids()}
                rows.append({"window": window, "t_s": round(args.minutes * 60 - (end - time.monotonic())),
                             "infer_s": r["throughput_infer_s"], "p99_ms": r["p99_ms"], "status": r["status"],
                             "rss_mib": rss})  # fmt: skip
                speed = f"{r['throughput_infer_s']} infer/s, p99 {r['p99_ms']} ms"
                print(f"window {window}: {speed}, RSS MiB {rss}", flush=True)
                window += 1
        finally:
            stop()
    print("\n| window | t (s) | infer/s | p99 ms | RSS MiB (per process) |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['window']} | {r['t_s']} | {r['infer_s']} | {r['p99_ms']} | {r['rss_mib']} |")
    growth = 0.0
    if len(rows) >= 3:
        first, last = rows[1]["rss_mib"], rows[-1]["rss_mib"]  # window 0 is warm-up
        growth = max(last.get(pid, 0) - first.get(pid, 0) for pid in first)
        last_window = rows[-1]["window"]
        print(f"\nRSS growth, window 1 to {last_window}: {growth:+.1f} MiB (limit {args.max_growth_mib})")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"args": vars(args) | {"out": str(args.out)}, "rows": rows}, indent=2))
    return 1 if growth > args.max_growth_mib else 0


if __name__ == "__main__":
    sys.exit(main())
