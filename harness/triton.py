"""A real NVIDIA Triton Inference Server (2.51, CPU only) as a test and benchmark peer.

Standard library only at import time: the test suite imports this from the project venv, while
Triton itself, its Python backend and the model code run in the Triton venv that
``harness/setup_triton.sh`` lays out (default ``<repo>/.venv-triton``, or $MODELGATE_TRITON_VENV).

Library::

    from harness.triton import TritonServer, make_onnx_python_model
    repo = tmp_path / "repo"
    make_onnx_python_model(repo, "mlp", "mlp.onnx", "x", 32, "y", 8)
    with TritonServer(repo) as triton:
        client = tritonclient.grpc.InferenceServerClient(triton.grpc_url)

Command line (stays up until SIGTERM/SIGINT, or --max-lifetime seconds)::

    python -m harness.triton --onnx mlp.onnx --input x:32 --output y:8 --port 0
    -> triton listening on 127.0.0.1:PORT
"""

from __future__ import annotations

import argparse
import atexit
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import weakref
from collections.abc import Iterable, Sequence
from pathlib import Path

__all__ = [
    "TritonError",
    "TritonInstall",
    "TritonServer",
    "find_triton",
    "free_port",
    "make_onnx_python_model",
    "triton_available",
]

HOST = "127.0.0.1"
REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_VENV = REPO_ROOT / ".venv-triton"

# KServe v2 datatype -> (Triton config type, numpy dtype name)
_DTYPES = {
    "BOOL": ("TYPE_BOOL", "bool"),
    "UINT8": ("TYPE_UINT8", "uint8"),
    "UINT16": ("TYPE_UINT16", "uint16"),
    "UINT32": ("TYPE_UINT32", "uint32"),
    "UINT64": ("TYPE_UINT64", "uint64"),
    "INT8": ("TYPE_INT8", "int8"),
    "INT16": ("TYPE_INT16", "int16"),
    "INT32": ("TYPE_INT32", "int32"),
    "INT64": ("TYPE_INT64", "int64"),
    "FP16": ("TYPE_FP16", "float16"),
    "FP32": ("TYPE_FP32", "float32"),
    "FP64": ("TYPE_FP64", "float64"),
}


class TritonError(RuntimeError):
    """Triton is not installed, did not start, or died."""


# --------------------------------------------------------------------------------------------
# Finding the install
# --------------------------------------------------------------------------------------------


