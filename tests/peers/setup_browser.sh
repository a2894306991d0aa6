#!/usr/bin/env bash
# A real headless browser for the tests that open pages modelgate writes (the drift report's
# --html): Debian's chromium, installed with apt when missing. Idempotent; `make test` runs it.
set -euo pipefail
if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then
    exit 0
fi
SUDO=""
if [[ "$(id -u)" != "0" ]]; then
    if command -v sudo >/dev/null 2>&1; then SUDO="sudo -n"; else
        echo "setup_browser: need root (or sudo) to apt-get install chromium" >&2
        exit 1
    fi
fi
echo "setup_browser: installing chromium" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >&2
$SUDO apt-get install -y -qq --no-install-recommends chromium >&2
