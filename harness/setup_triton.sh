#!/usr/bin/env bash
# Lay out a real NVIDIA Triton Inference Server (2.51, CPU only) for tests and benchmarks.
#
#   bash harness/setup_triton.sh [VENV_DIR]      (default: <repo>/.venv-triton)
#
# The PyPI wheel nvidia-pytriton carries the tritonserver binary and its Python backend; it pins
# numpy<2, so it gets a venv of its own.  The venv is built on the system (Debian) python3.11
# because the Python-backend stub links the system libpython3.11.so: with that interpreter the
# stub's embedded Python and the venv's standard library are the same release.
# Idempotent and non-interactive: whatever is already in place is kept.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
venv="${1:-$repo/.venv-triton}"

PYTRITON_VERSION="0.7.0"
NUMPY_SPEC="numpy==1.26.4"          # nvidia-pytriton 0.7.0 requires numpy>=1.21,<2
ORT_SPEC="onnxruntime==1.32.0"      # same release as the project venv; works with numpy 1.26
spec="nvidia-pytriton==$PYTRITON_VERSION $NUMPY_SPEC $ORT_SPEC"
marker="$venv/.modelgate-triton"

log() { echo "setup_triton: $*"; }

apt_install() {
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        log "apt-get install $*"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >/dev/null 2>&1 || apt-get update -qq
        apt-get install -y -qq --no-install-recommends "$@" >/dev/null
    else
        log "missing system packages ($*) and cannot apt-get install them" >&2
        return 1
    fi
}

# 1. base interpreter: Debian's python3.11 (its libpython3.11.so is what the stub links)
base="${TRITON_BASE_PYTHON:-/usr/bin/python3.11}"
if [ ! -x "$base" ] || ! "$base" -c "import venv, ensurepip" >/dev/null 2>&1 \
        || ! { ldconfig -p 2>/dev/null || /sbin/ldconfig -p 2>/dev/null; } | grep -q 'libpython3\.11\.so\.1\.0'; then
    apt_install python3.11 python3.11-venv libpython3.11 || true
fi
if [ ! -x "$base" ]; then
    base="$(command -v python3.11)"
    log "no /usr/bin/python3.11; falling back to $base (stub/stdlib releases may differ)"
fi

# 2. the venv and its packages
if [ -f "$marker" ] && [ "$(cat "$marker")" = "$spec" ] && [ -x "$venv/bin/python" ] \
        && "$venv/bin/python" -c "import numpy, onnxruntime, pytriton" >/dev/null 2>&1; then
    log "venv $venv already has: $spec"
else
    want_base="$("$base" -c 'import sys; print(sys.base_prefix)')"
    have_base="$("$venv/bin/python" -c 'import sys; print(sys.base_prefix)' 2>/dev/null || true)"
    if [ "$have_base" != "$want_base" ]; then
        if [ -e "$venv" ] && [ ! -f "$venv/pyvenv.cfg" ] && [ -n "$(ls -A "$venv" 2>/dev/null)" ]; then
            log "$venv exists and is not a venv; not touching it" >&2
            exit 1
        fi
        log "creating venv $venv with $base"
        rm -rf "$venv"
        "$base" -m venv "$venv"
    fi
    log "pip install $spec"
    # shellcheck disable=SC2086
    "$venv/bin/python" -m pip install --quiet --no-input --disable-pip-version-check $spec 2>&1 \
        | grep -v "is ignored: it is neither a file nor a directory" || true
    "$venv/bin/python" -c "import numpy, onnxruntime, pytriton" \
        || { log "packages did not install into $venv" >&2; exit 1; }
    echo "$spec" > "$marker"
fi

# 3. the backend directory: python backend + the 3.11 stub side by side
site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
tsrv="$site/pytriton/tritonserver"
libs="$site/nvidia_pytriton.libs"
backend="$venv/triton-backends/python"
mkdir -p "$backend"
for src in "$tsrv/backends/python/libtriton_python.so" \
           "$tsrv/backends/python/triton_python_backend_utils.py" \
           "$tsrv/python_backend_stubs/3.11/triton_python_backend_stub"; do
    dst="$backend/$(basename "$src")"
    if [ ! -f "$dst" ] || ! cmp -s "$src" "$dst"; then
        cp -f "$src" "$dst"
        log "copied $(basename "$src")"
    fi
done
chmod +x "$backend/triton_python_backend_stub" "$tsrv/bin/tritonserver"

# 4. the binaries must find all their libraries
missing="$(LD_LIBRARY_PATH="$libs" ldd "$tsrv/bin/tritonserver" "$backend/libtriton_python.so" \
             "$backend/triton_python_backend_stub" 2>&1 | grep 'not found' || true)"
if [ -n "$missing" ]; then
    log "unresolved libraries:" >&2
    echo "$missing" >&2
    exit 1
fi
log "ready: $tsrv/bin/tritonserver  (backend dir $venv/triton-backends)"
