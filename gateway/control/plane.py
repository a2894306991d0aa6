"""The control plane: the one owner of the config being served, and the one seam every change
passes (`_commit`: where the audit trail will hook in).

Changes come from the config file (watched, a ConfigMap's symlink swap included), SIGHUP, the
admin API (gateway/transport/admin.py: these methods, one per RPC) and rollouts (their driver).
Each is validated as a whole; a refused one changes nothing and says every reason. An accepted
one gets the next revision, a log line naming its source and what changed, and is published to
the serving processes (gateway/control/config.py).

What is served is laid from three layers:

    the file            the YAML and the command line's flags, as ops wrote them
    admin changes       per model, the traffic fields the admin API set; kept in
                        `state_dir/admin.json` (a restart keeps them) until that model's traffic
                        changes in the file: then the file's wins (the last change wins)
    rollouts            a rolling-out model's weights are its rollout's (state_dir/traffic.json)

Only a model's traffic fields (gateway/control/config.py's TRAFFIC_FIELDS) change while
running; a change to anything else is refused ("restart to change it").

The plane runs in the control process that the supervisor forks with `--workers N` (gRPC in the
supervisor itself would make re-forking workers unsafe), and in the one process otherwise.
Methods are synchronous and run on one event loop, so changes never interleave.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from ..drift import DriftTracker
from ..errors import FailedPrecondition, InvalidArgument, NotFound
from ..repository import Repository
from ..routing import unknown_names
from ..routing.rollout import quantile
from ..settings import ConfigSource, ModelSettings, Settings, SettingsError
from ..telemetry._histogram import LATENCY_BOUNDS
from ..telemetry._routing import DIFF_BOUNDS, RECENT
from .config import REQUESTS, TRAFFIC_FIELDS, Published, publish, read_json, read_published, write_json
from .cost import CostHistory, cost_report, totals
from .rollout import RolloutDriver, Snapshots

__all__ = ["ADMIN_FILE", "DRIFT_DIR", "Change", "ControlPlane", "restart_only_changes"]

log = logging.getLogger("gateway.control")

ADMIN_FILE = "admin.json"  # in state_dir: the admin API's changes, per model
DRIFT_DIR = "drift"  # in the run directory: live drift references (gateway/drift/live.py)
TICK_S = 0.25  # how often the plane looks at the config file and the rollouts


@dataclass(frozen=True)
class Change:
    revision: int  # the new revision (the current one when nothing changed)
    diff: list[str] = field(default_factory=list)
    applied: bool = True
    errors: list[str] = field(default_factory=list)


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


def traffic_fields(model: ModelSettings | None) -> dict[str, Any]:
    """A model's traffic fields as the YAML would say them (defaults left out)."""
    if model is None:
        return {}
    return model.model_dump(mode="json", include=set(TRAFFIC_FIELDS), exclude_defaults=True)


def traffic_diff(old: Settings, new: Settings) -> list[str]:
    out = []
    for name in sorted(set(old.models) | set(new.models)):
        a, b = traffic_fields(old.models.get(name)), traffic_fields(new.models.get(name))
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                out.append(f"models.{name}.{key}: {_short(a.get(key))} -> {_short(b.get(key))}")
    return out


def _short(value: Any) -> str:
    return "(none)" if value is None else json.dumps(value, separators=(", ", ": "))


def _digest(model: ModelSettings | None) -> str:
    """What tells that a model's traffic changed in the file."""
    text = json.dumps(traffic_fields(model), sort_keys=True)
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def compose(file: Settings, admin: Mapping[str, Mapping[str, Any]]) -> Settings:
    """The file's settings with each admin-changed model's traffic fields replaced. Raises
    SettingsError naming the model and every problem."""
    models = dict(file.models)
    for name, entry in admin.items():
        base = file.models.get(name, ModelSettings()).model_dump(exclude=set(TRAFFIC_FIELDS))
        try:
            models[name] = ModelSettings.model_validate({**base, **entry["fields"]})
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'traffic'}: {e['msg']}" for e in exc.errors()
            )
            raise SettingsError(f"models.{name}: {problems}") from None
    return file.model_copy(update={"models": models})


