"""How many calls with a very short deadline still reach a remote, and with how much left.

    python loadtests/deadline_reach.py [--transport native|grpcio]

The gateway in front of harness/recorder.py (a KServe v2 server that logs each call's
`time_remaining`), batching off; 20 calls at each of 1 µs, 100 µs, 1 ms and 3 ms client
deadlines. Prints how many reached the recorder and the most time any of them had left: the
gateway refuses a call before the remote call only when nothing is left by then.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from harness.gateway import GatewayProcess
from harness.recorder import RecorderServer


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transport", default="native", choices=("native", "grpcio"))
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="deadline-"))
    log = tmp / "calls.jsonl"
    log.write_text("")
    with RecorderServer(log) as recorder:
        version = {"backend": "triton", "endpoints": [recorder.address]}
        (tmp / "gateway.json").write_text(json.dumps({"models": {"echo": {"versions": {"1": version}}}}))
        (tmp / "models").mkdir()
        flags = ["--config", str(tmp / "gateway.json"), "--batching", "off", "--transport", args.transport]
        with GatewayProcess(tmp / "models", *flags) as proc, grpcclient.InferenceServerClient(proc.url) as c:
            x = grpcclient.InferInput("x", [1, 4], "FP32")
            x.set_data_from_numpy(np.zeros((1, 4), np.float32))
            sent = 0
            for deadline in (1e-6, 1e-4, 1e-3, 3e-3):
                for _ in range(20):
                    sent += 1
                    try:
                        c.infer("echo", [x], client_timeout=deadline)
                    except InferenceServerException:
                        pass
            time.sleep(0.5)  # the last calls' lines reach the recorder's log
    left = [json.loads(line)["time_remaining"] for line in log.read_text().splitlines()]
    most = 1e3 * max(left, default=0)
    print(f"{args.transport}: {len(left)} of {sent} calls reached the remote; most left: {most:.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
