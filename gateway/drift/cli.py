"""`modelgate profile build`, `modelgate profile save` and `modelgate drift report`.

modelgate profile build DATA --model NAME --version V -o profile.npz
                        [--model-repository ./models] [--bins 10] [--categorical COLS]
    run the model version (ONNX Runtime, from the repository) on DATA (.npy, .npz, .csv, or
    .parquet with pyarrow) and write its reference profile: bin edges and counts per feature
    of every numeric input and output; counts per code for categorical features (integer
    tensors', and the float input columns COLS names: names or indices, comma-separated)
modelgate profile save MODEL -o profile.npz [--address 127.0.0.1:8003]
    the running gateway's reference profile of MODEL (a live one, once learned) as a file: name
    it as `reference:` to freeze it
modelgate drift report MODEL [--version V] [--json | --html FILE] [--address 127.0.0.1:8003]
    the running gateway's last drift window per feature, worst first (its admin API); --html
    writes a page with the reference's and the window's histogram of every feature
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_drift_parsers"]


def _build(args: argparse.Namespace) -> int:
    import numpy as np
    import onnxruntime as ort

    from ..errors import GatewayError
    from ..repository import RemoteVersion, Repository
    from .profile import ProfileError, build_profile, read_data

    try:
        source = Repository(args.model_repository).read(args.model, also=[args.version])
        where = source.versions.get(args.version)
        if where is None:
            raise ProfileError(
                f"model '{args.model}' has no version '{args.version}' in {args.model_repository}"
            )
        if isinstance(where, RemoteVersion):
            raise ProfileError("a remote (Triton) version cannot be profiled here: profile its ONNX file")
        session = ort.InferenceSession(str(where), providers=["CPUExecutionProvider"])
        input_types = {i.name: i.type for i in session.get_inputs()}
        data, features = read_data(args.data, list(input_types))
        for name, array in data.items():
            if array.ndim == 1:
                data[name] = array.reshape(-1, 1)
        dtypes = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(int64)": np.int64,
                  "tensor(int32)": np.int32}  # fmt: skip

        def run(batch: dict[str, Any]) -> dict[str, Any]:
            feeds = {n: a.astype(dtypes.get(input_types[n], a.dtype), copy=False) for n, a in batch.items()}
            names = [o.name for o in session.get_outputs()]
            try:
                return dict(zip(names, session.run(names, feeds), strict=True))
            except Exception as exc:  # ONNX Runtime says what did not fit
                raise ProfileError(f"the model refused the data: {exc}") from None

        chunk = source.config.max_batch_size or 1024
        categorical = [int(c) if c.isdigit() else c for c in args.categorical.split(",") if c]
        profile = build_profile(
            args.model, args.version, data, run, args.bins, chunk, features, sys.stderr.isatty(), categorical
        )
        profile.save(args.output)
    except (ProfileError, GatewayError) as exc:
        print(f"modelgate profile: {exc}", file=sys.stderr)
        return 1
    described = ", ".join(
        f"{t.role} {t.name} ({t.n_features} features"
        + (f", {len(t.categorical)} categorical)" if t.categorical else ")")
        for t in profile.tensors.values()
    )
    rows = next(iter(profile.tensors.values())).rows if profile.tensors else 0
    print(f"profile of {args.model} version {args.version} from {rows} rows, {args.bins} bins: {described}")
    print(f"written to {args.output}")
    return 0


def _save(args: argparse.Namespace) -> int:
    import grpc

    from .._proto import admin_pb2 as pb
    from .._proto import admin_pb2_grpc

    with grpc.insecure_channel(args.address) as channel:
        stub = admin_pb2_grpc.AdminServiceStub(channel)
        try:
            found = stub.GetDriftReference(pb.ModelRequest(model=args.model), timeout=30)
        except grpc.RpcError as exc:
            print(f"modelgate profile: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return 1
    args.output.write_bytes(found.profile)
    print(f"{found.reference}\nwritten to {args.output}")
    return 0


def _report(args: argparse.Namespace) -> int:
    import grpc
    from google.protobuf import json_format

    from .._proto import admin_pb2 as pb
    from .._proto import admin_pb2_grpc

    with grpc.insecure_channel(args.address) as channel:
        stub = admin_pb2_grpc.AdminServiceStub(channel)
        try:
            report = stub.GetDriftReport(
                pb.DriftReportRequest(model=args.model, version=args.version or ""), timeout=30
            )
        except grpc.RpcError as exc:
            print(f"modelgate drift: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return 1
    if args.html is not None:
        from .html import render

        args.html.write_text(render(report))
        print(f"written to {args.html}")
        return 0
    if args.json:
        print(json.dumps(json_format.MessageToDict(report, preserving_proto_field_name=True), indent=2))
        return 0
    from ..admin_cli import _table

    print(f"{report.model}: alerts when the worst feature's {report.score} is over {report.alert:g}")
    if report.reference:
        print(f"  {report.reference}")
    for v in report.versions:
        state = f"ALERT: {v.reason}" if v.alert else "no alert"
        print(f"  version {v.version}: {v.windows} windows, {state}")
    if not report.features:
        print("no window has ended yet")
        return 0
    rows = [
        (
            f.version, f.tensor, f.feature + (" (cat.)" if f.kind == "categorical" else ""), f.window_rows,
            f"{f.psi:.4f}", f"{f.js:.4f}", f"{f.ks:.4f}",
            f"{f.wasserstein:.4g}", f"{100 * f.nan_rate:.2f}%", f"{100 * f.out_of_range_rate:.2f}%",
            "over" if f.over else ("" if f.counts else "(not counted)"),
        )
        for f in report.features[: args.limit]
    ]  # fmt: skip
    header = ("VERSION", "TENSOR", "FEATURE", "ROWS", "PSI", "JS", "KS", "W1", "NAN", "OUT OF RANGE", "")
    print(_table(rows, header))
    if len(report.features) > args.limit:
        print(f"... {len(report.features) - args.limit} more (--limit, or --json)")
    return 0


def add_drift_parsers(commands: Any) -> None:
    profile = commands.add_parser("profile", help="reference profiles for drift detection")
    sub = profile.add_subparsers(dest="profile_command", required=True)
    build = sub.add_parser("build", help="profile a model version's inputs and outputs on training data")
    build.add_argument("data", type=Path, help=".npy, .npz (one array per input), .csv or .parquet")
    build.add_argument("--model", required=True)
    build.add_argument("--version", required=True)
    build.add_argument("-o", "--output", type=Path, required=True, help="the profile to write (.npz)")
    build.add_argument("--model-repository", type=Path, default=Path("models"), help="default ./models")
    build.add_argument("--bins", type=int, default=10, help="quantile bins per feature (default 10)")
    build.add_argument(
        "--categorical",
        default="",
        metavar="COLS",
        help="float input features counted as category codes (names or indices, comma-separated); "
        "integer inputs' features are categorical anyway",
    )
    build.set_defaults(func=_build)
    save = sub.add_parser("save", help="save a running gateway's reference (a learned live one) to a file")
    save.add_argument("model")
    save.add_argument("-o", "--output", type=Path, required=True, help="the profile to write (.npz)")
    _address(save)
    save.set_defaults(func=_save)

    drift = commands.add_parser("drift", help="drift of a running gateway's models")
    dsub = drift.add_subparsers(dest="drift_command", required=True)
    report = dsub.add_parser("report", help="the last drift window per feature, worst first")
    report.add_argument("model")
    report.add_argument("--version")
    report.add_argument("--json", action="store_true")
    report.add_argument("--html", type=Path, help="write a page with each feature's histograms instead")
    report.add_argument("--limit", type=int, default=20, help="features shown in the table (default 20)")
    _address(report)
    report.set_defaults(func=_report)


def _address(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--address",
        default=os.environ.get("MODELGATE_ADMIN", "127.0.0.1:8003"),
        help="the admin API (default $MODELGATE_ADMIN or 127.0.0.1:8003)",
    )
