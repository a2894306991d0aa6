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

RepositoryModelLoad and RepositoryModelUnload take the same path, so that they reach every
worker: the worker that gets the call drops a request in the run directory (`request`); the
control plane publishes it in its next revision (a model's reload generation, or the unloaded
set); every worker applies it, and the call answers with the outcome in its own process.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import GatewayError, Unavailable
from ..registry import Registry
from ..routing import policies_of
from ..settings import Settings

__all__ = [
    "PUBLISHED",
    "REQUESTS",
    "TRAFFIC_FIELDS",
    "ConfigControl",
    "Published",
    "publish",
    "read_json",
    "read_published",
    "write_json",
]

log = logging.getLogger("gateway.control")

TRAFFIC_FIELDS = frozenset({"traffic", "sticky", "shadow", "compare", "shadow_max_inflight", "rollout"})
"""The per-model fields a running gateway changes; everything else takes a restart."""

PUBLISHED = "config.published"  # in the run directory (not *.json: that is where snapshots go)
REQUESTS = "requests"  # the run directory's folder of model load/unload requests
REQUEST_WAIT_S = 120.0  # how long a RepositoryModelLoad waits for the control plane and its load


@dataclass(frozen=True)
class Published:
    revision: int
    source: str  # what made it: file, SIGHUP, admin, rollout, start, model control
    settings: Settings
    reloads: dict[str, int] = field(default_factory=dict)  # model -> reload generation
    unloaded: frozenset[str] = frozenset()  # models unloaded on request
    requests: tuple[str, ...] = ()  # the load/unload requests this revision carries out


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object kept in a file; empty when there is none or it cannot be read."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_json(path: Path, body: dict[str, Any]) -> None:
    """Replace a JSON file atomically (a reader sees the old one or the new one, whole)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(body))
    tmp.replace(path)


def publish(run_dir: Path, published: Published) -> None:
    write_json(
        run_dir / PUBLISHED,
        {
            "revision": published.revision,
            "source": published.source,
            "settings": published.settings.model_dump(mode="json"),
            "reloads": published.reloads,
            "unloaded": sorted(published.unloaded),
            "requests": list(published.requests),
        },
    )


def read_published(run_dir: Path) -> Published | None:
    """The newest revision published in `run_dir`, or None (none yet, or unreadable)."""
    try:
        body = json.loads((run_dir / PUBLISHED).read_text())
        return Published(
            int(body["revision"]),
            str(body["source"]),
            Settings.model_validate(body["settings"]),
            {str(k): int(v) for k, v in body.get("reloads", {}).items()},
            frozenset(body.get("unloaded", ())),
            tuple(body.get("requests", ())),
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
        start = read_published(run_dir)
        self._reloads = dict(start.reloads) if start is not None else {}  # a fresh load has them all
        self.unloaded = start.unloaded if start is not None else frozenset()  # not loaded at start
        self._waiting: dict[str, asyncio.Future[GatewayError | None]] = {}
        self._ids = itertools.count()

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
            outcomes = await self._model_control(published)
            for rid in published.requests:
                waiting = self._waiting.get(rid)
                if waiting is not None and not waiting.done():
                    waiting.set_result(outcomes.get(rid.partition(":")[2]))
            log.info(
                "config revision %d applied from %s%s",
                published.revision,
                published.source,
                "".join(f"; {n}: version(s) {', '.join(v)} failed to load" for n, v in failed.items()),
            )
            return failed

    async def _model_control(self, published: Published) -> dict[str, GatewayError | None]:
        """Unload and (re)load what the revision says; each model's outcome."""
        outcomes: dict[str, GatewayError | None] = {}
        for name in sorted(published.unloaded - self.unloaded):
            if name in self._registry.models:
                await self._registry.unload(name)
            outcomes[name] = None
        for name, generation in sorted(published.reloads.items()):
            if generation > self._reloads.get(name, 0) and name not in published.unloaded:
                try:
                    await self._registry.load(name)
                    outcomes[name] = None
                except GatewayError as exc:
                    outcomes[name] = exc
        self._reloads = dict(published.reloads)
        self.unloaded = published.unloaded
        return outcomes

    async def request(self, op: str, name: str) -> None:
        """RepositoryModelLoad/Unload: ask the control plane, wait for the revision that does it
        here, and raise this process's load error, if any."""
        rid = f"{os.getpid()}-{next(self._ids)}:{name}"
        waiting = self._waiting[rid] = asyncio.get_running_loop().create_future()
        try:
            write_json(self._run_dir / REQUESTS / f"{rid}.json", {"op": op, "model": name, "id": rid})
            try:
                error = await asyncio.wait_for(waiting, REQUEST_WAIT_S)
            except TimeoutError:
                raise Unavailable(
                    f"model {op} of '{name}' was not carried out within {REQUEST_WAIT_S:.0f} s "
                    "(is the control process running?)"
                ) from None
        finally:
            self._waiting.pop(rid, None)
        if error is not None:
            raise error
