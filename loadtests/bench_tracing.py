"""What tracing costs: the gateway with tracing off, then on at 0%, 1% and 100% sampling, side by
side in one run (loadtests/bench_gateway.py's A/B of --variant gateways).

    python loadtests/bench_tracing.py [--concurrency 64] [--measurement-ms 4000] [--repeats 3]
                                      [--batching auto] [--exporter otlp|none]
                                      [--ratios 0,0.01,1]

Spans go over OTLP/gRPC to a real receiver in this process (harness/otlp.py), so the 100% row
pays for export too: spans serialized and sent by the gateway's export thread. `--exporter none`
makes the spans and drops them (the SDK's cost alone). Requests carry no `traceparent`, so the
sampling ratio decides for every one. The table's "× first gateway" column is each variant's
throughput over tracing off's; the receiver's span count is printed after it.
"""

from __future__ import annotations

import argparse
import json
import sys

import bench_gateway  # the A/B runner this scenario drives (loadtests/ is the script's directory)

from harness.bench import RESULTS, floats
from harness.otlp import OtlpReceiver


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", default="64")
    parser.add_argument("--measurement-ms", default="4000")
    parser.add_argument("--repeats", default="3")
    parser.add_argument("--batching", default="auto")
    parser.add_argument("--exporter", default="otlp", choices=("otlp", "none"))
    parser.add_argument("--ratios", default="0,0.01,1", type=floats)
    args = parser.parse_args()
    with OtlpReceiver() as receiver:

        def tracing(ratio: float) -> str:
            on: dict[str, object] = {"enabled": True, "exporter": args.exporter, "sampler_ratio": ratio}
            if args.exporter == "otlp":
                on["endpoint"] = receiver.endpoint
            return json.dumps({"telemetry": {"tracing": on}})

        code = bench_gateway.main([
            "--skip-bare",
            "--concurrency", args.concurrency,
            "--measurement-ms", args.measurement_ms,
            "--repeats", args.repeats,
            "--batching", args.batching,
            *[a for r in args.ratios for a in ("--variant", f"tracing {r:.0%}={tracing(r)}")],
            "--out", str(RESULTS / "bench_tracing.json"),
        ])  # fmt: skip
        print(f"\nspans received by the OTLP receiver: {len(receiver.spans())}")
    return code


if __name__ == "__main__":
    sys.exit(main())
