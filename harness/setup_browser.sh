#!/usr/bin/env bash
# A real headless browser for the tests that open pages modelgate writes (the drift report's
# --html): Debian's chromium, installed with apt when missing. Idempotent; `make test` runs it.
set -euo pipefail
if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then
    exit 0
fi
source "$(dirname "${BASH_SOURCE[0]}")/apt.sh"
apt_install setup_browser chromium
