"""How a config reaches the serving processes: the control plane publishes, each worker follows.

The control plane (gateway/control/plane.py) writes every revision it makes to one file in the
run's directory (`publish`, an atomic rename). Each serving process watches that file and
applies a newer revision (`ConfigControl.poll`): its registry loads and warms the versions the
revision adds while the old snapshot serves, publishes one new snapshot, then drains what lost
its traffic. A worker that starts (or restarts) later begins from the newest revision
(`read_published`), so every worker serves the same revision, and the revision number in each
answer means the same thing in all of them.

The control plane has already validated the config; a worker only reports versions that failed
to load (they get no traffic).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..registry import Registry
from ..routing import policies_of
from ..settings import Settings

__all__ = ["PUBLISHED", "TRAFFIC_FIELDS", "ConfigControl", "Published", "publish", "read_published"]

log = logging.getLogger("gateway.control")

TRAFFIC_FIELDS = frozenset({"traffic", "sticky", "shadow", "compare", "shadow_max_inflight", "rollout"})
"""The per-model fields a running gateway changes; everything else takes a restart."""

PUBLISHED = "config.published"  # in the run directory (not *.json: that is where snapshots go)


@dataclass(frozen=True)
class Published:
    revision: int
    source: str  # what made it: file, SIGHUP, admin, rollout, start
    settings: Settings


def publish(run_dir: Path, published: Published) -> None:
    path = run_dir / PUBLISHED
    tmp = path.with_suffix(".tmp")
    body = {
        "revision": published.revision,
        "source": published.source,
        "settings": published.settings.model_dump(mode="json"),
    }
    tmp.write_text(json.dumps(body))
    tmp.replace(path)


def read_published(run_dir: Path) -> Published | None:
    """The newest revision published in `run_dir`, or None (none yet, or unreadable)."""
    try:
        body = json.loads((run_dir / PUBLISHED).read_text())
        return Published(
            int(body["revision"]), str(body["source"]), Settings.model_validate(body["settings"])
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


class ConfigControl:
    """A serving process's side: apply each revision the control plane publishes in `run_dir`."""

    def __init__(self, registry: Registry, settings: Settings, run_dir: Path) -> None:
        self._registry = registry
        self._run_dir = run_dir
        self.settings = settings
        self._lock = asyncio.Lock()
        self._seen: Any = self._file_state()

    def _file_state(self) -> Any:
        try:
            st = os.stat(self._run_dir / PUBLISHED)
        except OSError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    async def poll(self) -> None:
        """Apply the published config if it is newer than the one served (the caller polls)."""
        state = self._file_state()
        if state == self._seen:
            return
        self._seen = state
        published = await asyncio.to_thread(read_published, self._run_dir)
        if published is not None and published.revision > self._registry.revision:
            await self.apply(published)

    async def apply(self, published: Published) -> dict[str, dict[str, str]]:
        """Serve a published revision; returns the versions that failed to load (by model)."""
        async with self._lock:
            if published.revision <= self._registry.revision:
                return {}
            failed = await self._registry.apply(policies_of(published.settings), published.revision)
            self.settings = published.settings
            log.info(
                "config revision %d applied from %s%s",
                published.revision,
                published.source,
                "".join(f"; {n}: version(s) {', '.join(v)} failed to load" for n, v in failed.items()),
            )
            return failed
