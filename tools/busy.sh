#!/usr/bin/env bash
# Run a command with a CPU-bound process on every core beside it: `make test-busy` runs the
# suite this way, because tests must hold on a busy machine (they wait on events, not sleeps).
set -euo pipefail
pids=()
for _ in $(seq "$(nproc)"); do
    (while :; do :; done) &
    pids+=($!)
done
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
"$@"
