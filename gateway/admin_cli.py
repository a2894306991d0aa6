"""`modelgate admin ...`: the admin API (protos/admin.proto) from a shell.

    modelgate admin [--address 127.0.0.1:8003] [--json] COMMAND
        status                       versions (state, weight, role, requests, errors, p99) and rollouts
        config                       the config being served (YAML)
        apply FILE [--dry-run]       validate a whole config and serve its traffic; prints the diff
        traffic MODEL 1=90 2=10      set a model's weights
        load MODEL VERSION           load a version with no traffic (pins and shadows reach it)
        unload MODEL VERSION         unload a version that has no traffic
        rollout [MODEL]              rollouts: status, step, reason
        promote|rollback|pause|resume MODEL
        shadow-report [MODEL]        shadow agreement, differences, the last disagreements

Tables for people; `--json` prints the response message as JSON for scripts. Exit status 0 when
the call succeeded (and a config was applied), 1 when it was refused or failed (the reason on
stderr), 2 for a usage error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["add_admin_parser"]

DEFAULT_ADDRESS = "127.0.0.1:8003"


def _table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> str:
    cells = [list(header), *[[str(c) for c in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells)


def _weights(pairs: Sequence[str]) -> dict[str, float]:
    out = {}
    for pair in pairs:
        version, sep, weight = pair.partition("=")
        try:
            if not sep:
                raise ValueError
            out[version] = float(weight)
        except ValueError:
            raise SystemExit(f"modelgate admin: '{pair}' is not VERSION=WEIGHT (e.g. 1=90)") from None
    return out


def _run(args: argparse.Namespace) -> int:
    import grpc
    from google.protobuf import json_format

    from ._proto import admin_pb2 as pb
    from ._proto import admin_pb2_grpc

    channel = grpc.insecure_channel(args.address)
    stub = admin_pb2_grpc.AdminServiceStub(channel)
    timeout = args.timeout
    command = args.admin_command
    try:
        if command == "status":
            versions = stub.ListVersions(pb.ListVersionsRequest(model=args.model or ""), timeout=timeout)
            rollouts = stub.GetRollout(pb.ModelRequest(model=""), timeout=timeout)
            config = stub.GetConfig(pb.GetConfigRequest(), timeout=timeout)
            if args.json:
                body = {
                    "revision": versions.revision,
                    "config_path": config.config_path,
                    "admin_models": list(config.admin_models),
                    "versions": json_format.MessageToDict(versions, preserving_proto_field_name=True).get(
                        "versions", []
                    ),
                    "rollouts": json_format.MessageToDict(rollouts, preserving_proto_field_name=True).get(
                        "rollouts", []
                    ),
                }
                print(json.dumps(body, indent=2))
                return 0
            _print_status(versions, rollouts, config)
            return 0
        if command == "config":
            config = stub.GetConfig(pb.GetConfigRequest(), timeout=timeout)
            return _show(args, config, lambda: print(f"# revision {config.revision}\n{config.yaml}", end=""))
        if command == "apply":
            try:
                text = Path(args.file).read_text()
            except OSError as exc:
                print(f"modelgate admin: cannot read {args.file}: {exc.strerror}", file=sys.stderr)
                return 1
            applied = stub.ApplyConfig(
                pb.ApplyConfigRequest(yaml=text, dry_run=args.dry_run), timeout=timeout
            )
            _show(args, applied, lambda: _print_apply(applied, args.dry_run))
            return 0 if applied.applied or (args.dry_run and not applied.errors) else 1
        if command == "traffic":
            weights = _weights(args.weights)
            change = stub.SetTraffic(pb.SetTrafficRequest(model=args.model, weights=weights), timeout=timeout)
        elif command in ("load", "unload"):
            request = pb.VersionRequest(model=args.model, version=args.version)
            call = stub.LoadVersion if command == "load" else stub.UnloadVersion
            change = call(request, timeout=timeout)
        elif command in ("promote", "rollback", "pause", "resume"):
            call = getattr(stub, command.capitalize())
            change = call(pb.ModelRequest(model=args.model), timeout=timeout)
        elif command == "rollout":
            rollouts = stub.GetRollout(pb.ModelRequest(model=args.model or ""), timeout=timeout)
            return _show(args, rollouts, lambda: _print_rollouts(rollouts))
        elif command == "shadow-report":
            report = stub.GetShadowReport(pb.ModelRequest(model=args.model or ""), timeout=timeout)
            return _show(args, report, lambda: _print_shadow(report))
        else:  # argparse allows nothing else
            raise AssertionError(command)
        return _show(args, change, lambda: _print_change(change))
    except grpc.RpcError as exc:
        code = exc.code()
        if code == grpc.StatusCode.UNAVAILABLE:
            print(f"modelgate admin: no admin API at {args.address} ({exc.details()})", file=sys.stderr)
        else:
            print(f"modelgate admin: {code.name}: {exc.details()}", file=sys.stderr)
        return 1
    finally:
        channel.close()


def _show(args: argparse.Namespace, message: Any, human: Any) -> int:
    if args.json:
        from google.protobuf import json_format

        body = json_format.MessageToDict(
            message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
        )
        print(json.dumps(body, indent=2))
    else:
        human()
    return 0


def _print_status(versions: Any, rollouts: Any, config: Any) -> None:
    where = f"config {config.config_path}" if config.config_path else "no config file"
    admin = f"; admin changes: {', '.join(config.admin_models)}" if config.admin_models else ""
    print(f"revision {versions.revision} ({where}{admin})")
    rows = [
        (
            v.model, v.version or "-", v.state, f"{v.weight:g}%" if v.version else "-", v.role or "-",
            v.requests, v.errors, f"{v.p99_ms:.2f}" if v.requests else "-", v.reason,
        )
        for v in versions.versions
    ]  # fmt: skip
    header = ("MODEL", "VERSION", "STATE", "WEIGHT", "ROLE", "REQUESTS", "ERRORS", "P99 MS", "REASON")
    print(_table(rows, header))
    if rollouts.rollouts:
        print()
        _print_rollouts(rollouts)


def _print_rollouts(rollouts: Any) -> None:
    if not rollouts.rollouts:
        print("no rollouts")
        return
    rows = [
        (
            r.model, r.canary, r.baseline, r.status, f"{r.step}/{len(r.steps)}",
            f"{r.canary_weight:g}%", r.reason,
        )
        for r in rollouts.rollouts
    ]  # fmt: skip
    print(_table(rows, ("ROLLOUT", "CANARY", "BASELINE", "STATUS", "STEP", "CANARY WEIGHT", "REASON")))


def _print_change(change: Any) -> None:
    if not change.diff:
        print(f"revision {change.revision}: nothing to change")
        return
    print(f"revision {change.revision}" + ("" if change.served else " (not yet served by every worker)"))
    for line in change.diff:
        print(f"  {line}")


def _print_apply(applied: Any, dry_run: bool) -> None:
    if applied.errors:
        print("refused, nothing changed:", file=sys.stderr)
        for error in applied.errors:
            print(f"  {error}", file=sys.stderr)
        return
    if dry_run:
        print("dry run: valid; it would change:" if applied.diff else "dry run: valid; nothing would change")
        for line in applied.diff:
            print(f"  {line}")
        return
    _print_change(applied)


def _print_shadow(report: Any) -> None:
    if not report.pairs:
        print("no shadow copies")
        return
    rows = [
        (
            p.model, p.primary, p.shadow, p.compared, f"{100 * p.agreement_rate:.2f}%",
            f"{100 * p.argmax_agreement:.2f}%" if p.compared else "-", p.failed, p.dropped,
            f"{p.p99_ms:.2f}" if p.compared or p.failed else "-",
        )
        for p in report.pairs
    ]  # fmt: skip
    header = (
        "MODEL",
        "PRIMARY",
        "SHADOW",
        "COMPARED",
        "AGREE",
        "ARGMAX AGREE",
        "FAILED",
        "DROPPED",
        "P99 MS",
    )
    print(_table(rows, header))
    for p in report.pairs:
        if p.recent:
            print(f"\nlast disagreements of {p.model} v{p.shadow} with v{p.primary} (newest last):")
            for d in list(p.recent)[-5:]:
                print(f"  input {d.input_digest}  max |diff| {d.max_abs_diff:.4g}")


def add_admin_parser(commands: Any) -> None:
    admin = commands.add_parser("admin", help="talk to a running gateway's admin API")
    admin.add_argument(
        "--address",
        default=os.environ.get("MODELGATE_ADMIN", DEFAULT_ADDRESS),
        help=f"the admin API (default $MODELGATE_ADMIN or {DEFAULT_ADDRESS})",
    )
    admin.add_argument("--json", action="store_true", help="print the response as JSON")
    admin.add_argument("--timeout", type=float, default=30.0, help="seconds per call (default 30)")
    sub = admin.add_subparsers(dest="admin_command", required=True)
    status = sub.add_parser("status", help="versions: state, weight, role, requests, errors, p99; rollouts")
    status.add_argument("model", nargs="?")
    sub.add_parser("config", help="the config being served (YAML)")
    apply = sub.add_parser("apply", help="validate a whole config and serve its traffic")
    apply.add_argument("file")
    apply.add_argument("--dry-run", action="store_true", help="validate and show the diff; change nothing")
    traffic = sub.add_parser("traffic", help="set a model's weights: traffic MODEL 1=90 2=10")
    traffic.add_argument("model")
    traffic.add_argument("weights", nargs="+", metavar="VERSION=WEIGHT")
    for name, text in (
        ("load", "load a version with no traffic"),
        ("unload", "unload a version with no traffic"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("model")
        p.add_argument("version")
    rollout = sub.add_parser("rollout", help="rollouts: status, step, reason")
    rollout.add_argument("model", nargs="?")
    for name in ("promote", "rollback", "pause", "resume"):
        p = sub.add_parser(name, help=f"{name} a model's rollout")
        p.add_argument("model")
    shadow = sub.add_parser("shadow-report", help="shadow agreement and the last disagreements")
    shadow.add_argument("model", nargs="?")
    admin.set_defaults(func=_run)
