"""The control plane process: with `--workers N`, N worker processes share one gRPC port.

The supervisor reserves the port (a bound, non-listening SO_REUSEPORT socket, which also turns
port 0 into a concrete port every worker can share) and forks the workers before any gRPC object
or ONNX Runtime session exists. It also forks the control process (gateway/controller.py: the
control plane, its rollouts and the admin API), which publishes each config revision in the run
directory for the workers. Workers drop snapshots of their counters in that directory; the
supervisor serves their sum on /metrics. It forwards SIGTERM/SIGINT to its children (a second
signal stops them at once) and SIGHUP to the control process (which re-reads the config),
restarts a child that dies on its own, and exits 0 after a clean drain. With one worker
everything runs in one process instead (gateway/server.py), on the same code paths.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import json
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType
from typing import IO, TYPE_CHECKING

from ._console import say
from .settings import ConfigSource, Settings

if TYPE_CHECKING:
    from .control import ControlPlane

__all__ = ["run"]

log = logging.getLogger("gateway.supervisor")
_RESTART_FIRST_S, _RESTART_MAX_S = 1.0, 30.0  # a crash-looping worker waits 1, 2, 4 ... 30 s
_STABLE_S = 10.0  # a worker that lived this long was not crash-looping: its backoff starts over
_PR_SET_PDEATHSIG, _PR_SET_NAME = 1, 15
_TICK_S = 0.25  # how often the supervisor reaps its children
CONTROL = -1  # the control process's index among the children


def _reserve_port(host: str, port: int) -> tuple[socket.socket, IO[bytes]]:
    """The port the workers share, and a lock that only this supervisor holds on it: SO_REUSEPORT
    alone would let a second gateway bind the same port and take half the connections."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host.strip("[]"), port))
        bound = sock.getsockname()[1]
        lock = open(Path(tempfile.gettempdir()) / f"modelgate-{host.strip('[]')}-{bound}.lock", "ab")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            lock.close()
            raise OSError(errno.EADDRINUSE, "in use by another modelgate") from None
    except OSError:
        sock.close()
        raise
    return sock, lock


