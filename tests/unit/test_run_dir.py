"""Run directories: a gateway killed without cleaning up leaves one; the next gateway removes it,
and never one whose gateway (or any process forked from it) still lives."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gateway.supervisor import claim_run_dir, sweep_run_dirs

# Claims a run directory and prints it with the pid of the process left holding it: itself
# ("stay"), or a child it forked before exiting ("fork", as a supervisor's workers outlive it).
_CLAIM = """
import os, sys, time
from gateway.supervisor import claim_run_dir
path = claim_run_dir()
child = os.fork() if sys.argv[1] == "fork" else -1
if child == 0:
    time.sleep(120)
    os._exit(0)
print(path, child if child > 0 else os.getpid(), flush=True)
if child > 0:
    os._exit(0)
time.sleep(120)
"""


def claim(tmp_path: Path, how: str) -> tuple[Path, int]:
    env = {**os.environ, "TMPDIR": str(tmp_path), "PYTHONPATH": str(Path(__file__).parents[2])}
    proc = subprocess.Popen([sys.executable, "-c", _CLAIM, how], stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    path, holder = proc.stdout.readline().split()
    proc.stdout.close()
    if how == "fork":
        assert proc.wait(30) == 0
    return Path(path), int(holder)


def kill(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while True:  # a child of the exited parent is reaped by init; its own child by us
        try:
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return
        except ChildProcessError:
            if not Path(f"/proc/{pid}").exists():
                return
        assert time.monotonic() < deadline
        time.sleep(0.01)


@pytest.mark.parametrize("how", ["stay", "fork"])
def test_a_directory_stays_while_its_holder_lives_and_goes_once_killed(tmp_path: Path, how: str) -> None:
    """The claiming process holds it ("stay"), or its child once it has exited ("fork": as a
    supervisor's workers outlive it for their drain)."""
    path, holder = claim(tmp_path, how)
    try:
        assert sweep_run_dirs(tmp_path) == 0
        assert path.is_dir()
    finally:
        kill(holder)
    assert path.is_dir()  # SIGKILL: nothing cleaned up
    assert sweep_run_dirs(tmp_path) == 1
    assert not path.exists()


def test_a_new_claim_sweeps_and_keeps_its_own(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path, holder = claim(tmp_path, "stay")
    kill(holder)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr("tempfile.tempdir", None)
    mine = claim_run_dir()
    assert mine.parent == tmp_path and not path.exists()
    assert sweep_run_dirs(tmp_path) == 0
    assert mine.is_dir()


def test_directories_without_an_owner_lock_are_left_alone(tmp_path: Path) -> None:
    other = tmp_path / "modelgate-run-old"
    other.mkdir()
    (other / "worker-1.json").write_text("{}")
    assert sweep_run_dirs(tmp_path) == 0
    assert other.is_dir()
