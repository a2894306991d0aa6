#!/usr/bin/env bash
# A real Prometheus for the test that evaluates the Grafana dashboard's queries
# (tests/integration/test_dashboard.py): Debian's `prometheus`, installed with apt when missing.
# Only the binary is used: tests/peers/prometheus.py runs it on a loopback port with its own
# config and data directory. Idempotent; `make test` runs it.
set -euo pipefail
if command -v prometheus >/dev/null 2>&1; then
    exit 0
fi
SUDO=""
if [[ "$(id -u)" != "0" ]]; then
    if command -v sudo >/dev/null 2>&1; then SUDO="sudo -n"; else
        echo "setup_prometheus: need root (or sudo) to apt-get install prometheus" >&2
        exit 1
    fi
fi
echo "setup_prometheus: installing prometheus" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >&2
# The package's own service is not wanted (the tests start their own): where there is no init
# system to start it, its postinst only says so.
$SUDO apt-get install -y -qq --no-install-recommends prometheus >&2
