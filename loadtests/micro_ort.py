"""One small ONNX Runtime call, warm and with cold caches: why it costs more inside the server.

    python loadtests/micro_ort.py [--calls 3000] [--rows 1] [--scribble-mib 4]

Loads the example repository's `mlp` with the gateway's session options (one intra-op thread,
no spinning) and times `session.run` with the thread's CPU clock: first back to back, then with
--scribble-mib of memory written between calls, as the gRPC stack and the event loop do between
two model calls in a loaded server (ab_hot_path.py reports the in-server figure).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from gateway.examples import example_repository


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--rows", type=int, default=1)
    parser.add_argument("--scribble-mib", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model = sorted(example_repository(Path(tmp)).glob("mlp/*/model.onnx"))[-1]
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    x = np.ones((args.rows, 32), np.float32)
    scribble = np.zeros(args.scribble_mib << 20, np.uint8)
    for _ in range(200):
        session.run(["y"], {"x": x})
    for label, cold in (("back to back", False), (f"{args.scribble_mib} MiB written between calls", True)):
        spent = 0
        for _ in range(args.calls):
            if cold:
                scribble += 1
            began = time.thread_time_ns()
            session.run(["y"], {"x": x})
            spent += time.thread_time_ns() - began
        print(f"{args.rows}-row call, {label}: {spent / args.calls / 1e3:.1f} µs CPU")
    return 0


if __name__ == "__main__":
    sys.exit(main())