class TritonInstall:
    """Paths of a Triton venv laid out by setup_triton.sh."""

    def __init__(self, venv: str | os.PathLike[str] | None = None) -> None:
        venv = venv or os.environ.get("MODELGATE_TRITON_VENV") or DEFAULT_VENV
        self.venv = Path(venv).resolve()
        sites = sorted(glob.glob(str(self.venv / "lib" / "python3*" / "site-packages")))
        if not sites:
            raise TritonError(f"no Triton venv at {self.venv}: run harness/setup_triton.sh")
        self.site_packages = Path(sites[0])
        tsrv = self.site_packages / "pytriton" / "tritonserver"
        self.binary = tsrv / "bin" / "tritonserver"
        self.libs = self.site_packages / "nvidia_pytriton.libs"
        self.backend_dir = self.venv / "triton-backends"
        self.bin_dir = self.venv / "bin"
        needed = [
            self.binary,
            self.libs,
            self.backend_dir / "python" / "libtriton_python.so",
            self.backend_dir / "python" / "triton_python_backend_stub",
        ]
        missing = [str(p) for p in needed if not p.exists()]
        if missing:
            raise TritonError(
                "Triton venv incomplete (run harness/setup_triton.sh); missing: " + ", ".join(missing)
            )

    def environment(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """Environment for tritonserver and the Python-backend stub it spawns."""
        env = dict(os.environ if base is None else base)
        for var in ("PYTHONHOME", "PYTHONSTARTUP", "PYTHONEXECUTABLE", "__PYVENV_LAUNCHER__"):
            env.pop(var, None)
        old_ld = env.get("LD_LIBRARY_PATH")
        env["LD_LIBRARY_PATH"] = str(self.libs) + (os.pathsep + old_ld if old_ld else "")
        # The stub embeds libpython and resolves its prefix via `python3` on PATH: the Triton
        # venv's bin must come first, and its site-packages must be importable (numpy, ORT).
        env["PATH"] = str(self.bin_dir) + os.pathsep + env.get("PATH", "/usr/bin:/bin")
        env["PYTHONPATH"] = str(self.site_packages)
        env["VIRTUAL_ENV"] = str(self.venv)
        env.setdefault("OMP_NUM_THREADS", "1")
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        return env


def find_triton(venv: str | os.PathLike[str] | None = None) -> TritonInstall:
    return TritonInstall(venv)


def triton_available(venv: str | os.PathLike[str] | None = None) -> bool:
    """True when setup_triton.sh has laid out a usable Triton venv (for pytest skips)."""
    try:
        TritonInstall(venv)
    except TritonError:
        return False
    return True


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


# --------------------------------------------------------------------------------------------
# Model repository
# --------------------------------------------------------------------------------------------

_MODEL_PY = '''\
"""Triton Python-backend model: one ONNX Runtime call over the whole dynamic batch.

Written by modelgate harness/triton.py; runs inside the Triton venv.
"""
import json
import os
import time

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        self.input_name = config["input"][0]["name"]
        self.output_name = config["output"][0]["name"]
        self.output_dtype = pb_utils.triton_string_to_numpy(config["output"][0]["data_type"])
        self.sleep_s = float(params.get("extra_sleep_ms", "0") or 0) / 1000.0
        onnx_file = params.get("onnx_file", "model.onnx")
        path = os.path.join(args["model_repository"], args["model_version"], onnx_file)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self.session = ort.InferenceSession(path, sess_options=opts,
                                            providers=["CPUExecutionProvider"])
        names = [i.name for i in self.session.get_inputs()]
        self.feed_name = self.input_name if self.input_name in names else names[0]
        outs = [o.name for o in self.session.get_outputs()]
        self.fetch_name = self.output_name if self.output_name in outs else outs[0]

    def execute(self, requests):
        try:
            xs = [pb_utils.get_input_tensor_by_name(r, self.input_name).as_numpy()
                  for r in requests]
            sizes = [x.shape[0] for x in xs]
            batch = xs[0] if len(xs) == 1 else np.concatenate(xs, axis=0)
            if self.sleep_s > 0:
                time.sleep(self.sleep_s)
            out = self.session.run([self.fetch_name], {self.feed_name: batch})[0]
            out = out.astype(self.output_dtype, copy=False)
            parts = np.split(out, np.cumsum(sizes)[:-1], axis=0) if len(sizes) > 1 else [out]
        except Exception as exc:  # one failure answers every request of the batch
            err = pb_utils.TritonError(f"{type(exc).__name__}: {exc}")
            return [pb_utils.InferenceResponse(output_tensors=[], error=err) for _ in requests]
        return [
            pb_utils.InferenceResponse(
                output_tensors=[pb_utils.Tensor(self.output_name, np.ascontiguousarray(p))])
            for p in parts
        ]

    def finalize(self):
        self.session = None
'''


def _dims(dim: int | Sequence[int]) -> list[int]:
    return [int(dim)] if isinstance(dim, int) else [int(d) for d in dim]


def make_onnx_python_model(
    repo_dir: str | os.PathLike[str],
    name: str,
    onnx_path: str | os.PathLike[str],
    input_name: str,
    input_dim: int | Sequence[int],
    output_name: str,
    output_dim: int | Sequence[int],
    dtype: str = "FP32",
    max_batch_size: int = 64,
    max_queue_delay_us: int = 500,
    instance_count: int = 1,
    extra_sleep_ms: float = 0,
) -> Path:
    """Write ``repo_dir/name`` (config.pbtxt, 1/model.py, 1/model.onnx); returns the model dir.

    ``input_dim``/``output_dim`` are the per-row shape (without the batch dimension). With
    ``max_batch_size > 0`` Triton batches dynamically, waiting up to ``max_queue_delay_us``;
    with 0 the model takes ``[-1, *dims]`` and no batching. ``extra_sleep_ms`` is slept once
    per execute() call, to simulate a slow server.
    """
    dtype = dtype.upper()
    if dtype not in _DTYPES:
        raise ValueError(f"unsupported dtype {dtype!r}; one of {sorted(_DTYPES)}")
    triton_type = _DTYPES[dtype][0]
    model_dir = Path(repo_dir) / name
    version_dir = model_dir / "1"
    version_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(onnx_path, version_dir / "model.onnx")
    (version_dir / "model.py").write_text(_MODEL_PY)

    in_dims, out_dims = _dims(input_dim), _dims(output_dim)
    if max_batch_size <= 0:
        in_dims, out_dims = [-1, *in_dims], [-1, *out_dims]

    def fmt(d: list[int]) -> str:
        return ", ".join(str(x) for x in d)

    lines = [
        f'name: "{name}"',
        'backend: "python"',
        f"max_batch_size: {max(0, int(max_batch_size))}",
        f'input [ {{ name: "{input_name}" data_type: {triton_type} dims: [ {fmt(in_dims)} ] }} ]',
        f'output [ {{ name: "{output_name}" data_type: {triton_type} dims: [ {fmt(out_dims)} ] }} ]',
        f"instance_group [ {{ count: {int(instance_count)} kind: KIND_CPU }} ]",
    ]
    if max_batch_size > 0:
        lines.append(f"dynamic_batching {{ max_queue_delay_microseconds: {int(max_queue_delay_us)} }}")
    for key, value in (("extra_sleep_ms", extra_sleep_ms), ("onnx_file", "model.onnx")):
        lines.append(f'parameters {{ key: "{key}" value: {{ string_value: "{value}" }} }}')
    (model_dir / "config.pbtxt").write_text("\n".join(lines) + "\n")
    return model_dir


# --------------------------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------------------------

_LIVE: weakref.WeakSet[TritonServer] = weakref.WeakSet()


@atexit.register
def _kill_leftovers() -> None:
    for server in list(_LIVE):
        try:
            server.kill()
        except Exception:
            pass


class TritonServer:
    """One tritonserver process on 127.0.0.1, in its own process group.

    Ports given as 0 are picked free at the first start() and kept for restart().
    """

    def __init__(
        self,
        model_repository: str | os.PathLike[str],
        *,
        venv: str | os.PathLike[str] | None = None,
        grpc_port: int = 0,
        http_port: int = 0,
        metrics_port: int = 0,
        log_path: str | os.PathLike[str] | None = None,
        startup_timeout: float = 60.0,
        stop_timeout: float = 15.0,
        extra_args: Iterable[str] = (),
        log_verbose: int = 0,
    ) -> None:
        self.install = TritonInstall(venv)
        self.model_repository = Path(model_repository).resolve()
        if not self.model_repository.is_dir():
            raise TritonError(f"model repository {self.model_repository} is not a directory")
        self._want = {"grpc": grpc_port, "http": http_port, "metrics": metrics_port}
        self._ports: dict[str, int] = {}
        self._own_log_dir: str | None = None
        if log_path is None:
            self._own_log_dir = tempfile.mkdtemp(prefix="triton-log-")
            log_path = Path(self._own_log_dir) / "tritonserver.log"
        self.log_path = Path(log_path)
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.extra_args = list(extra_args)
        self.log_verbose = log_verbose
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_offset = 0
        self.startup_seconds: float | None = None

    # ---- addresses -------------------------------------------------------------------------
    def _port(self, kind: str) -> int:
        if kind not in self._ports:
            raise TritonError("ports are chosen at start(); start the server first")
        return self._ports[kind]

    @property
    def grpc_port(self) -> int:
        return self._port("grpc")

    @property
    def http_port(self) -> int:
        return self._port("http")

    @property
    def metrics_port(self) -> int:
        return self._port("metrics")

    @property
    def grpc_url(self) -> str:
        return f"{HOST}:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"{HOST}:{self.http_port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # ---- lifecycle -------------------------------------------------------------------------
    def _command(self) -> list[str]:
        p = self._ports
        return [
            str(self.install.binary),
            f"--model-repository={self.model_repository}",
            f"--backend-directory={self.install.backend_dir}",
            f"--grpc-address={HOST}",
            f"--grpc-port={p['grpc']}",
            f"--http-address={HOST}",
            f"--http-port={p['http']}",
            f"--metrics-address={HOST}",
            f"--metrics-port={p['metrics']}",
            "--allow-gpu-metrics=false",
            "--pinned-memory-pool-byte-size=0",  # no CUDA here: skip the failing pinned pool
            "--strict-readiness=true",
            "--exit-timeout-secs=5",
            f"--log-verbose={int(self.log_verbose)}",
            *self.extra_args,
        ]

    def log_tail(self, nbytes: int = 4000) -> str:
        """The end of what the current (or last) run wrote to its log."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(0, os.SEEK_END)
                end = f.tell()
                f.seek(max(self._log_offset, end - nbytes))
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def failure_report(self, max_lines: int = 40) -> str:
        """Error lines of the current (or last) run, then its last lines, tables left out."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self._log_offset)
                text = f.read().decode("utf-8", "replace")
        except OSError:
            return ""
        lines = [ln for ln in text.splitlines() if ln.strip() and ln[:1] not in "+|"]
        noise = ("CudaDriverHelper", "pinned memory", "NVML", "DCGM", "GPU metrics")
        errors = [
            ln
            for ln in lines
            if ((ln[:1] == "E" and ln[1:5].isdigit()) or ln.lower().startswith("error"))
            and not any(n in ln for n in noise)
        ]
        tail = [ln for ln in lines[-max_lines // 2 :] if ln not in errors]
        return "\n".join([*errors[-max_lines // 2 :], "...", *tail])

    def _ready(self) -> bool:
        url = f"http://{HOST}:{self._ports['http']}/v2/health/ready"
        try:
            with urllib.request.urlopen(url, timeout=1.0) as resp:
                if resp.status != 200:
                    return False
        except (urllib.error.URLError, OSError, ValueError):
            return False
        try:  # the gRPC listener must be up as well
            with socket.create_connection((HOST, self._ports["grpc"]), timeout=1.0):
                return True
        except OSError:
            return False

    def start(self) -> TritonServer:
        if self.running:
            return self
        auto = [k for k, v in self._want.items() if not v]
        # A free port picked here can be taken before Triton binds it: retry (bounded) with new
        # ones, but only for ports we chose on the very first start.
        attempts = 3 if (auto and not self._ports) else 1
        last: TritonError | None = None
        for _ in range(attempts):
            if not self._ports:
                self._ports = {k: (v or free_port()) for k, v in self._want.items()}
            try:
                self._start_once()
                return self
            except TritonError as exc:
                last = exc
                if "address already in use" in str(exc).lower() and attempts > 1:
                    self._ports = {}
                    continue
                raise
        assert last is not None
        raise last

    def _start_once(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self._log_offset = log.tell()
            log.write(f"=== modelgate: starting {' '.join(self._command())}\n".encode())
            log.flush()
            t0 = time.monotonic()
            self._proc = subprocess.Popen(
                self._command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.install.environment(),
                cwd=str(self.model_repository),
                start_new_session=True,  # its own process group (pgid == pid)
            )
        _LIVE.add(self)
        deadline = t0 + self.startup_timeout
        while True:
            code = self._proc.poll()
            if code is not None:
                self._reap_group()
                raise TritonError(
                    f"tritonserver exited with {code} during start-up; log "
                    f"{self.log_path}:\n{self.failure_report()}"
                )
            if self._ready():
                self.startup_seconds = time.monotonic() - t0
                return
            if time.monotonic() >= deadline:
                self.kill()
                raise TritonError(
                    f"tritonserver not ready after {self.startup_timeout:.0f} s; log "
                    f"{self.log_path}:\n{self.failure_report()}"
                )
            time.sleep(0.1)

    def _signal_group(self, sig: int) -> None:
        if self._proc is None:
            return
        try:
            os.killpg(self._proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def _reap_group(self) -> None:
        """After the server exits, end stubs it left in its group (bounded)."""
        if self._proc is None:
            return
        pgid = self._proc.pid
        for _ in range(50):
            try:
                os.killpg(pgid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                return
            time.sleep(0.02)

    def stop(self) -> int | None:
        """SIGTERM the server, SIGKILL its group after ``stop_timeout`` s; returns exit code."""
        proc = self._proc
        if proc is None:
            return None
        if proc.poll() is None:
            try:
                proc.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGKILL)
                proc.wait(timeout=10)
        self._reap_group()
        _LIVE.discard(self)
        return proc.returncode

    def kill(self) -> int | None:
        """SIGKILL the server and its stubs at once (a crash, for fault tests)."""
        proc = self._proc
        if proc is None:
            return None
        if proc.poll() is None:
            self._signal_group(signal.SIGKILL)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        self._reap_group()
        _LIVE.discard(self)
        return proc.returncode

    def restart(self) -> TritonServer:
        """Stop (if still running) and start again on the same ports."""
        self.stop()
        # The old listeners can linger briefly; retry the bind for a bounded time.
        deadline = time.monotonic() + 20.0
        while True:
            try:
                self._start_once()
                return self
            except TritonError as exc:
                if "address already in use" not in str(exc).lower() or time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def close(self) -> None:
        self.stop()
        if self._own_log_dir is not None:
            shutil.rmtree(self._own_log_dir, ignore_errors=True)
            self._own_log_dir = None

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is None:
            self.close()  # also drops a log dir of our own; kept when the block failed
        else:
            self.stop()

    def __repr__(self) -> str:
        where = self.grpc_url if self._ports else "not started"
        return f"<TritonServer {where} pid={self.pid} repo={self.model_repository}>"


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def _name_dims(text: str) -> tuple[str, list[int]]:
    name, _, dims = text.partition(":")
    if not name or not dims:
        raise argparse.ArgumentTypeError(f"expected NAME:DIM[,DIM...], got {text!r}")
    return name, [int(d) for d in dims.split(",")]


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m harness.triton",
        description="Serve one ONNX model with a real Triton (Python backend + ONNX Runtime).",
    )
    ap.add_argument("--onnx", required=True, help="ONNX file")
    ap.add_argument("--input", required=True, type=_name_dims, help="NAME:DIM, e.g. x:32")
    ap.add_argument("--output", required=True, type=_name_dims, help="NAME:DIM, e.g. y:8")
    ap.add_argument("--name", default="mlp", help="model name (default mlp)")
    ap.add_argument("--dtype", default="FP32")
    ap.add_argument("--port", type=int, default=0, help="gRPC port (0: a free one)")
    ap.add_argument("--http-port", type=int, default=0)
    ap.add_argument("--metrics-port", type=int, default=0)
    ap.add_argument("--max-batch-size", type=int, default=64)
    ap.add_argument("--max-queue-delay-us", type=int, default=500)
    ap.add_argument("--instances", type=int, default=1)
    ap.add_argument("--extra-sleep-ms", type=float, default=0)
    ap.add_argument("--venv", default=None, help="Triton venv (default .venv-triton)")
    ap.add_argument("--log", default=None, help="log file (default: in the temp dir)")
    ap.add_argument(
        "--max-lifetime",
        type=float,
        default=4 * 3600,
        help="stop by itself after this many seconds (default 4 h)",
    )
    args = ap.parse_args(argv)

    stop_requested = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stop_requested
        stop_requested = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    with tempfile.TemporaryDirectory(prefix="triton-peer-") as tmp:
        repo = Path(tmp) / "models"
        (in_name, in_dims), (out_name, out_dims) = args.input, args.output
        make_onnx_python_model(
            repo,
            args.name,
            args.onnx,
            in_name,
            in_dims,
            out_name,
            out_dims,
            dtype=args.dtype,
            max_batch_size=args.max_batch_size,
            max_queue_delay_us=args.max_queue_delay_us,
            instance_count=args.instances,
            extra_sleep_ms=args.extra_sleep_ms,
        )
        server = TritonServer(
            repo,
            venv=args.venv,
            grpc_port=args.port,
            http_port=args.http_port,
            metrics_port=args.metrics_port,
            log_path=args.log or Path(tmp) / "tritonserver.log",
        )
        try:
            server.start()
        except TritonError as exc:
            print(f"triton failed: {exc}", file=sys.stderr, flush=True)
            return 1
        print(f"triton listening on {server.grpc_url}", flush=True)
        print(
            f"triton http on {server.http_url} pid {server.pid} log {server.log_path} "
            f"(ready in {server.startup_seconds:.2f} s)",
            file=sys.stderr,
            flush=True,
        )
        deadline = time.monotonic() + args.max_lifetime
        code = 0
        try:
            while not stop_requested and time.monotonic() < deadline:
                if not server.running:
                    print(f"triton died:\n{server.failure_report()}", file=sys.stderr, flush=True)
                    code = 1
                    break
                time.sleep(0.2)
        finally:
            server.stop()
        return code


if __name__ == "__main__":
    sys.exit(main())
