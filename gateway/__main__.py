"""The `modelgate` command.

    modelgate serve --model-repository ./models [--config gateway.yaml] [--host 127.0.0.1]
                    [--grpc-port 8001] [--metrics-port 8002] [--admin-port 8003] [--workers N] [--grace-s 10]
                    [--shutdown-delay-s 0] [--transport auto|native|grpcio]
                    [--model-control-mode explicit|none] [--batching auto|on|off] [--log-level info]
    modelgate admin [--address 127.0.0.1:8003] [--json] status|config|apply|traffic|... (gateway/admin_cli.py)
    modelgate profile build DATA --model NAME --version V -o profile.npz (gateway/drift/cli.py)
    modelgate profile save MODEL -o profile.npz
    modelgate drift report MODEL [--version V] [--json]
    modelgate cost report [MODEL] [--since DURATION] [--json] (gateway/cost_cli.py)
    modelgate example-repository DIR

Imports stay inside the commands: with --workers N the supervisor must fork before grpc or
prometheus_client is set up.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

__all__ = ["main"]


def _serve(args: argparse.Namespace) -> int:
    from .settings import ConfigSource, SettingsError

    overrides = {
        "model_repository": args.model_repository,
        "host": args.host,
        "grpc_port": args.grpc_port,
        "metrics_port": args.metrics_port,
        "admin_port": args.admin_port,
        "workers": args.workers,
        "grace_s": args.grace_s,
        "shutdown_delay_s": args.shutdown_delay_s,
        "transport": args.transport,
        "model_control_mode": args.model_control_mode,
        "log_level": args.log_level,
        "batching": {"mode": args.batching} if args.batching else None,
    }
    source = ConfigSource(args.config, {k: v for k, v in overrides.items() if v is not None})
    try:
        settings = source.load()
    except SettingsError as exc:
        print(f"modelgate: {exc}", file=sys.stderr)
        return 2
    from .drift import profile_problems
    from .routing import unknown_names

    if problems := unknown_names(settings) + profile_problems(settings):
        print(f"modelgate: invalid configuration: {'; '.join(problems)}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(process)d %(name)s: %(message)s",
    )
    from .supervisor import run

    return run(settings, source)


def _example_repository(args: argparse.Namespace) -> int:
    from .examples import example_repository

    example_repository(args.out)
    print(f"example model repository written to {args.out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="modelgate", description="Triton-compatible model serving gateway.")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="serve a model repository over gRPC (KServe v2 / Triton)")
    serve.add_argument(
        "--model-repository", type=Path, help="Triton-layout model repository (required here or in --config)"
    )
    serve.add_argument("--config", type=Path, help="YAML file with any of the settings (see README)")
    serve.add_argument("--host", help="address to bind (default 127.0.0.1; 0.0.0.0 for all interfaces)")
    serve.add_argument("--grpc-port", type=int, help="inference gRPC port (default 8001; 0: any free port)")
    serve.add_argument(
        "--metrics-port", type=int, help="Prometheus /metrics port (default 8002; 0: any free; -1: off)"
    )
    serve.add_argument(
        "--admin-port",
        type=int,
        help="admin API gRPC port, bound to admin_host (default 8003 on 127.0.0.1; 0: any free; -1: off)",
    )
    serve.add_argument("--workers", type=int, help="worker processes sharing the gRPC port (default 1)")
    serve.add_argument(
        "--shutdown-delay-s",
        type=float,
        help="on SIGTERM, seconds of serving while health says NOT_SERVING, before draining (default 0)",
    )
    serve.add_argument(
        "--transport",
        choices=("auto", "native", "grpcio"),
        help="gRPC server: native (pygrpc-native), grpcio (grpc.aio), auto (default: native if installed)",
    )
    serve.add_argument(
        "--grace-s", type=float, help="seconds in-flight calls get to finish on SIGTERM (default 10)"
    )
    serve.add_argument(
        "--model-control-mode",
        choices=("explicit", "none"),
        help="explicit (default): RepositoryModelLoad/Unload allowed; none: refused",
    )
    serve.add_argument(
        "--batching",
        choices=("auto", "on", "off"),
        help="dynamic batching: auto (default: as config.pbtxt/YAML say), on (every batched model), off",
    )
    serve.add_argument("--log-level", choices=("debug", "info", "warning", "error"))
    serve.set_defaults(func=_serve)

    from .admin_cli import add_admin_parser
    from .cost_cli import add_cost_parser
    from .drift.cli import add_drift_parsers

    add_admin_parser(commands)
    add_drift_parsers(commands)
    add_cost_parser(commands)

    example = commands.add_parser("example-repository", help="write the example model repository")
    example.add_argument("out", type=Path)
    example.set_defaults(func=_example_repository)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
