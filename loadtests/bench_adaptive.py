"""SLO-adaptive batching against the best static setting, same load, one run.

    python loadtests/bench_adaptive.py [--target-ms 60] [--concurrency 32] [--measurement-ms 4000]
                                       [--repeats 3]

The wide model (64 -> 2048 -> 2048 -> 2048 -> 8, memory-bound at batch 1, where batching pays)
is served by the gateway under perf_analyzer at one concurrency with a grid of static settings
(max_batch_size x max_queue_delay_us), then with `target_p99_ms` and nothing else. The best
static setting is the fastest whose p99 meets the target; the adaptive run should meet the
target too, within 10% of that throughput. Each round runs every setting once; with --repeats
the rounds interleave and each setting reports its median throughput and p99 (picking the best
of several noisy single runs would flatter the static side). Results also go to
loadtests/results/bench_adaptive.json.
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

from perf_analyzer import run_perf_analyzer  # noqa: E402

from gateway.examples import mlp, write_config, write_version  # noqa: E402
from tests.peers.gateway import GatewayProcess  # noqa: E402

WIDE = (64, 2048, 2048, 2048, 8)


def run(
    repo: Path, tmp: Path, batching: dict[str, Any], args: argparse.Namespace, label: str
) -> dict[str, Any]:
    config = tmp / f"{label}.json"
    config.write_text(json.dumps({"batching": {"mode": "on", **batching}}))
    gateway = GatewayProcess(repo, "--config", str(config)).wait_ready()
    try:
        [row] = run_perf_analyzer(
            gateway.url, "wide", ["x:64"], [args.concurrency], measurement_ms=args.measurement_ms, label=label
        )
    finally:
        gateway.terminate()
    row["settings"] = batching
    print(f"{label}: {row['throughput_infer_s']} infer/s, p99 {row['p99_ms']} ms", flush=True)
    return row


def median_row(label: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    good = [r for r in runs if r["status"] != "failed" and r["p99_ms"] is not None]
    if not good:
        return {**runs[0], "label": label}
    return {
        "label": label,
        "status": "ok",
        "settings": runs[0]["settings"],
        "runs": len(good),
        **{
            key: round(statistics.median(r[key] for r in good), 2)
            for key in ("throughput_infer_s", "p50_ms", "p99_ms")
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target-ms", type=float, default=60.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--measurement-ms", type=int, default=4000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sizes", default="4,16,64", type=lambda s: [int(v) for v in s.split(",")])
    parser.add_argument("--delays-us", default="0,2000", type=lambda s: [int(v) for v in s.split(",")])
    parser.add_argument("--out", type=Path, default=ROOT / "loadtests" / "results" / "bench_adaptive.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        repo = tmp / "models"
        write_config(repo, "wide", "max_batch_size: 64\n")
        write_version(repo, "wide", 1, mlp(WIDE, seed=3))
        settings = {
            f"static b{size} d{delay}": {"max_batch_size": size, "max_queue_delay_us": delay}
            for size in args.sizes
            for delay in args.delays_us
        }
        settings[f"adaptive {args.target_ms:g} ms"] = {"target_p99_ms": args.target_ms}
        runs: dict[str, list[dict[str, Any]]] = {label: [] for label in settings}
        for _ in range(args.repeats):
            for label, batching in settings.items():
                runs[label].append(run(repo, tmp, batching, args, label))
        rows = [median_row(label, rs) for label, rs in runs.items()]
        static, adaptive = rows[:-1], rows[-1]

    def ok(r: dict[str, Any]) -> bool:
        return r["status"] != "failed" and r["p99_ms"] is not None

    meeting = [r for r in static if ok(r) and r["p99_ms"] <= args.target_ms]
    print(
        f"\nwide model, c={args.concurrency}, target p99 {args.target_ms:g} ms, "
        f"medians of {args.repeats} interleaved rounds\n"
    )
    print("| setting | infer/s | p50 ms | p99 ms | meets target |\n|---|---|---|---|---|")
    for r in [*static, adaptive]:
        meets = "yes" if ok(r) and r["p99_ms"] <= args.target_ms else "no"
        print(f"| {r['label']} | {r['throughput_infer_s']} | {r['p50_ms']} | {r['p99_ms']} | {meets} |")
    if meeting and ok(adaptive):
        best = max(meeting, key=lambda r: r["throughput_infer_s"])
        ratio = adaptive["throughput_infer_s"] / best["throughput_infer_s"]
        print(f"\nbest static meeting the target: {best['label']} ({best['throughput_infer_s']} infer/s)")
        print(f"adaptive / best static: {ratio:.2f}× (target ≥ 0.90); adaptive p99 {adaptive['p99_ms']} ms")
    else:
        print("\nno static setting met the target at this load: raise --target-ms or lower --concurrency")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps({"static": static, "adaptive": adaptive, "target_ms": args.target_ms}, indent=2)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
