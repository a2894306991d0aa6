"""What drift monitoring costs the data plane, A/B in one run.

    python loadtests/bench_drift.py [--concurrency 1,64] [--measurement-ms 3000] [--repeats 3]
                                    [--batching auto]

Profiles the example repository's `mlp` (the version it serves, v3) on 20,000 synthetic rows
(`modelgate profile build`'s code), then runs loadtests/bench_gateway.py with two gateways
side by side, rounds interleaved: the example as it is, and the same with
`drift: {reference: PROFILE}` on mlp (every backend call counted in the profile's bins: input x,
32 features, and output y, 8; 10 bins). The ratio column against the first gateway is the cost;
CPU per request is the steadier figure on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import bench_gateway  # the A/B runner this scenario drives (loadtests/ is the script's directory)
import numpy as np
import onnxruntime as ort

from gateway.drift import build_profile
from gateway.examples import mlp


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", default="1,64")
    parser.add_argument("--measurement-ms", default="3000")
    parser.add_argument("--repeats", default="3")
    parser.add_argument("--batching", default="auto")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-drift-") as tmp:
        session = ort.InferenceSession(mlp(seed=3), providers=["CPUExecutionProvider"])
        data = np.random.default_rng(0).uniform(0, 1, size=(20_000, 32)).astype(np.float32)
        profile = build_profile(
            "mlp", "3", {"x": data}, lambda b: {"y": session.run(None, b)[0]}, progress=False
        )
        path = Path(tmp) / "mlp.npz"
        profile.save(path)
        variant = {"models": {"mlp": {"drift": {"reference": str(path)}}}}
        return bench_gateway.main([
            "--concurrency", args.concurrency, "--measurement-ms", args.measurement_ms,
            "--repeats", args.repeats, "--batching", args.batching, "--skip-bare",
            "--variant", f"drift={json.dumps(variant)}",
        ])  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
