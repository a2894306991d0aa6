#!/usr/bin/env bash
# A real Prometheus for the test that evaluates the Grafana dashboard's queries
# (tests/integration/test_dashboard.py): Debian's `prometheus` (with promtool), installed with apt
# when missing. Only the binaries are used: harness/prometheus.py runs its own server on a
# loopback port with its own config and data directory (the package's service is not needed;
# where there is no init system, its postinst only says so). Idempotent; `make test` runs it.
set -euo pipefail
if command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; then
    exit 0
fi
source "$(dirname "${BASH_SOURCE[0]}")/apt.sh"
apt_install setup_prometheus prometheus
