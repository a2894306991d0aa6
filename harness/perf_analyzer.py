"""Run NVIDIA's perf_analyzer against a KServe-v2 gRPC endpoint, one concurrency at a time.

Prints a markdown table (throughput in infer/s, latency percentiles in ms) and writes the same rows
to ``--out`` (``.json`` -> JSON list, anything else -> CSV).

    python -m harness.perf_analyzer --url 127.0.0.1:8001 --model mlp --shape x:32 \
        --concurrency 1,8,32,64 --measurement-ms 3000 [--streaming] [--label NAME] \
        [--out loadtests/results/pa.csv]

Needs the perf_analyzer binary of tritonclient==2.41.0 (next to ``sys.executable`` by default)
and its libraries: run ``harness/setup_perf_tools.sh <venv>`` once. LD_LIBRARY_PATH is set for
the child from the installed ``nvidia-cuda-runtime-cu12`` package (``nvidia/cuda_runtime/lib``).

Other scripts: ``from harness.perf_analyzer import run_perf_analyzer``.

perf_analyzer's own CSV (``-f``) has one row per concurrency, latencies in microseconds:
``Concurrency,Inferences/Second,Client Send,Network+Server Send/Recv,Server Queue,
Server Compute Input,Server Compute Infer,Server Compute Output,Client Recv,
p50 latency,p90 latency,p95 latency,p99 latency``. "Inferences/Second" counts rows: with ``-b 8``
it is 8 x requests/s (the ``requests_s`` column divides it back).
"""

from __future__ import annotations

import argparse
import csv
import glob
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

# perf_analyzer exits 2 and writes no CSV when its windows never agree within -s percent. On
# these noisy 2-core machines the default -s 10 fails often, so we start looser and, on that
# failure, retry once accepting anything (the row is then marked "unstable").
DEFAULT_STABILITY_PCT = 50.0
UNSTABLE_RETRY_PCT = 1000.0
DEFAULT_MAX_TRIALS = 5

FIELDS = [
    "label",
    "model",
    "mode",
    "batch_size",
    "concurrency",
    "status",
    "throughput_infer_s",
    "requests_s",
    "avg_ms",
    "p50_ms",
    "p90_ms",
    "p95_ms",
    "p99_ms",
    "client_send_ms",
    "network_server_ms",
    "client_recv_ms",
    "server_queue_ms",
    "server_compute_ms",
    "request_count",
    "wall_s",
    "error",
]

# perf_analyzer CSV header -> our column (µs values are converted to ms)
_US_COLUMNS = {
    "p50 latency": "p50_ms",
    "p90 latency": "p90_ms",
    "p95 latency": "p95_ms",
    "p99 latency": "p99_ms",
    "Client Send": "client_send_ms",
    "Network+Server Send/Recv": "network_server_ms",
    "Client Recv": "client_recv_ms",
    "Server Queue": "server_queue_ms",
}
_SERVER_COMPUTE = ("Server Compute Input", "Server Compute Infer", "Server Compute Output")
_AVG_RE = re.compile(r"Avg latency:\s*([0-9.]+)\s*usec")
_COUNT_RE = re.compile(r"Request count:\s*([0-9]+)")


# --------------------------------------------------------------------------------------------
# environment
# --------------------------------------------------------------------------------------------
def default_perf_analyzer() -> str:
    """The perf_analyzer next to this interpreter (a venv's bin/), else the one on PATH."""
    cand = Path(sys.executable).parent / "perf_analyzer"  # no resolve(): keep the venv's bin
    if cand.is_file() and os.access(cand, os.X_OK):
        return str(cand)
    return shutil.which("perf_analyzer") or str(cand)


def _has_cudart(d: Path) -> bool:
    return d.is_dir() and any(p.name.startswith("libcudart.so.12") for p in d.iterdir())


def find_cuda_runtime_lib(perf_analyzer: str | None = None) -> str | None:
    """Directory holding libcudart.so.12 from the ``nvidia-cuda-runtime-cu12`` wheel.

    Looks in this interpreter's ``nvidia`` package first, then in the site-packages of the venv
    that holds the perf_analyzer binary.
    """
    spec = importlib.util.find_spec("nvidia")
    if spec is not None and spec.submodule_search_locations:
        for base in spec.submodule_search_locations:
            d = Path(base) / "cuda_runtime" / "lib"
            if _has_cudart(d):
                return str(d)
    if perf_analyzer:
        venv = Path(perf_analyzer).parent.parent
        for site in glob.glob(str(venv / "lib" / "python3*" / "site-packages")):
            d = Path(site) / "nvidia" / "cuda_runtime" / "lib"
            if _has_cudart(d):
                return str(d)
    return None


