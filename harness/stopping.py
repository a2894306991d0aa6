"""How the helper servers (peers, load-test servers) wait to be stopped."""

from __future__ import annotations

import asyncio
import signal


async def until_stopped(max_seconds: float | None) -> bool:
    """Wait for SIGTERM or SIGINT, or `max_seconds` at most (None: no bound), so a forgotten
    server stops by itself. True when a signal came."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await asyncio.wait_for(stop.wait(), max_seconds)
    except TimeoutError:
        return False
    return True