def _child_setup(name: str) -> None:
    """Linux: SIGTERM this process (a child) when its supervisor dies, even by SIGKILL (it also
    checks its parent every second, on every platform); and name it (`ps`, /proc/PID/comm:
    modelgate-w0, modelgate-ctl) so that ops can tell the processes apart."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        libc.prctl(_PR_SET_NAME, ctypes.c_char_p(name.encode()[:15]), 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _check_free(host: str, port: int) -> None:
    """Raise OSError when `port` cannot be bound now (checked before forking, so a busy metrics
    port stops the start instead of leaving workers behind)."""
    if port <= 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host.strip("[]"), port))


_RUN_PREFIX, _OWNER = "modelgate-run-", "owner.lock"
_claimed: list[int] = []  # the lock descriptors of this process's run directories (held until exit)


def claim_run_dir() -> Path:
    """A new run directory, after removing those that gateways killed without cleaning up left.

    The directory holds a file locked (flock) for as long as any process of its gateway lives: the
    lock belongs to the open file, which forked workers share, and the kernel drops it when the last
    of them exits, SIGKILL included. A directory whose lock nobody holds is stale. The lock file is
    locked before it gets its name, so a sweep never sees one that is not locked yet; directories
    without it (not made here) are left alone."""
    removed = sweep_run_dirs(Path(tempfile.gettempdir()))
    if removed:
        log.info("removed %d run directories left by gateways that were killed", removed)
    path = Path(tempfile.mkdtemp(prefix=_RUN_PREFIX))
    fd = os.open(path / f".{_OWNER}", os.O_CREAT | os.O_WRONLY, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.rename(path / f".{_OWNER}", path / _OWNER)
    _claimed.append(fd)
    return path


def sweep_run_dirs(root: Path) -> int:
    """Remove the run directories under `root` whose owner lock no live process holds."""
    removed = 0
    for lock_path in root.glob(f"{_RUN_PREFIX}*/{_OWNER}"):
        try:
            fd = os.open(lock_path, os.O_RDONLY)
        except OSError:
            continue  # removed meanwhile, or not ours to read
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            continue  # held: its gateway lives
        else:
            shutil.rmtree(lock_path.parent, ignore_errors=True)
            removed += not lock_path.parent.exists()
        finally:
            os.close(fd)
    return removed


def run(settings: Settings, source: ConfigSource | None = None) -> int:
    from .control import ControlPlane

    run_dir = claim_run_dir()
    try:
        plane = ControlPlane(settings, source or ConfigSource(), run_dir)  # publishes revision 1
        if settings.workers == 1:
            from .server import run_worker

            return run_worker(settings, run_dir, plane)
        return _Supervisor(settings, plane, run_dir).run()
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


class _Supervisor:
    def __init__(self, settings: Settings, plane: ControlPlane, run_dir: Path) -> None:
        self.settings = settings
        self.plane: ControlPlane | None = plane  # the first control process's (a restart builds anew)
        self.source = plane.source
        self.workers: dict[int, int] = {}  # pid -> worker index
        self.started: dict[int, float] = {}  # worker index -> when it was last forked
        self.backoff: dict[int, float] = {}  # worker index -> its next restart's wait
        self.pending: dict[int, float] = {}  # worker index -> when it is restarted
        self.restarts = 0
        self.missed = 0  # workers killed for a missed heartbeat
        self.signals = 0
        self.died_before_stop: set[int] = set()  # children found dead (unreaped) by the stop signal
        self.snapshot_dir = run_dir

    def _spawn(self, index: int, port: int) -> None:
        self.started[index] = time.monotonic()
        pid = os.fork()
        if pid == 0:  # the worker
            code = 1
            try:
                for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                    signal.signal(sig, signal.SIG_DFL)
                _child_setup("modelgate-ctl" if index == CONTROL else f"modelgate-w{index}")
                if index == CONTROL:
                    code = self._control()
                else:
                    from .server import run_worker

                    code = run_worker(
                        self.settings,
                        self.snapshot_dir,
                        grpc_port=port,
                        metrics_port=-1,
                        label=f"[{index}]",
                        snapshot_dir=self.snapshot_dir,
                        reuse_port=True,
                    )
            except BaseException:
                log.exception("%s failed", _name(index))
            finally:
                os._exit(code)
        self.workers[pid] = index
        if index == CONTROL:
            self.plane = None  # it is the child's now; a restarted one reads the state afresh

    def _control(self) -> int:
        """The control process's life (in the child)."""
        from .control import ControlPlane
        from .controller import run_controller

        plane = self.plane or ControlPlane(self.settings, self.source, self.snapshot_dir)
        return run_controller(plane, self.snapshot_dir)

    def _check_heartbeats(self) -> None:
        """Kill a worker whose snapshot (written every second once it serves) went stale: its
        loop is hung or the process is stopped. It is then reaped and replaced as if it died."""
        limit = self.settings.worker_heartbeat_s
        if limit <= 0:
            return
        now = time.time()
        for pid, index in list(self.workers.items()):
            try:
                age = now - (self.snapshot_dir / f"worker-{pid}.json").stat().st_mtime
            except OSError:
                continue  # still loading: it has not served yet
            if age > limit:
                log.error("%s (pid %d) missed its heartbeat for %.1f s: replacing it", _name(index), pid, age)
                self.missed += 1
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

    def _schedule_restart(self, index: int, pid: int, code: int) -> None:
        """Restart a worker that died on its own, backing off while it keeps dying young."""
        lived = time.monotonic() - self.started.get(index, 0.0)
        wait = _RESTART_FIRST_S if lived >= _STABLE_S else self.backoff.get(index, _RESTART_FIRST_S)
        self.backoff[index] = min(wait * 2, _RESTART_MAX_S)
        self.pending[index] = time.monotonic() + wait
        self.restarts += 1
        looping = " (crash loop: backing off)" if lived < _STABLE_S and wait > _RESTART_FIRST_S else ""
        log.error(
            "%s (pid %d) exited with %d after %.1f s; restarting in %.0f s%s",
            _name(index), pid, code, lived, wait, looping,
        )  # fmt: skip
        self._write_state()

    def _write_state(self) -> None:
        """The supervisor's own counters, beside the workers' snapshots, for /metrics."""
        crash_looping = sum(1 for i in self.pending if self.backoff.get(i, 0) > 2 * _RESTART_FIRST_S)
        path = self.snapshot_dir / "supervisor.json"
        tmp = path.with_suffix(".tmp")
        state = {"restarts": self.restarts, "crash_looping": crash_looping, "heartbeats_missed": self.missed}
        tmp.write_text(json.dumps({"supervisor": state}))
        tmp.replace(path)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGHUP:  # re-read the config: the control process does
            for pid, index in self.workers.items():
                if index == CONTROL:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGHUP)
            return
        self.signals += 1
        if self.signals == 1:  # a child that died before the stop was not cut by it
            for pid in self.workers:
                with contextlib.suppress(ChildProcessError):
                    if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                        self.died_before_stop.add(pid)
        for pid in self.workers:
            try:
                # 1st: drain, 2nd: the workers stop at once, 3rd: kill
                os.kill(pid, signum if self.signals <= 2 else signal.SIGKILL)
            except ProcessLookupError:
                pass

    def run(self) -> int:
        s = self.settings
        try:
            holder, lock = _reserve_port(s.host, s.grpc_port)
        except OSError as exc:
            print(f"modelgate: cannot bind gRPC to {s.host}:{s.grpc_port}: {exc.strerror}", file=sys.stderr)
            return 2
        port = holder.getsockname()[1]
        for what, host, checked in (
            ("metrics", s.host, s.metrics_port),
            ("the admin API", s.admin_host, s.admin_port),
        ):
            try:
                _check_free(host, checked)
            except OSError as exc:
                print(f"modelgate: cannot bind {what} to {host}:{checked}: {exc.strerror}", file=sys.stderr)
                holder.close()
                lock.close()
                return 2
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._on_signal)
        for index in range(s.workers):
            self._spawn(index, port)
        self._spawn(CONTROL, port)
        say(f"modelgate: {s.workers} workers sharing gRPC port {port}")
        self._write_state()

        from prometheus_client import CollectorRegistry

        from .telemetry import SnapshotCollector, retire_worker, serve_metrics

        metrics_server = None
        if s.metrics_port >= 0:
            registry = CollectorRegistry(auto_describe=False)
            registry.register(SnapshotCollector.from_directory(self.snapshot_dir))
            metrics_server, metrics_port = serve_metrics(s.metrics_port, s.host, registry)
            say(f"modelgate: metrics on http://{s.host}:{metrics_port}/metrics")

        status = 0
        try:
            while self.workers or (self.pending and not self.signals):
                try:
                    pid, wait_status = os.waitpid(-1, os.WNOHANG)
                except ChildProcessError:
                    pid, wait_status = 0, 0
                except InterruptedError:
                    continue
                if pid == 0:  # nobody exited: restarts that are due, then the control plane's turn
                    if not self.signals:
                        now = time.monotonic()
                        for index in [i for i, at in self.pending.items() if at <= now]:
                            del self.pending[index]
                            self._spawn(index, port)
                        self._check_heartbeats()
                    time.sleep(_TICK_S)
                    continue
                if pid not in self.workers:
                    continue
                index = self.workers.pop(pid)
                code = os.waitstatus_to_exitcode(wait_status)
                retire_worker(self.snapshot_dir, pid)  # its counters stay, its gauges go
                # A SIGKILL the stop did not send (it sends one only at the third signal) came
                # from elsewhere, maybe just before the stop while the child was still exiting.
                if self.signals and (
                    pid in self.died_before_stop or (code == -signal.SIGKILL and self.signals < 3)
                ):
                    log.error("%s (pid %d) exited with %d before the stop", _name(index), pid, code)
                    continue
                if self.signals:  # stopped by the signal passed on (maybe before it could drain)
                    clean = code in (0, -signal.SIGTERM, -signal.SIGINT)
                    status = status or (0 if clean else 1)
                    continue
                self._schedule_restart(index, pid, code)
        finally:
            holder.close()
            lock.close()
            if metrics_server is not None:
                metrics_server.shutdown()
                metrics_server.server_close()
        say("modelgate: stopped")
        return status


def _name(index: int) -> str:
    return "the control process" if index == CONTROL else f"worker {index}"