def perf_analyzer_env(perf_analyzer: str, base: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    lib = find_cuda_runtime_lib(perf_analyzer)
    if lib:
        old = env.get("LD_LIBRARY_PATH", "")
        env["LD_LIBRARY_PATH"] = lib + (":" + old if old else "")
    return env


# --------------------------------------------------------------------------------------------
# one run
# --------------------------------------------------------------------------------------------
def _tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def parse_perf_analyzer_csv(path: str | os.PathLike[str], concurrency: int) -> dict[str, Any]:
    """Read perf_analyzer's ``-f`` CSV; return our fields for the row of ``concurrency``."""
    with open(path, newline="") as fh:
        rows = [{(k or "").strip(): (v or "").strip() for k, v in r.items()} for r in csv.DictReader(fh)]
    rows = [r for r in rows if r.get("Concurrency") or r.get("Request Rate")]  # request-rate mode
    if not rows:
        raise ValueError(f"no data rows in {path}")
    row = next((r for r in rows if r.get("Concurrency") == str(concurrency)), rows[-1])
    if "Inferences/Second" not in row or "p99 latency" not in row:
        raise ValueError(f"unexpected perf_analyzer CSV header: {sorted(row)}")
    out: dict[str, Any] = {"throughput_infer_s": float(row["Inferences/Second"])}
    for src, dst in _US_COLUMNS.items():
        if row.get(src):
            out[dst] = float(row[src]) / 1000.0
    if all(row.get(c) for c in _SERVER_COMPUTE):
        out["server_compute_ms"] = sum(float(row[c]) for c in _SERVER_COMPUTE) / 1000.0
    return out


def _run_one(cmd: list[str], env: dict[str, str], timeout_s: float) -> tuple[int | None, str, float]:
    """Run perf_analyzer; return (returncode or None on timeout, stdout+stderr, wall seconds)."""
    t0 = time.monotonic()
    try:
        # own session: on timeout we kill exactly this child (by pid), nothing else
        proc = subprocess.Popen(
            cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
        )
    except OSError as exc:
        return -1, f"could not start {cmd[0]}: {exc}", 0.0
    try:
        out, err = proc.communicate(timeout=timeout_s)
        rc: int | None = proc.returncode
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        rc = None
        err = (err or "") + f"\nperf_analyzer timed out after {timeout_s:.0f}s (killed)"
    return rc, (out or "") + ("\n" if out and err else "") + (err or ""), time.monotonic() - t0


def infer_stats(url: str, model: str) -> tuple[int, int] | None:
    """(inference_count, execution_count) summed over the model's versions, via ModelStatistics."""
    try:
        import tritonclient.grpc as tgrpc

        client = tgrpc.InferenceServerClient(url)
        try:
            stats = client.get_inference_statistics(model_name=model, as_json=True, client_timeout=5)
        finally:
            client.close()
    except Exception as exc:  # statistics are a nice-to-have; never fail the run for them
        print(f"ModelStatistics on {url} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return None
    rows = sum(int(s.get("inference_count", 0)) for s in stats.get("model_stats", []))
    execs = sum(int(s.get("execution_count", 0)) for s in stats.get("model_stats", []))
    return rows, execs


def run_perf_analyzer(
    url: str,
    model: str,
    shapes: Sequence[str] = (),
    concurrencies: Iterable[int] = (1, 8, 32, 64),
    *,
    measurement_ms: int = 3000,
    streaming: bool = False,
    batch_size: int = 1,
    perf_analyzer: str | None = None,
    label: str = "perf",
    max_trials: int = DEFAULT_MAX_TRIALS,
    stability_pct: float = DEFAULT_STABILITY_PCT,
    retry_unstable: bool = True,
    async_mode: bool = False,
    extra_args: Sequence[str] = (),
    timeout_s: float | None = None,
    verbose: bool = False,
    log: Callable[[str], None] | None = None,
    request_rate: float | None = None,
) -> list[dict[str, Any]]:
    """Run perf_analyzer once per concurrency (``--concurrency-range C:C``); one dict per run.
    With ``request_rate``, each run sends that many requests/s instead
    (``--request-rate-range R:R``, concurrency as it needs).

    Every dict has the keys of :data:`FIELDS`; ``status`` is ``ok``, ``unstable`` (perf_analyzer
    could not get ``stability_pct`` agreement and the numbers come from a retry that accepts any
    spread) or ``failed`` (numbers are None, ``error`` holds the tail of perf_analyzer's output).
    Never raises for a perf_analyzer failure.
    """
    if log is None:

        def log(msg: str) -> None:
            print(msg, file=sys.stderr, flush=True)

    pa = perf_analyzer or default_perf_analyzer()
    env = perf_analyzer_env(pa)
    if find_cuda_runtime_lib(pa) is None:
        log(
            "perf_analyzer.py: warning: libcudart.so.12 (nvidia-cuda-runtime-cu12) not found; "
            "run harness/setup_perf_tools.sh <venv>"
        )
    mode = "streaming" if streaming else ("async" if async_mode else "unary")
    if timeout_s is None:
        # each trial is one window (perf_analyzer may stretch a window); plus start-up slack
        timeout_s = max_trials * measurement_ms / 1000.0 * 2 + 60.0

    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="perf_analyzer_") as tmp:
        for conc in concurrencies:
            conc = int(conc)
            row: dict[str, Any] = {k: None for k in FIELDS}
            row.update(
                label=label,
                model=model,
                mode=mode,
                batch_size=batch_size,
                concurrency=conc,
                status="failed",
                error="",
            )
            attempts = [stability_pct] + ([UNSTABLE_RETRY_PCT] if retry_unstable else [])
            wall = 0.0
            for i, spct in enumerate(attempts):
                csv_path = os.path.join(tmp, f"c{conc}_{i}.csv")
                cmd = [
                    pa,
                    "-m",
                    model,
                    "-u",
                    url,
                    "-i",
                    "grpc",
                    *(
                        ["--request-rate-range", f"{request_rate:g}:{request_rate:g}"]
                        if request_rate
                        else ["--concurrency-range", f"{conc}:{conc}"]
                    ),
                    "--measurement-interval",
                    str(int(measurement_ms)),
                    "--max-trials",
                    str(int(max_trials)),
                    "--stability-percentage",
                    f"{spct:g}",
                    "-b",
                    str(int(batch_size)),
                    "-f",
                    csv_path,
                ]
                for s in shapes:
                    cmd += ["--shape", s]
                if streaming:
                    cmd.append("--streaming")
                elif async_mode:
                    cmd.append("--async")
                cmd += list(extra_args)
                log(f"perf_analyzer.py: [{label}] {mode} c={conc}: {' '.join(cmd)}")
                rc, output, dt = _run_one(cmd, env, timeout_s)
                wall += dt
                if verbose:
                    log(output)
                if rc == 0 and os.path.exists(csv_path):
                    try:
                        row.update(parse_perf_analyzer_csv(csv_path, conc))
                    except (ValueError, KeyError, OSError) as exc:
                        row["error"] = f"could not parse perf_analyzer CSV: {exc}"
                        log(f"perf_analyzer.py: {row['error']}\n{_tail(output)}")
                        break
                    # perf_analyzer counts inferences (rows): with -b B a request carries B
                    row["requests_s"] = row["throughput_infer_s"] / max(int(batch_size), 1)
                    row["status"] = "ok" if i == 0 else "unstable"
                    row["error"] = ""
                    m = _AVG_RE.search(output)
                    if m:
                        row["avg_ms"] = float(m.group(1)) / 1000.0
                    m = _COUNT_RE.search(output)
                    if m:
                        row["request_count"] = int(m.group(1))
                    break
                why = "timed out" if rc is None else f"exit code {rc}"
                row["error"] = f"{why}: {_tail(output, 6)}"
                unstable = rc is not None and "stable measurement" in output
                log(
                    f"perf_analyzer.py: perf_analyzer failed ({why}) at c={conc}; "
                    f"last lines of its output:\n{_tail(output)}"
                )
                if not unstable:
                    break  # a real failure: retrying with a looser -s would not help
                if i + 1 < len(attempts):
                    log(
                        f"perf_analyzer.py: unstable at -s {spct:g}; retrying once with "
                        f"-s {attempts[i + 1]:g} (row will be marked 'unstable')"
                    )
            row["wall_s"] = round(wall, 2)
            rows.append(row)
    return rows


# --------------------------------------------------------------------------------------------
# output
# --------------------------------------------------------------------------------------------
def _fmt(v: Any, digits: int) -> str:
    if v is None or v == "":
        return "—"
    if isinstance(v, float):
        return f"{v:,.{digits}f}"
    return str(v)


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    head = [
        "label",
        "mode",
        "batch",
        "concurrency",
        "throughput (infer/s)",
        "p50 (ms)",
        "p90 (ms)",
        "p99 (ms)",
        "status",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [
            _fmt(r.get("label"), 0),
            _fmt(r.get("mode"), 0),
            _fmt(r.get("batch_size"), 0),
            _fmt(r.get("concurrency"), 0),
            _fmt(r.get("throughput_infer_s"), 1),
            _fmt(r.get("p50_ms"), 2),
            _fmt(r.get("p90_ms"), 2),
            _fmt(r.get("p99_ms"), 2),
            _fmt(r.get("status"), 0),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def read_rows(path: str) -> list[dict[str, Any]]:
    if path.endswith(".json"):
        with open(path) as fh:
            data = json.load(fh)
        return list(data)
    with open(path, newline="") as fh:
        return [dict(r) for r in csv.DictReader(fh)]


def write_rows(path: str, rows: Sequence[dict[str, Any]], append: bool = False) -> None:
    """Write rows as JSON (``.json``) or CSV; with ``append``, keep rows already in the file."""
    old: list[dict[str, Any]] = read_rows(path) if append and os.path.exists(path) else []
    all_rows = old + list(rows)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    if path.endswith(".json"):
        with open(path, "w") as fh:
            json.dump(all_rows, fh, indent=2)
            fh.write("\n")
        return
    fields = list(FIELDS)
    for r in all_rows:
        fields += [k for k in r if k not in fields]
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        for r in all_rows:
            w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in fields})


def _concurrency_list(text: str) -> list[int]:
    vals = [int(x) for x in text.replace(" ", "").split(",") if x]
    if not vals or any(v < 1 for v in vals):
        raise argparse.ArgumentTypeError("expected a comma-separated list of integers >= 1")
    return vals


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description="Run perf_analyzer per concurrency against a KServe-v2 gRPC server and "
        "tabulate throughput and p50/p90/p99 latency."
    )
    ap.add_argument("--url", default="127.0.0.1:8001", help="gRPC host:port")
    ap.add_argument("--model", default="mlp")
    ap.add_argument(
        "--shape",
        action="append",
        default=[],
        metavar="NAME:DIMS",
        help="passed to perf_analyzer --shape (repeatable), e.g. x:32",
    )
    ap.add_argument(
        "--concurrency",
        type=_concurrency_list,
        default=[1, 8, 32, 64],
        help="comma-separated, e.g. 1,8,32,64",
    )
    ap.add_argument(
        "--measurement-ms",
        type=int,
        default=3000,
        help="perf_analyzer --measurement-interval (ms per window)",
    )
    ap.add_argument(
        "--max-trials",
        type=int,
        default=DEFAULT_MAX_TRIALS,
        help="perf_analyzer --max-trials: windows before it gives up on stability",
    )
    ap.add_argument(
        "--stability-pct",
        type=float,
        default=DEFAULT_STABILITY_PCT,
        help="perf_analyzer --stability-percentage (its default, 10, rarely holds "
        "on a shared 2-core machine)",
    )
    ap.add_argument(
        "--no-unstable-retry",
        action="store_true",
        help="record an unstable measurement as failed instead of retrying once "
        f"with -s {UNSTABLE_RETRY_PCT:g}",
    )
    ap.add_argument("--streaming", action="store_true", help="use ModelStreamInfer")
    ap.add_argument(
        "--async",
        dest="async_mode",
        action="store_true",
        help="unary with perf_analyzer --async (default: its sync mode, one thread per concurrent request)",
    )
    ap.add_argument("--batch-size", type=int, default=1, help="perf_analyzer -b")
    ap.add_argument(
        "--perf-analyzer",
        default=None,
        help="path of the binary (default: perf_analyzer next to sys.executable)",
    )
    ap.add_argument("--label", default="perf", help="value of the label column")
    ap.add_argument(
        "--pa-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra argument passed to perf_analyzer as is (repeatable), e.g. --pa-arg=--input-data=random",
    )
    ap.add_argument(
        "--timeout-s",
        type=float,
        default=None,
        help="kill one perf_analyzer run after this long (default: 2 x max-trials x window + 60 s)",
    )
    ap.add_argument("--out", default=None, help="write rows here: .json -> JSON, else CSV")
    ap.add_argument("--append", action="store_true", help="add to the rows already in --out")
    ap.add_argument("-v", "--verbose", action="store_true", help="echo perf_analyzer's output")
    args = ap.parse_args(argv)

    pa = args.perf_analyzer or default_perf_analyzer()
    if not (os.path.isfile(pa) and os.access(pa, os.X_OK)):
        print(f"perf_analyzer.py: no executable perf_analyzer at {pa}", file=sys.stderr)
        return 2
    rows = run_perf_analyzer(
        args.url,
        args.model,
        args.shape,
        args.concurrency,
        measurement_ms=args.measurement_ms,
        streaming=args.streaming,
        batch_size=args.batch_size,
        perf_analyzer=pa,
        label=args.label,
        max_trials=args.max_trials,
        stability_pct=args.stability_pct,
        retry_unstable=not args.no_unstable_retry,
        async_mode=args.async_mode,
        extra_args=args.pa_arg,
        timeout_s=args.timeout_s,
        verbose=args.verbose,
    )
    print(markdown_table(rows), flush=True)
    if args.out:
        write_rows(args.out, rows, append=args.append)
        print(f"perf_analyzer.py: wrote {len(rows)} rows to {args.out}", file=sys.stderr)
    return 0 if all(r["status"] != "failed" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
