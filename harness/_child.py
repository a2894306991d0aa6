"""One way to run a helper server in a child process: `python -m harness.<name> ...` that prints
`<name> listening on 127.0.0.1:PORT` once bound and stops cleanly on SIGTERM.

The bare server, the bare proxy and the recorder are all started this way, as context managers;
the child's later output is drained by a daemon thread so a chatty server never blocks on a full
pipe."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from types import TracebackType
from typing import Self

__all__ = ["ChildServer"]

_LISTEN_RE = re.compile(r"listening on (127\.0\.0\.1:(\d+))")


class ChildServer:
    """`python -m <module> <args>` in its own process group; `address` once it listens."""

    def __init__(
        self,
        module: str,
        *args: str,
        startup_timeout: float = 20.0,
        env: dict[str, str] | None = None,
        python: str | None = None,
    ) -> None:
        self.command = [python or sys.executable, "-m", module, *args]
        self.startup_timeout = startup_timeout
        self.env = env
        self.proc: subprocess.Popen[str] | None = None
        self.address = ""
        self.lines: list[str] = []
        self._reader: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self.address.rsplit(":", 1)[1])

    @property
    def pid(self) -> int:
        assert self.proc is not None, "not started"
        return self.proc.pid

    def start(self) -> Self:
        self.proc = proc = subprocess.Popen(
            self.command,
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
            env={**os.environ, **self.env} if self.env else None,
        )
        listening = threading.Event()

        def read() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                self.lines.append(line)
                if not self.address and (match := _LISTEN_RE.search(line)):
                    self.address = match.group(1)
                    listening.set()
            listening.set()  # EOF: the process ended

        self._reader = threading.Thread(target=read, name=f"{self.command[2]}-stdout", daemon=True)
        self._reader.start()
        if not listening.wait(self.startup_timeout) or not self.address:
            code = self.stop()
            raise RuntimeError(
                f"{self.command[2]} did not start within {self.startup_timeout:g} s (exit code {code}):\n"
                + "".join(self.lines[-20:])
            )
        return self

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, wait, SIGKILL if it hangs; its exit code (None if it never started)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self._reader is not None:
            self._reader.join(5)  # all it printed is in `lines`
        return self.proc.returncode

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
