"""The one seam every traffic change passes: the config file (watched), SIGHUP, and next the
admin API.

    reload()  read the config file again (the same sources as at start: YAML < GATEWAY_* <
              the command line's flags) and apply it
    apply()   validate the whole new config, load the versions it adds while the old snapshot
              serves, publish one new snapshot (a new revision), drain what lost its traffic

A config is refused as a whole, with every problem listed, and then nothing changes: a file that
does not parse or validate, a version no repository or remote entry holds, or a change to a
field that only a restart can change (ports, batching, remote versions, ...). Each applied
change logs its revision, its source and what changed.

With `--workers N`, each worker watches the file and takes SIGHUP (the supervisor forwards it),
so every worker serves the new revision within one poll interval.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass
from typing import Any

from ..registry import Registry
from ..routing import policies_of, unknown_versions
from ..settings import RUNTIME_FILE, ConfigSource, ModelSettings, Settings, SettingsError

__all__ = ["Applied", "ConfigControl"]

log = logging.getLogger("gateway.control")

TRAFFIC_FIELDS = frozenset({"traffic", "sticky", "shadow", "compare", "shadow_max_inflight", "rollout"})
"""The per-model fields a running gateway changes; everything else takes a restart."""


@dataclass(frozen=True)
class Applied:
    revision: int
    changed: dict[str, dict[str, Any]]  # model -> the traffic fields it now has
    failed: dict[str, dict[str, str]]  # model -> version -> why it did not load (gets no traffic)


def restart_only_changes(old: Settings, new: Settings) -> list[str]:
    """The fields that differ between two configs and that only a restart changes."""
    problems = []
    before, after = old.model_dump(exclude={"models"}), new.model_dump(exclude={"models"})
    problems += [f"{key} (restart to change it)" for key in sorted(before) if before[key] != after[key]]
    empty = ModelSettings()  # a model the config does not mention
    for name in sorted(set(old.models) | set(new.models)):
        a = old.models.get(name, empty).model_dump(exclude=set(TRAFFIC_FIELDS))
        b = new.models.get(name, empty).model_dump(exclude=set(TRAFFIC_FIELDS))
        problems += [f"models.{name}.{key} (restart to change it)" for key in sorted(a) if a[key] != b[key]]
    return problems


def traffic_of(settings: Settings) -> dict[str, dict[str, Any]]:
    return {
        name: model.model_dump(include=set(TRAFFIC_FIELDS), exclude_defaults=True)
        for name, model in settings.models.items()
    }


class ConfigControl:
    def __init__(self, registry: Registry, settings: Settings, source: ConfigSource | None = None) -> None:
        self._registry = registry
        self._source = source or ConfigSource()
        self.settings = settings
        self._lock = asyncio.Lock()
        self._seen = self._file_state()

    def _file_state(self) -> dict[str, Any]:
        """What tells a changed config file ("file") or runtime traffic file ("rollout"): each
        one's (resolved) inode, mtime and size. A Kubernetes ConfigMap swaps a symlink; the path
        then resolves to a new inode."""
        paths = {"rollout": self.settings.state_dir / RUNTIME_FILE}
        if self._source.path is not None:
            paths["file"] = self._source.path
        state: dict[str, Any] = {}
        for role, path in paths.items():
            try:
                st = os.stat(path)
            except OSError:
                continue
            state[role] = (st.st_ino, st.st_mtime_ns, st.st_size, os.path.realpath(path))
        return state

    async def reload(self, source: str) -> Applied | None:
        """Read the config again and apply it; a refused config is logged and changes nothing.
        None when it was refused."""
        try:
            settings = await asyncio.to_thread(self._source.load)
        except SettingsError as exc:
            log.error("config from %s refused, nothing changed: %s", source, exc)
            return None
        try:
            return await self.apply(settings, source)
        except SettingsError as exc:
            log.error("config from %s refused, nothing changed: %s", source, exc)
            return None

    async def apply(self, settings: Settings, source: str) -> Applied:
        """Validate and apply a whole config. Raises SettingsError (every problem listed) when
        it is refused; nothing has changed then."""
        async with self._lock:
            problems = restart_only_changes(self.settings, settings)
            problems += await asyncio.to_thread(unknown_versions, settings)
            if problems:
                raise SettingsError("invalid configuration: " + "; ".join(problems))
            before, after = traffic_of(self.settings), traffic_of(settings)
            failed = await self._registry.apply(policies_of(settings))
            self.settings = settings
            changed = {
                n: after.get(n, {}) for n in sorted(set(before) | set(after)) if before.get(n) != after.get(n)
            }
            applied = Applied(self._registry.revision, changed, failed)
            log.info(
                "config revision %d applied from %s: %s%s",
                applied.revision,
                source,
                "; ".join(f"{n}: {t or 'no traffic policy'}" for n, t in changed.items())
                or "no traffic change",
                "".join(f"; {n}: version(s) {', '.join(v)} failed to load" for n, v in failed.items()),
            )
            return applied

    async def poll(self) -> Applied | None:
        """Apply the config if its file or the runtime traffic file (a rollout's steps) changed
        since last seen (the caller polls)."""
        state = self._file_state()
        if state == self._seen:
            return None
        source = "file" if state.get("file") != self._seen.get("file") else "rollout"
        self._seen = state
        return await self.reload(source)
