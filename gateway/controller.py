"""The control process: with `--workers N`, the supervisor forks it to run the control plane
(gateway/control/plane.py) and the admin API, while the workers serve.

The supervisor itself stays free of gRPC (it must be able to fork a worker again at any time),
so the admin server lives here. The plane reads the workers' snapshots from the run directory
and publishes each revision there; SIGHUP (forwarded by the supervisor) re-reads the config
file; SIGTERM stops it. It dies with its supervisor, as a worker does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

from ._console import say
from .control import ControlPlane, write_json
from .control.plane import TICK_S
from .server import PARENT_POLL_S, _loop_factory, bind_address
from .telemetry import read_snapshots
from .transport.admin import start_admin_server

__all__ = ["run_controller"]

log = logging.getLogger("gateway.controller")


async def _control(plane: ControlPlane, snapshot_dir: Path) -> int:
    settings = plane.started
    plane.snapshots = lambda: read_snapshots(snapshot_dir)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: plane.reload("SIGHUP"))
    server = None
    if settings.admin_port >= 0:
        try:
            server, port = await start_admin_server(plane, settings.admin_host, settings.admin_port)
        except OSError as exc:
            say(f"modelgate: {exc}", sys.stderr)
            return 2
        say(f"modelgate: admin API on {bind_address(settings.admin_host, port)}")
    parent = os.getppid()
    ticks_per_poll = max(1, round(PARENT_POLL_S / TICK_S))
    tick = 0
    shown: dict[str, Any] | None = None  # the figures last handed to /metrics
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), TICK_S)
        try:
            plane.tick()
            figures = plane.snapshot()
            if figures != shown:  # the supervisor's /metrics reads it beside the workers'
                write_json(snapshot_dir / "control.json", figures)
                shown = figures
        except Exception:  # one bad tick must not stop the control plane
            log.exception("control plane tick failed")
        tick += 1
        if tick % ticks_per_poll == 0 and os.getppid() != parent:
            log.error("the supervisor (pid %d) is gone: stopping", parent)
            break
    if server is not None:
        await server.stop(1.0)
    return 0


def run_controller(plane: ControlPlane, snapshot_dir: Path) -> int:
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        return runner.run(_control(plane, snapshot_dir))
