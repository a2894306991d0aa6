"""`modelgate cost report`: what each model version cost, from the running gateway.

modelgate cost report [MODEL] [--since DURATION] [--json] [--address 127.0.0.1:8003]
    per model and version: requests, rows, backend CPU / GPU / wall seconds, the gateway's own
    CPU (its share by requests), CPU seconds per 1,000 requests, and a price at the configured
    rates (`cost:` in the config)

It asks the admin API (GetCostReport) rather than reading /metrics: `--since` needs the sums of
some time ago, which only the long-running control plane keeps (a ring of them), and the prices
are the gateway's config.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from typing import Any

__all__ = ["add_cost_parser", "parse_duration"]

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> float:
    """'90s', '15m', '2h', '1d' or plain seconds, as seconds."""
    found = re.fullmatch(r"\s*(\d+(?:\.\d*)?)\s*([smhd]?)\s*", text)
    if found is None:
        raise argparse.ArgumentTypeError(f"'{text}' is not a duration (e.g. 90s, 15m, 2h, 1d)")
    return float(found[1]) * _UNITS[found[2] or "s"]


def _figure(value: float | None) -> str:
    """Four significant digits: the figures range from microdollars to core-hours."""
    return "-" if value is None else f"{value:.4g}"


def _report(args: argparse.Namespace) -> int:
    import grpc
    from google.protobuf import json_format

    from ._proto import admin_pb2 as pb
    from ._proto import admin_pb2_grpc
    from .admin_cli import _table

    with grpc.insecure_channel(args.address) as channel:
        try:
            report = admin_pb2_grpc.AdminServiceStub(channel).GetCostReport(
                pb.CostReportRequest(model=args.model or "", since_s=args.since), timeout=30
            )
        except grpc.RpcError as exc:
            print(f"modelgate cost: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return 1
    if args.json:
        out = json_format.MessageToDict(
            report, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
        )
        print(json.dumps(out, indent=2))
        return 0
    rates = [
        f"{label} ${getattr(report, field):g}"
        for field, label in (("cpu_core_hour_usd", "core-hour"), ("gpu_hour_usd", "GPU-hour"))
        if report.HasField(field)
    ]
    print(
        f"cost over the last {report.covered_s:.0f} s; "
        f"gateway overhead {report.overhead_cpu_seconds:.3f} CPU s; "
        + (f"rates: {', '.join(rates)}" if rates else "no rates configured (cost: in the config)")
    )
    rows: list[tuple[Any, ...]] = [
        (
            v.model, v.version, v.requests, v.rows,
            _figure(v.cpu_seconds) if v.cpu_measured else "remote", _figure(v.gpu_seconds),
            _figure(v.wall_seconds), _figure(v.overhead_cpu_seconds), _figure(v.cpu_seconds_per_1k),
            _figure(v.usd if v.HasField("usd") else None),
            _figure(v.usd_per_1k if v.HasField("usd_per_1k") else None),
        )
        for v in report.versions
        if v.requests  # the table shows what served; --json has every version
    ]  # fmt: skip
    header = ("MODEL", "VERSION", "REQUESTS", "ROWS", "CPU S", "GPU S", "WALL S", "OVERHEAD S",
              "CPU S/1K REQ", "USD", "USD/1K REQ")  # fmt: skip
    print(_table(rows, header) if rows else "no requests in the period")
    return 0


def add_cost_parser(commands: Any) -> None:
    cost = commands.add_parser("cost", help="what each model version costs (a running gateway)")
    sub = cost.add_subparsers(dest="cost_command", required=True)
    report = sub.add_parser("report", help="per model version: CPU, GPU and wall time, price")
    report.add_argument("model", nargs="?", help="one model (default: all)")
    report.add_argument(
        "--since",
        type=parse_duration,
        default=0.0,
        help="the period: 90s, 15m, 2h, 1d (default: since the gateway started; 6 hours are kept)",
    )
    report.add_argument("--json", action="store_true", help="the response message as JSON")
    report.add_argument(
        "--address",
        default=os.environ.get("MODELGATE_ADMIN", "127.0.0.1:8003"),
        help="the admin API (default $MODELGATE_ADMIN or 127.0.0.1:8003)",
    )
    report.set_defaults(func=_report)
