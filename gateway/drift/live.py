"""Reference profiles learned from live traffic (`drift: {reference: live}`), one for all workers.

    worker(s)                                   control plane (gateway/drift/tracker.py)
    the baseline's monitor keeps its last       sums the rows the dumps hold; once they reach
    `rows` rows per tensor (LiveRows), and      `rows`, learns one profile from all of them
    dumps them to DIR/<model>/rows.<pid>.npz    (profile_from_rows) and writes
    every second while they grow                DIR/<model>/reference.npz (an atomic rename)
    every monitor of the model loads            scores every version's windows against it
    DIR/<model>/reference.npz and counts
    against it

DIR is the run directory's `drift/` folder. The learned profile is an ordinary profile file:
`modelgate profile save MODEL -o FILE` (admin GetDriftReference) fetches it, and naming that
file as `reference:` freezes it. It is learned once per run: a restart learns
again. Until it is learned there is no window and no score; the report says how far it is
("reference filling: k of N rows").
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..settings import LiveReference, Settings
from .monitor import DriftMonitor, LiveRows, Role
from .profile import Profile, ProfileError, load_profile, profile_from_rows

__all__ = ["LiveLearner", "LiveReferences", "profile_path"]

log = logging.getLogger("gateway.drift")

Check = Callable[[Profile], list[str]]
"""A learned profile's mismatches with a version's signature (Profile.check, bound)."""


def profile_path(folder: Path, model: str) -> Path:
    return folder / model / "reference.npz"


def _dump_path(folder: Path, model: str, worker: str) -> Path:
    return folder / model / f"rows.{worker}.npz"


def _dumps(folder: Path, model: str) -> list[Path]:
    return sorted((folder / model).glob("rows.*.npz")) if (folder / model).is_dir() else []


def _write_atomic(path: Path, arrays: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    with open(tmp, "wb") as out:
        np.savez(out, **arrays)
    tmp.replace(path)


class LiveReferences:
    """A worker's side: the monitors of models with a live reference, the baseline's rows
    dumped for the control plane, and the learned profile handed to every monitor (`poll`)."""

    def __init__(self, folder: Path, settings: Settings, worker: str = "") -> None:
        self.folder = folder
        self._settings = settings
        self._worker = worker or str(os.getpid())  # names its dump file
        self._monitors: dict[tuple[str, str], tuple[DriftMonitor, Check]] = {}
        self._dumped: dict[tuple[str, str], int] = {}  # rows seen when last dumped
        self._profiles: dict[str, tuple[int, Profile | None]] = {}  # model -> (mtime, profile)

    @property
    def active(self) -> bool:
        return any(m.drift is not None and m.drift.live for m in self._settings.models.values())

    def monitor(
        self,
        model: str,
        version: str,
        versions: Iterable[str],
        batched: bool,
        check: Check,
        previous: DriftMonitor | None,
    ) -> DriftMonitor | None:
        """A new version's monitor (`previous`: a reloaded version's, kept); None when the model
        has no live reference."""
        spec = self._settings.models.get(model)
        live = spec.drift.live if spec is not None and spec.drift is not None else None
        if spec is None or live is None:
            return None
        if previous is not None:
            monitor = previous
        else:
            learns = spec.live_reference_version(versions) == version
            monitor = DriftMonitor(
                None,
                batched=batched,
                label=f"{model}/{version}",
                live=LiveRows(live.rows) if learns else None,
            )
        self._monitors[(model, version)] = (monitor, check)
        return monitor

    def poll(self) -> None:
        """Blocking (run it off the loop): hand a newly learned profile to the monitors still
        without one; dump a learning monitor's rows when they grew."""
        for (model, version), (monitor, check) in list(self._monitors.items()):
            if monitor.profile is not None:
                continue
            profile = self._learned(model)
            if profile is not None:
                problems = check(profile)
                if problems:
                    log.error(
                        "model '%s' version %s: drift monitoring off, the live reference does not fit: %s",
                        model, version, "; ".join(problems),
                    )  # fmt: skip
                    del self._monitors[(model, version)]
                else:
                    monitor.use(profile)
                continue
            live = monitor.live
            if live is None or live.seen == self._dumped.get((model, version), 0):
                continue
            held = monitor.live_rows()
            if held is None or not held[0]:
                continue
            rows, arrays = held
            self._dumped[(model, version)] = live.seen
            meta = {
                "version": version,
                "rows": rows,
                "tensors": [{"name": n, "role": role} for n, (role, _) in arrays.items()],
            }
            body: dict[str, Any] = {"meta": np.array(json.dumps(meta))}
            body.update({f"a{i}": a for i, (_, a) in enumerate(arrays.values())})
            _write_atomic(_dump_path(self.folder, model, self._worker), body)

    def _learned(self, model: str) -> Profile | None:
        path = profile_path(self.folder, model)
        try:
            mtime = path.stat().st_mtime_ns
        except OSError:
            return None
        cached = self._profiles.get(model)
        if cached is None or cached[0] != mtime:
            try:
                cached = self._profiles[model] = (mtime, load_profile(path))
            except ProfileError as exc:
                log.error("model '%s': the live reference cannot be read: %s", model, exc)
                cached = self._profiles[model] = (mtime, None)
        return cached[1]


