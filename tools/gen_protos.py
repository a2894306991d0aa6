"""Generate gateway/_proto from protos/*.proto.

    python tools/gen_protos.py            # write gateway/_proto
    python tools/gen_protos.py --check    # exit 1 if the committed stubs are stale

The stubs are rewritten in two ways after protoc:
- imports between them become package-relative (protoc writes top-level imports);
- messages live in modelgate's own descriptor pool (gateway/_proto/_pool.py), not protobuf's
  default pool, because tritonclient registers the same `inference.*` names there and a process
  that holds both (the test suite, the Triton backend) would otherwise fail to import.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
OUT = ROOT / "gateway" / "_proto"
GENERATED = (
    "admin_pb2.py",
    "admin_pb2.pyi",
    "admin_pb2_grpc.py",
    "inference_pb2.py",
    "inference_pb2.pyi",
    "inference_pb2_grpc.py",
    "model_config_pb2.py",
    "model_config_pb2.pyi",
)


def _rewrite(name: str, text: str) -> str:
    text = re.sub(r"^import (\w+_pb2) as (\w+)$", r"from . import \1 as \2", text, flags=re.M)
    text = re.sub(r"^import (\w+_pb2)$", r"from . import \1", text, flags=re.M)
    if name.endswith("_pb2.py"):
        text = text.replace(
            "from google.protobuf import descriptor_pool as _descriptor_pool\n",
            "from ._pool import POOL as _POOL\n",
        ).replace("_descriptor_pool.Default()", "_POOL")
    return text


def generate(out: Path) -> None:
    from grpc_tools import protoc

    with tempfile.TemporaryDirectory() as tmp:
        args = [
            "protoc",
            f"-I{PROTOS}",
            f"--python_out={tmp}",
            f"--pyi_out={tmp}",
            f"--grpc_python_out={tmp}",
            *sorted(str(p) for p in PROTOS.glob("*.proto")),
        ]
        if protoc.main(args) != 0:
            raise SystemExit("protoc failed")
        out.mkdir(parents=True, exist_ok=True)
        for name in GENERATED:
            (out / name).write_text(_rewrite(name, (Path(tmp) / name).read_text()))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if gateway/_proto is stale")
    args = parser.parse_args()
    if not args.check:
        generate(OUT)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        stale = [
            n
            for n in GENERATED
            if not (OUT / n).exists() or (OUT / n).read_text() != (Path(tmp) / n).read_text()
        ]
    if stale:
        print("stale generated stubs: " + ", ".join(stale) + " (run `make protos`)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
