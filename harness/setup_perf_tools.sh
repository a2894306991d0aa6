#!/usr/bin/env bash
# Make tritonclient 2.41.0's bundled `perf_analyzer` binary runnable on a CPU-only Debian machine.
#
# Usage: harness/setup_perf_tools.sh [VENV]   (default: .venv)
#
# Idempotent and non-interactive (CI runs it):
#   * installs Debian's libb64-0d (provides libb64.so.0d) only if it is missing;
#   * pip-installs nvidia-cuda-runtime-cu12 (provides libcudart.so.12, no GPU needed) into VENV
#     only if it is missing;
#   * prints the LD_LIBRARY_PATH perf_analyzer needs, as an `export` line on the last line of stdout.
set -euo pipefail

VENV="${1:-.venv}"
PY="$VENV/bin/python"

if [[ ! -x "$PY" ]]; then
    echo "setup_perf_tools: no python at $PY (pass the venv path as \$1)" >&2
    exit 2
fi
if [[ ! -x "$VENV/bin/perf_analyzer" ]]; then
    echo "setup_perf_tools: $VENV/bin/perf_analyzer not found; install tritonclient[all]==2.41.0" \
         "(the last wheels that ship the binary) into $VENV first" >&2
    exit 2
fi

# --- libb64.so.0d (Debian package libb64-0d) -------------------------------------------------
have_libb64() {
    dpkg-query -W -f='${Status}' libb64-0d 2>/dev/null | grep -q "install ok installed" \
        || ldconfig -p 2>/dev/null | grep -q 'libb64\.so\.0d'
}
if have_libb64; then
    echo "setup_perf_tools: libb64-0d already installed" >&2
else
    source "$(dirname "${BASH_SOURCE[0]}")/apt.sh"
    apt_install setup_perf_tools libb64-0d
fi

# --- libcudart.so.12 (PyPI nvidia-cuda-runtime-cu12) -----------------------------------------
cudart_dir() {
    "$PY" - <<'EOF'
import importlib.util, os, sys
spec = importlib.util.find_spec("nvidia")
if spec is None or not spec.submodule_search_locations:
    sys.exit(1)
for base in spec.submodule_search_locations:
    lib = os.path.join(base, "cuda_runtime", "lib")
    if os.path.isdir(lib) and any(n.startswith("libcudart.so.12") for n in os.listdir(lib)):
        print(lib)
        sys.exit(0)
sys.exit(1)
EOF
}
if LIBDIR="$(cudart_dir)"; then
    echo "setup_perf_tools: nvidia-cuda-runtime-cu12 already installed" >&2
else
    echo "setup_perf_tools: installing nvidia-cuda-runtime-cu12 into $VENV" >&2
    "$PY" -m pip install --quiet --disable-pip-version-check nvidia-cuda-runtime-cu12 >&2
    LIBDIR="$(cudart_dir)" || {
        echo "setup_perf_tools: libcudart.so.12 still not found after install" >&2
        exit 1
    }
fi
LIBDIR="$(cd "$LIBDIR" && pwd)"

# --- check ----------------------------------------------------------------------------------
if missing="$(LD_LIBRARY_PATH="$LIBDIR${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
                ldd "$VENV/bin/perf_analyzer" | grep 'not found')"; then
    echo "setup_perf_tools: perf_analyzer still misses libraries:" >&2
    echo "$missing" >&2
    exit 1
fi
echo "setup_perf_tools: perf_analyzer is runnable with:" >&2
echo "export LD_LIBRARY_PATH=$LIBDIR\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
