"""The gateway against the transport's ceiling, side by side in one run.

    python loadtests/bench_gateway.py [--concurrency 1,8,32,64] [--measurement-ms 3000]
                                      [--repeats 1] [--streaming] [--workers 1]
                                      [--batching auto[,off,on]] [--settings JSON]
                                      [--variant NAME=JSON ...] [--header KEY:VALUE]
                                      [--skip-bare]

Starts, one after the other on free loopback ports: (d) the bare grpc.aio server that answers
ModelInfer with a precomputed response (harness/bare_server.py), and the gateway serving the
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
import sys
import tempfile
from pathlib import Path
from typing import Any

from gateway.examples import example_repository
from harness.bare_server import BareServer
from harness.bench import RESULTS, cell, ints, perf_rows, table, write_results
from harness.gateway import GatewayProcess
from harness.stats import median_rows, ratio

BARE = "bare grpc.aio (d)"
KEYS = ("throughput_infer_s", "p50_ms", "p99_ms", "cpu_us_per_request")


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        out[key] = (
            _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
        )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", default="1,8,32,64", type=ints)
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
    parser.add_argument("--out", type=Path, default=RESULTS / "bench_gateway.json")
    args = parser.parse_args(argv)
    pa = {
        "measurement_ms": args.measurement_ms,
        "streaming": args.streaming,
        "extra_args": [a for h in args.header for a in ("-H", h)],
    }

    def bare() -> list[dict[str, Any]]:
        with BareServer() as server:
            return perf_rows("bare", server.address, args.concurrency, **pa)

    def gateway(label: str, config: Path, batching: str) -> list[dict[str, Any]]:
        flags = ["--workers", str(args.workers), "--batching", batching, "--config", str(config)]
        with GatewayProcess(repo, *flags).wait_ready(lines=args.workers) as g:
            return perf_rows(label, g.url, args.concurrency, pgid=g.proc.pid, **pa)

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
                runs.setdefault(BARE, []).append(bare())
            for label, config, batching in gateways:
                runs.setdefault(label, []).append(gateway(label, config, batching))
    results = {label: median_rows(r, KEYS) for label, r in runs.items()}

    mode = "streaming" if args.streaming else "unary"
    print(f"\nmlp, 1-row {mode} requests, perf_analyzer, medians of {args.repeats} interleaved run(s)\n")
    first = next(label for label in results if label != BARE)

    def times(r: dict[str, Any], against: str) -> str:
        if against not in results:
            return "—"
        base = {row["concurrency"]: row for row in results[against]}[r["concurrency"]]
        return cell(ratio(r["throughput_infer_s"], base["throughput_infer_s"]) or None, ".3f")

    head = [
        "server",
        "concurrency",
        "infer/s",
        "p50 ms",
        "p99 ms",
        "× bare",
        "× first gateway",
        "CPU µs/request",
    ]
    print(table(head, (
        [name, r["concurrency"], *(cell(r[k]) for k in KEYS[:3]), times(r, BARE), times(r, first),
         cell(r.get("cpu_us_per_request") or None, ".1f")]
        for name, rows in results.items() for r in rows
    )))  # fmt: skip
    write_results(args.out, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