class ControlPlane:
    def __init__(
        self,
        settings: Settings,
        source: ConfigSource,
        run_dir: Path,
        snapshots: Snapshots = lambda: (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.started = settings  # what the processes started with: only traffic changes later
        self.source = source
        self.run_dir = run_dir
        self._clock = clock
        self._born = clock()
        self.cost = CostHistory()  # the workers' cost sums, for `modelgate cost report --since`
        self.drift = DriftTracker(clock, run_dir / DRIFT_DIR)
        self.drift.configure(settings)
        self.rollouts = RolloutDriver(settings.state_dir, snapshots, clock, versus=self.drift.versus)
        self._admin_path = settings.state_dir / ADMIN_FILE
        self._file = settings
        self._seen = self._file_state()
        self._admin = self._fresh(settings, read_json(self._admin_path).get("models") or {})
        previous = read_published(run_dir)  # a restarted control process goes on from there
        self.revision = previous.revision if previous is not None else 0
        self._reloads = dict(previous.reloads) if previous is not None else {}
        self._unloaded = set(previous.unloaded) if previous is not None else set()
        self._handled: deque[str] = deque(previous.requests if previous is not None else (), maxlen=256)
        try:
            self.layered = compose(settings, self._admin)
        except SettingsError as exc:  # a stored admin change the config no longer allows
            log.error("admin changes dropped: %s", exc)
            self._admin = {}
            self.layered = settings
        self.served = self.rollouts.serve(self.layered)
        self._publish("start")

    @property
    def snapshots(self) -> Snapshots:
        return self.rollouts.snapshots

    @snapshots.setter
    def snapshots(self, value: Snapshots) -> None:
        self.rollouts.snapshots = value

    # -- the seam -----------------------------------------------------------------------------

    def _problems(self, layered: Settings) -> list[str]:
        return restart_only_changes(self.started, layered) + unknown_names(layered)

    def _commit(
        self,
        layered: Settings,
        source: str,
        *,
        admin: dict[str, dict[str, Any]] | None = None,
        file: Settings | None = None,
        force: bool = False,
    ) -> Change:
        """Validate, then serve `layered` under a new revision. Raises SettingsError (every
        problem listed) when refused; nothing changed then. Without `force`, a change that
        changes nothing makes no revision."""
        problems = self._problems(layered)
        if problems:
            raise SettingsError("invalid configuration: " + "; ".join(problems))
        served = self.rollouts.serve(layered)
        diff = traffic_diff(self.served, served)  # what the data plane serves differently
        if not force and not diff:
            return Change(self.revision)
        if admin is not None and admin != self._admin:
            self._admin = admin
            write_json(self._admin_path, {"models": admin})
        if file is not None:
            self._file = file
        self.layered, self.served = layered, served
        self._publish(source, diff)
        return Change(self.revision, diff)

    def _publish(self, source: str, diff: Iterable[str] = ()) -> None:
        self.revision += 1
        self.run_dir.mkdir(parents=True, exist_ok=True)
        published = Published(
            self.revision,
            source,
            self.served,
            dict(self._reloads),
            frozenset(self._unloaded),
            tuple(self._handled),  # the recent ones too: a worker may skip a revision
        )
        publish(self.run_dir, published)
        log.info("revision %d published (from %s): %s", self.revision, source, "; ".join(diff) or "no change")

    # -- the file, SIGHUP and rollouts --------------------------------------------------------

    def _file_state(self) -> Any:
        """(inode, mtime, size, resolved path) of the config file: a ConfigMap's symlink swap
        shows as a new inode."""
        if self.source.path is None:
            return None
        try:
            st = os.stat(self.source.path)
        except OSError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size, os.path.realpath(self.source.path))

    def tick(self) -> None:
        """Model load/unload requests, the file if it changed, then the rollouts' next steps
        (called every TICK_S)."""
        self._model_requests()
        state = self._file_state()
        if state != self._seen:
            self._seen = state
            self.reload("file")
        read: list[list[dict[str, Any]]] = []  # the snapshots, read at most once this tick

        def snapshots() -> list[dict[str, Any]]:
            if not read:
                read.append(list(self.snapshots()))
            return read[0]

        if self.rollouts.tick(self.layered, snapshots):
            try:
                self._commit(self.layered, "rollout", force=True)
            except SettingsError as exc:
                log.error("rollout step refused: %s", exc)
        self.drift.tick(snapshots() if self.drift.monitoring else ())
        now = self._clock()
        if self.cost.due(now):
            self.cost.add(now, totals(snapshots()))

    def snapshot(self) -> dict[str, Any]:
        """The control plane's own figures for /metrics: rollouts, drift scores and alerts."""
        return {**self.drift.snapshot(), **self.rollouts.snapshot()}

    def reload(self, source: str) -> Change | None:
        """Read the file again and serve it (a new revision even when nothing changed). A
        refused file is logged and changes nothing; None then."""
        try:
            file = self.source.load()
            admin = self._fresh(file, self._admin)
            return self._commit(compose(file, admin), source, admin=admin, file=file, force=True)
        except SettingsError as exc:
            log.error("config from %s refused, nothing changed: %s", source, exc)
            return None

    def _model_requests(self) -> None:
        """RepositoryModelLoad/Unload calls that workers passed on: one revision carries them
        to every worker (a model's reload generation rises, or it joins the unloaded set)."""
        folder = self.run_dir / REQUESTS
        done = []
        for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
            body = read_json(path)
            path.unlink(missing_ok=True)
            op, model, rid = body.get("op"), str(body.get("model", "")), str(body.get("id", ""))
            if op == "load":
                self._reloads[model] = self._reloads.get(model, 0) + 1
                self._unloaded.discard(model)
            elif op == "unload":
                self._unloaded.add(model)
            else:
                continue
            self._handled.append(rid)
            done.append(f"RepositoryModel{op.capitalize()} {model}")
        if done:
            self._publish("model control", done)

    def _fresh(self, file: Settings, admin: Mapping[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """The admin changes that still stand: a model whose traffic the file changed since
        takes the file's (the last change wins)."""
        out = {}
        for name, entry in admin.items():
            if entry.get("file") == _digest(file.models.get(name)):
                out[name] = entry
            else:
                log.warning("models.%s: the config file changed its traffic; the admin API's gives way", name)
        return out

    # -- admin operations ---------------------------------------------------------------------

    def config_yaml(self) -> str:
        body = self.served.model_dump(mode="json", exclude_defaults=True)
        return yaml.safe_dump(body, sort_keys=False)

    @property
    def admin_models(self) -> list[str]:
        return sorted(self._admin)

    def apply_config(self, text: str, dry_run: bool = False) -> Change:
        """A whole config, as the file would hold it: its traffic is served over the file's
        (for every model it differs in). Refusals come back in `errors`, not raised."""
        try:
            posted = self.source.load(text)
        except SettingsError as exc:
            return Change(self.revision, applied=False, errors=_problems(str(exc)))
        admin = {
            name: {
                "fields": traffic_fields(posted.models.get(name)),
                "file": _digest(self._file.models.get(name)),
            }
            for name in sorted(set(posted.models) | set(self._file.models))
            if traffic_fields(posted.models.get(name)) != traffic_fields(self._file.models.get(name))
        }
        try:
            layered = compose(self._file, admin)
            errors = restart_only_changes(self.started, posted) + unknown_names(layered)
        except SettingsError as exc:
            return Change(self.revision, applied=False, errors=_problems(str(exc)))
        if errors or dry_run:
            return Change(self.revision, traffic_diff(self.layered, layered), applied=False, errors=errors)
        try:
            return self._commit(layered, "admin ApplyConfig", admin=admin)
        except SettingsError as exc:
            return Change(self.revision, applied=False, errors=_problems(str(exc)))

    def set_traffic(self, model: str, weights: Mapping[str, float]) -> Change:
        self._check_free(model, "set its traffic")
        ordered = dict(
            sorted(
                weights.items(), key=lambda i: (not i[0].isdigit(), int(i[0]) if i[0].isdigit() else 0, i[0])
            )
        )
        fields = dict(traffic_fields(self.layered.models.get(model)), traffic=ordered)
        return self._set_model(model, fields, "admin SetTraffic")

    def load_version(self, model: str, version: str) -> Change:
        """Load a version beside the served ones, with no traffic (weight 0)."""
        self._check_free(model, "load a version")
        fields = traffic_fields(self.layered.models.get(model))
        traffic = dict(fields.get("traffic") or {})
        if version in traffic or version in (fields.get("shadow") or {}):
            return Change(self.revision)  # loaded already
        if not traffic:  # no split yet: the version served now keeps it all
            current = self._served_versions(model)
            if not current:
                raise FailedPrecondition(f"model '{model}' serves no version yet")
            traffic = {max(current, key=int): 100.0}
        traffic[version] = 0.0
        return self._set_model(model, dict(fields, traffic=traffic), "admin LoadVersion")

    def unload_version(self, model: str, version: str) -> Change:
        """Unload a version that takes no traffic (no weight, no shadow share)."""
        self._check_free(model, "unload a version")
        fields = traffic_fields(self.layered.models.get(model))
        traffic = dict(fields.get("traffic") or {})
        shadow = dict(fields.get("shadow") or {})
        if traffic.get(version, 0) > 0:
            raise FailedPrecondition(
                f"model '{model}' version '{version}' takes {traffic[version]:g} of the traffic weight: "
                "move its traffic first (SetTraffic)"
            )
        if version not in traffic and version not in shadow:
            if version in self._served_versions(model):
                raise FailedPrecondition(
                    f"model '{model}' version '{version}' is served by the repository's version policy "
                    "(config.pbtxt), not by traffic: change the policy and call RepositoryModelLoad"
                )
            raise NotFound(f"model '{model}' has no version '{version}' loaded")
        traffic.pop(version, None)
        shadow.pop(version, None)
        fields = {k: v for k, v in fields.items() if k not in ("traffic", "shadow")}
        if traffic:
            fields["traffic"] = traffic
        if shadow:
            fields["shadow"] = shadow
        if "sticky" in fields and not traffic:
            del fields["sticky"]
        return self._set_model(model, fields, "admin UnloadVersion")

    def rollout_command(self, model: str, what: str) -> Change:
        """promote, rollback, pause or resume a model's rollout."""
        self.rollouts.command(model, what)
        try:
            return self._commit(self.layered, f"admin {what}", force=True)
        except SettingsError as exc:
            raise FailedPrecondition(str(exc)) from None

    def _check_free(self, model: str, what: str) -> None:
        self._check_known(model)
        status = self.rollouts.status().get(model)
        if status is not None and status["status"] in ("running", "paused"):
            raise FailedPrecondition(
                f"cannot {what} of '{model}': its rollout ({status['status']}) owns its traffic; "
                "promote or roll it back first, or remove the rollout"
            )

    def _check_known(self, model: str) -> None:
        if model in self.layered.models:
            return
        if model not in Repository(self.layered.model_repository).model_names():
            raise NotFound(f"unknown model '{model}'")

    def _set_model(self, model: str, fields: dict[str, Any], source: str) -> Change:
        admin = dict(self._admin)
        file_model = self._file.models.get(model)
        if fields == traffic_fields(file_model):
            admin.pop(model, None)  # back to what the file says
        else:
            admin[model] = {"fields": fields, "file": _digest(file_model)}
        try:
            return self._commit(compose(self._file, admin), source, admin=admin)
        except SettingsError as exc:
            raise InvalidArgument(str(exc)) from None

    # -- reports (summed over the serving processes' snapshots) -------------------------------

    def _serving(self) -> list[dict[str, Any]]:
        return [s for s in self.snapshots() if "pid" in s]

    def _served_versions(self, model: str) -> list[str]:
        for snap in self._serving():
            found = (snap.get("models") or {}).get(model)
            if found is not None:
                return list(found.get("versions") or [])
        return []

    def served_by_all(self, revision: int) -> bool:
        serving = self._serving()
        return bool(serving) and all((s.get("routing") or {}).get("revision", 0) >= revision for s in serving)

    async def wait_served(self, revision: int, within_s: float = 10.0) -> bool:
        """Wait until every serving process reports `revision` (their snapshots say so)."""
        deadline = time.monotonic() + within_s
        while not self.served_by_all(revision):
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.1)
        return True

    def list_versions(self, model: str = "") -> list[dict[str, Any]]:
        snaps = list(self.snapshots())
        serving = [s for s in snaps if "pid" in s]
        if model:
            self._check_known(model)
        models: dict[str, dict[str, Any]] = {}
        for snap in serving:
            for name, info in (snap.get("models") or {}).items():
                models.setdefault(name, info)
        weights = {}
        for snap in serving[:1]:
            for name, version, share in (snap.get("routing") or {}).get("weights", ()):
                weights[(name, version)] = 100.0 * share
        counts: dict[tuple[str, str], dict[str, Any]] = {}
        for snap in snaps:
            for v in snap.get("versions", ()):
                into = counts.setdefault((v["model"], v["version"]), {"ok": 0, "errors": 0, "latency": None})
                into["ok"] += v["ok"]
                into["errors"] += sum(v["failures"].values())
                lat = v["latency"][0]
                into["latency"] = (
                    lat
                    if into["latency"] is None
                    else [a + b for a, b in zip(into["latency"], lat, strict=True)]
                )
        rows = []
        for name in sorted(models):
            if model and name != model:
                continue
            info = models[name]
            roles = self._roles(name)
            if info["state"] != "READY":
                rows.append(_row(name, "", info["state"], info.get("reason", ""), 0.0, "", None))
                continue
            versions = sorted({*info["versions"], *info.get("failed", {})}, key=int)
            for version in versions:
                failed = info.get("failed", {}).get(version)
                state = "FAILED" if failed is not None and version not in info["versions"] else "READY"
                weight = weights.get((name, version), 0.0 if self._split(name) else 100.0)
                if state != "READY":
                    weight = 0.0
                elif not self._split(name) and version != max(info["versions"], key=int):
                    weight = 0.0
                rows.append(
                    _row(
                        name,
                        version,
                        state,
                        failed or "",
                        weight,
                        roles.get(version, ""),
                        counts.get((name, version)),
                    )
                )
        return rows

    def _split(self, model: str) -> bool:
        found = self.served.models.get(model)
        return found is not None and found.traffic is not None

    def _roles(self, model: str) -> dict[str, str]:
        found = self.served.models.get(model)
        if found is None:
            return {}
        roles = {v: f"shadow {share * 100:g}%" for v, share in found.shadow.items()}
        if found.rollout is not None:
            roles[found.rollout.canary] = "canary"
            baseline = found.rollout_baseline()
            if baseline is not None:
                roles[baseline] = "baseline"
        return roles

    def drift_report(self, model: str, version: str = "") -> list[dict[str, Any]]:
        """The last drift windows of a model's versions, per feature, worst first."""
        self._check_known(model)
        if self.drift.settings_of(model) is None:
            raise FailedPrecondition(
                f"model '{model}' has no drift monitoring (give it `drift:` in the config)"
            )
        return self.drift.report(model, version)

    def drift_reference(self, model: str) -> tuple[bytes, str]:
        """A model's reference profile file (bytes), and where it came from."""
        self._check_known(model)
        if self.drift.settings_of(model) is None:
            raise FailedPrecondition(
                f"model '{model}' has no drift monitoring (give it `drift:` in the config)"
            )
        state = self.drift.reference_state(model)
        path = self.drift.reference_file(model)
        if path is None:
            raise FailedPrecondition(f"model '{model}': no reference yet ({state})")
        try:
            return path.read_bytes(), state
        except OSError as exc:
            raise FailedPrecondition(f"model '{model}': the reference cannot be read ({exc})") from None

    def cost_report(self, model: str = "", since_s: float = 0.0) -> dict[str, Any]:
        """The cost per version from now back `since_s` (0: since the gateway started), as far
        as the kept history reaches (`covered_s` says how far), and the configured prices."""
        if model:
            self._check_known(model)
        now = self._clock()
        then = self.cost.at(now - since_s) if since_s > 0 else None
        prices = (self.started.cost.cpu_core_hour_usd, self.started.cost.gpu_hour_usd)
        report = cost_report(totals(self.snapshots()), then[1] if then is not None else None, prices, model)
        report["covered_s"] = now - (then[0] if then is not None else self._born)
        report["cpu_core_hour_usd"], report["gpu_hour_usd"] = prices
        return report

    def rollout_status(self, model: str = "") -> list[dict[str, Any]]:
        status = self.rollouts.status()
        if model and model not in status:
            raise NotFound(f"model '{model}' has no rollout")
        return [
            dict(entry, model=name) for name, entry in sorted(status.items()) if not model or name == model
        ]

    def shadow_report(self, model: str = "") -> list[dict[str, Any]]:
        if model:
            self._check_known(model)
        pairs: dict[tuple[str, str, str], dict[str, Any]] = {}
        for snap in self.snapshots():
            for s in (snap.get("routing") or {}).get("shadows", ()):
                key = (s["model"], s["primary"], s["shadow"])
                if model and key[0] != model:
                    continue
                into = pairs.setdefault(
                    key,
                    {"outcomes": {}, "argmax": [0, 0], "diff": [0] * (len(DIFF_BOUNDS) + 1),
                     "latency": [0] * (len(LATENCY_BOUNDS) + 1), "recent": []},
                )  # fmt: skip
                for k, n in s["outcomes"].items():
                    into["outcomes"][k] = into["outcomes"].get(k, 0) + n
                into["argmax"] = [a + b for a, b in zip(into["argmax"], s["argmax"], strict=True)]
                into["diff"] = [a + b for a, b in zip(into["diff"], s["diff"][0], strict=True)]
                into["latency"] = [a + b for a, b in zip(into["latency"], s["latency"][0], strict=True)]
                into["recent"] += s.get("recent") or []
        out = []
        for (name, primary, shadow), p in sorted(pairs.items()):
            o = p["outcomes"]
            agreed, disagreed = o.get("agree", 0), o.get("disagree", 0)
            compared = agreed + disagreed
            p99 = quantile(0.99, LATENCY_BOUNDS, p["latency"])
            out.append(
                {
                    "model": name,
                    "primary": primary,
                    "shadow": shadow,
                    "compared": compared,
                    "agreed": agreed,
                    "disagreed": disagreed,
                    "failed": o.get("failed", 0),
                    "dropped": o.get("dropped", 0),
                    "agreement_rate": agreed / compared if compared else 0.0,
                    "argmax_agreement": p["argmax"][1] / p["argmax"][0] if p["argmax"][0] else 0.0,
                    "p99_ms": (p99 or 0.0) * 1e3,
                    "diff_bounds": list(DIFF_BOUNDS),
                    "diff_counts": p["diff"],
                    "recent": sorted(p["recent"], key=lambda d: d["at"])[-RECENT:],
                }
            )
        return out


def _row(
    model: str, version: str, state: str, reason: str, weight: float, role: str, counts: dict[str, Any] | None
) -> dict[str, Any]:
    counts = counts or {"ok": 0, "errors": 0, "latency": None}
    p99 = quantile(0.99, LATENCY_BOUNDS, counts["latency"]) if counts["latency"] else None
    return {
        "model": model,
        "version": version,
        "state": state,
        "reason": reason,
        "weight": round(weight, 6),
        "role": role,
        "requests": counts["ok"] + counts["errors"],
        "errors": counts["errors"],
        "p99_ms": (p99 or 0.0) * 1e3,
    }


def _problems(message: str) -> list[str]:
    """A SettingsError's problems, one per entry."""
    head, _, rest = message.partition(": ")
    return [p for p in rest.split("; ") if p] if head == "invalid configuration" else [message]