class LiveLearner:
    """The control plane's side: how many rows the workers' dumps hold, and the profile learned
    from them once they are enough."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._meta: dict[Path, tuple[int, dict[str, Any]]] = {}  # path -> (mtime, meta)

    def path(self, model: str) -> Path:
        """Where the model's learned profile is (or will be)."""
        return profile_path(self.folder, model)

    def learned(self, model: str) -> Profile | None:
        """The profile learned earlier in this run (a restarted control process finds it)."""
        path = profile_path(self.folder, model)
        try:
            return load_profile(path) if path.exists() else None
        except ProfileError as exc:
            log.error("model '%s': the live reference cannot be read, learning again: %s", model, exc)
            return None

    def filling(self, model: str) -> tuple[int, str]:
        """Rows the dumps hold (every worker's, a dead one's too), and the version they are of."""
        rows, version = 0, ""
        for path in _dumps(self.folder, model):
            meta = self._read_meta(path)
            if meta is not None:
                rows += int(meta["rows"])
                version = str(meta["version"])
        return rows, version

    def _read_meta(self, path: Path) -> dict[str, Any] | None:
        try:
            mtime = path.stat().st_mtime_ns
            cached = self._meta.get(path)
            if cached is None or cached[0] != mtime:
                with np.load(path, allow_pickle=False) as data:
                    cached = self._meta[path] = (mtime, json.loads(str(data["meta"])))
            return cached[1]
        except (OSError, ValueError, KeyError):
            return None  # being replaced, or gone: the next tick reads it

    def learn(self, model: str, live: LiveReference) -> Profile | None:
        """The profile of every row the dumps hold, written for the workers, once they hold
        `live.rows`; None before."""
        rows, version = self.filling(model)
        if rows < live.rows:
            return None
        parts: dict[str, tuple[Role, list[NDArray[Any]]]] = {}
        for path in _dumps(self.folder, model):
            try:
                with np.load(path, allow_pickle=False) as data:
                    meta = json.loads(str(data["meta"]))
                    if str(meta["version"]) != version:
                        continue
                    for i, t in enumerate(meta["tensors"]):
                        parts.setdefault(t["name"], (t["role"], []))[1].append(np.asarray(data[f"a{i}"]))
            except (OSError, ValueError, KeyError):
                return None  # try again next tick
        try:
            tensors = {n: (role, np.concatenate(a)) for n, (role, a) in parts.items()}
            source = f"live: {rows} rows of version {version}, learned {time.strftime('%Y-%m-%d %H:%M:%S')}"
            profile = profile_from_rows(
                model, version, tensors, live.bins, categorical=live.categorical, source=source
            )
        except (ProfileError, ValueError) as exc:
            log.error("model '%s': the live reference cannot be learned: %s", model, exc)
            return None
        path = profile_path(self.folder, model)
        tmp = path.with_name(f".{path.name}.tmp")
        profile.save(tmp)
        tmp.replace(path)
        for dump in _dumps(self.folder, model):
            dump.unlink(missing_ok=True)
        log.info(
            "model '%s': drift reference learned from %d live rows of version %s (%s)",
            model,
            rows,
            version,
            path,
        )
        return profile
