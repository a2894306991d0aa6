"""The gateway against the transport's ceiling, side by side in one run.

    python loadtests/bench_gateway.py [--concurrency 1,8,32,64] [--measurement-ms 3000]
                                      [--repeats 1] [--streaming] [--workers 1]
                                      [--batching auto[,off,on]] [--settings JSON]
                                      [--variant NAME=JSON ...] [--header KEY:VALUE]
                                      [--skip-bare]

Starts, one after the other on free loopback ports: (d) the bare grpc.aio server that answers
ModelInfer with a precomputed response (loadtests/bare_server.py), and the gateway serving the
example repository's `mlp` (32 -> 256 -> 256 -> 8, 1-row requests), once per --batching mode
(`auto`: as the example's config.pbtxt says, i.e. on with a 500 µs delay). perf_analyzer drives
them all with the same settings; the table gives throughput and latency per concurrency and the
ratio to bare. --settings passes gateway settings (a JSON object, written to a --config file),
e.g. '{"models": {"mlp": {"batching": {"max_queue_delay_us": 8000}}}}'. Each --variant adds a
gateway with those settings merged over --settings (an A/B in one run: the ratio column is then
also given against the first gateway), e.g. routing's cost:
    --variant 'split={"models": {"mlp": {"traffic": {"1": 90, "2": 10}, "sticky": {"key": "x-user-id"}}}}'
    --header x-user-id:user-42
Rounds are interleaved: every server once, then again, --repeats times; medians over them. For
each gateway also its CPU per request: the process group's CPU over a perf_analyzer run divided
by the requests its ModelStatistics counted (warm-up trials included): steadier than req/s on a
shared machine.
--header passes a gRPC metadata entry with every request (perf_analyzer -H).
Results also go to loadtests/results/bench_gateway.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "loadtests")]

from bare_server import start_bare_server_subprocess, stop_bare_server  # noqa: E402
from perf_analyzer import infer_stats, run_perf_analyzer  # noqa: E402
from procfs import group_cpu_s  # noqa: E402

from gateway.examples import example_repository  # noqa: E402
from tests.peers.gateway import GatewayProcess  # noqa: E402

BARE = "bare grpc.aio (d)"


def _median_rows(runs: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    out = []
    for rows in zip(*runs, strict=True):
        ok = [r for r in rows if r["status"] != "failed"]
        merged = dict(rows[0])
        for key in ("throughput_infer_s", "p50_ms", "p99_ms", "cpu_us_per_request"):
            values = [r[key] for r in ok if r.get(key) is not None]
            merged[key] = statistics.median(values) if values else None
        merged["status"] = "ok" if ok else "failed"
        out.append(merged)
    return out


def measure(label: str, url: str, args: argparse.Namespace, pgid: int | None = None) -> list[dict[str, Any]]:
    """perf_analyzer at each concurrency; with the server's process group, also its CPU per
    request (the whole run's CPU over the requests its ModelStatistics counted)."""
    rows = []
    for c in args.concurrency:
        before, cpu0 = infer_stats(url, "mlp") if pgid else None, group_cpu_s(pgid) if pgid else 0.0
        row = run_perf_analyzer(
            url,
            "mlp",
            ["x:32"],
            [c],
            measurement_ms=args.measurement_ms,
            streaming=args.streaming,
            label=label,
            extra_args=[a for h in args.header for a in ("-H", h)],
        )[0]
        after = infer_stats(url, "mlp") if pgid else None
        row["cpu_us_per_request"] = (
            (group_cpu_s(pgid) - cpu0) / (after[0] - before[0]) * 1e6  # type: ignore[operator]
            if before and after and after[0] > before[0]
            else None
        )
        rows.append(row)
    return rows


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        out[key] = (
            _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
        )
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", default="1,8,32,64",
                        type=lambda s: [int(c) for c in s.split(",")])  # fmt: skip
    parser.add_argument("--measurement-ms", type=int, default=3000)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--streaming", action="store_true")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--batching", default="auto", type=lambda s: s.split(","))
    parser.add_argument("--settings", default="{}", type=json.loads)
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        type=lambda s: (s.split("=", 1)[0], json.loads(s.split("=", 1)[1])),
    )
    parser.add_argument("--header", action="append", default=[])
    parser.add_argument("--skip-bare", action="store_true")
    parser.add_argument("--out", type=Path, default=ROOT / "loadtests" / "results" / "bench_gateway.json")
    args = parser.parse_args()

    runs: dict[str, list[list[dict[str, Any]]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        repo = example_repository(Path(tmp) / "models")
        gateways = []
        for name, settings in [("", {}), *args.variant]:
            config = Path(tmp) / f"gateway-{len(gateways)}.json"  # JSON is YAML
            config.write_text(json.dumps(_merge(args.settings, settings)))
            for batching in args.batching:
                label = "gateway" if batching == "auto" else f"gateway, batching {batching}"
                label += f", {name}" if name else ""
                gateways.append((label, config, batching))
        for _ in range(args.repeats):
            if not args.skip_bare:
                proc, port = start_bare_server_subprocess()
                try:
                    runs.setdefault(BARE, []).append(measure("bare", f"127.0.0.1:{port}", args))
                finally:
                    stop_bare_server(proc)
            for label, config, batching in gateways:
                gateway = GatewayProcess(
                    repo, "--workers", str(args.workers), "--batching", batching, "--config", str(config)
                ).wait_ready(lines=args.workers)
                try:
                    runs.setdefault(label, []).append(measure(label, gateway.url, args, gateway.proc.pid))
                finally:
                    gateway.terminate()
    results = {label: _median_rows(r) for label, r in runs.items()}

    mode = "streaming" if args.streaming else "unary"
    print(f"\nmlp, 1-row {mode} requests, perf_analyzer, medians of {args.repeats} interleaved run(s)\n")
    print("| server | concurrency | infer/s | p50 ms | p99 ms | × bare | × first gateway | CPU µs/request |")
    print("|---|---|---|---|---|---|---|---|")
    first = next(label for label in results if label != BARE)

    def ratio(r: dict[str, Any], against: str) -> str:
        if against not in results:
            return "—"
        base = {row["concurrency"]: row for row in results[against]}[r["concurrency"]]["throughput_infer_s"]
        return f"{r['throughput_infer_s'] / base:.3f}" if r["throughput_infer_s"] and base else "—"

    for name, rows in results.items():
        for r in rows:
            cells = [
                f"{r[k]:,.1f}" if r[k] is not None else "—"
                for k in ("throughput_infer_s", "p50_ms", "p99_ms")
            ]
            cpu = r.get("cpu_us_per_request")
            cells += [ratio(r, BARE), ratio(r, first), f"{cpu:.1f}" if cpu else "—"]
            print(f"| {name} | {r['concurrency']} | {' | '.join(cells)} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
