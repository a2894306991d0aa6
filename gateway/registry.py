"""Loaded models and their versions.

The table of models is an immutable mapping replaced as a whole when a model is loaded or
unloaded, so the hot path (`get`) reads it without a lock and never sees a half-made change.
A reload builds and warms every new version before it swaps the table; if anything fails the
old versions keep serving. Versions that leave the table are closed once their in-flight calls
could have finished.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from ._proto import model_config_pb2 as mc
from .backends import Backend
from .batching import AdaptiveController, Batcher, BatchingPolicy, RunBatch
from .errors import GatewayError, LoadError, NotFound, Unavailable
from .repository import ModelSource, Repository
from .routing import NO_POLICY, Router, TrafficPolicy
from .telemetry import Metrics, VersionMetrics
from .tensors import DATATYPES, Signature

__all__ = ["BackendFactory", "Model", "ModelVersion", "Registry"]

log = logging.getLogger(__name__)

BackendFactory = Callable[[ModelSource, str], Awaitable[Backend]]
"""(source, version) -> a loaded, warmed backend (its info names the artifact's digest)."""

BatchingFactory = Callable[[ModelSource, Backend], tuple[BatchingPolicy | None, float | None]]
"""(source, backend) -> (the version's batching policy or None, the p99 target in ms or None)."""

DriftFactory = Callable[[ModelSource, str, Backend, Any], Any]
"""(source, version, backend, the version's previous monitor) -> its DriftMonitor (gateway/drift),
or None."""

READY, LOADING, UNAVAILABLE, FAILED = "READY", "LOADING", "UNAVAILABLE", "FAILED"
RETRY_FIRST_S, RETRY_MAX_S = 1.0, 30.0  # a failed load is tried again after 1, 2, 4, ... 30 s
"""A model's states. UNAVAILABLE: unloaded on request; FAILED: its last load failed (reason says
why). RepositoryIndex reports FAILED as Triton does, UNAVAILABLE with the reason."""


@dataclass(eq=False)
class ModelVersion:
    model: str
    version: str
    backend: Backend
    metrics: VersionMetrics
    run: RunBatch  # the backend call: backend.infer, or its drift monitor around it
    batcher: Batcher | None = None  # None: every request is its own backend call

    @property
    def signature(self) -> Signature:
        return self.backend.signature

    async def close(self) -> None:
        """Serve what is queued, then release the backend."""
        if self.batcher is not None:
            await self.batcher.close()
        await self.backend.close()


@dataclass(eq=False)
class Model:
    name: str
    state: str
    config: mc.ModelConfig = field(default_factory=mc.ModelConfig)
    versions: Mapping[str, ModelVersion] = field(default_factory=dict)  # the loaded (ready) ones
    reason: str = ""
    failed: Mapping[str, str] = field(default_factory=dict)  # version -> why its load failed
    router: Router[ModelVersion] = field(default_factory=lambda: Router(NO_POLICY, {}))

    def pinned(self, version: str) -> ModelVersion:
        """The version a request names: NOT_FOUND when the model never declared it, UNAVAILABLE
        when it is declared but not loaded."""
        try:
            found = self.router.pinned(version)
        except KeyError:
            raise NotFound(
                f"model '{self.name}' has no version '{version}' "
                f"(serving: {', '.join(sorted(self.versions, key=int))})"
            ) from None
        if found is None:
            why = self.failed.get(version, "not loaded")
            raise Unavailable(f"model '{self.name}' version '{version}' is not ready: {why}")
        return found

    @functools.cached_property
    def latest(self) -> ModelVersion | None:
        """The newest version (a model's versions never change after it is published)."""
        return max(self.versions.values(), key=lambda v: int(v.version), default=None)


def effective_config(source: ModelSource, latest: ModelVersion) -> mc.ModelConfig:
    """The config reported by the ModelConfig RPC: config.pbtxt with the gaps filled from the
    served signature (as Triton's auto-complete does)."""
    config = mc.ModelConfig()
    config.CopyFrom(source.config)
    sig = latest.signature
    config.max_batch_size = sig.max_batch_size
    skip = 1 if sig.max_batch_size else 0
    if not config.input:
        for spec in sig.inputs:
            config.input.add(
                name=spec.name, data_type=DATATYPES[spec.datatype].config_type, dims=spec.shape[skip:]
            )
    if not config.output:
        for spec in sig.outputs:
            config.output.add(
                name=spec.name, data_type=DATATYPES[spec.datatype].config_type, dims=spec.shape[skip:]
            )
    for key, value in latest.backend.info.items():
        config.parameters[key].string_value = value
    return config


@dataclass
class _Built:
    """One model's versions loaded for a change, not yet published."""

    model: Model | None  # None: nothing could be loaded
    errors: dict[str, GatewayError]  # by version ("" for the model itself)
    new: list[ModelVersion]  # made for this change (closed if it is abandoned)
    retired: list[ModelVersion]  # served before, not after (closed once drained)

    def error(self) -> GatewayError:
        if not self.errors:
            return LoadError("no version to load")
        first = next(iter(self.errors.values()))
        if len(self.errors) == 1:
            return first
        return type(first)("; ".join(f"version {v}: {e.message}" for v, e in self.errors.items()))


class Registry:
    def __init__(
        self,
        repository: Repository,
        factory: BackendFactory,
        metrics: Metrics,
        drain_s: float = 5.0,
        on_change: Callable[[str], Awaitable[None]] | None = None,
        batching: BatchingFactory | None = None,
        drift: DriftFactory | None = None,
    ) -> None:
        self.repository = repository
        self._drift = drift
        self._factory = factory
        self._metrics = metrics
        self._drain_s = drain_s
        self._on_change = on_change
        self._batching = batching
        self._models: Mapping[str, Model] = MappingProxyType({})
        self._locks: dict[str, asyncio.Lock] = {}
        self._retiring: dict[asyncio.Task[None], list[ModelVersion]] = {}
        self._policies: Mapping[str, TrafficPolicy] = {}
        self._retries: dict[str, asyncio.Task[None]] = {}  # model -> its next load attempt
        self._backoff: dict[str, float] = {}  # model -> the wait before its next attempt
        self._closed = False
        self.revision = 0  # rises with each applied traffic policy
        self.sticky_keys: frozenset[str] = frozenset()  # metadata keys some model routes by

    # -- the hot path -------------------------------------------------------------------------

    def get(self, name: str, version: str = "") -> ModelVersion:
        """A loaded version: the one named, or the newest (metadata RPCs; inference routes)."""
        model = self.resolve(name)
        if not version:
            latest = model.latest
            assert latest is not None  # a READY model has versions
            return latest
        return model.pinned(version)

    def resolve(self, name: str) -> Model:
        """A ready model (its router decides the version), else NOT_FOUND or UNAVAILABLE."""
        model = self._models.get(name)
        if model is None:
            raise NotFound(f"unknown model '{name}'")
        if model.state != READY:
            raise Unavailable(
                f"model '{name}' is not ready ({model.state.lower()}"
                + (f": {model.reason})" if model.reason else ")")
            )
        return model

    # -- views --------------------------------------------------------------------------------

    @property
    def models(self) -> Mapping[str, Model]:
        return self._models

    def model(self, name: str) -> Model:
        model = self._models.get(name)
        if model is None:
            raise NotFound(f"unknown model '{name}'")
        return model

    def all_ready(self) -> bool:
        """No model is loading or failed (unloaded ones do not count; nor does a version that
        failed beside others that serve, such as a broken canary: it gets no traffic)."""
        return all(m.state in (READY, UNAVAILABLE) for m in self._models.values())

    # -- changes ------------------------------------------------------------------------------

    def _publish(self, model: Model) -> None:
        table = dict(self._models)
        table[model.name] = model
        self._swap(table)

    def _swap(self, table: dict[str, Model]) -> None:
        """One atomic replacement of the table; the traffic gauges follow it."""
        self._models = MappingProxyType(table)
        self._metrics.policy_revision = self.revision
        self._metrics.weights = [
            (name, version, share)
            for name, model in sorted(table.items())
            if model.state == READY and model.router.split
            for version, share in model.router.weights().items()
        ]
        self._metrics.models = {
            name: {
                "state": model.state,
                "reason": model.reason,
                "versions": list(model.versions),
                "failed": dict(model.failed),
            }
            for name, model in table.items()
        }

    async def _changed(self, name: str) -> None:
        if self._on_change is not None:
            await self._on_change(name)

    def set_policies(self, policies: Mapping[str, TrafficPolicy], revision: int) -> None:
        """Take the traffic policies before any model is loaded (at start); a running gateway
        changes them with `apply`."""
        self._take(policies, revision)
        self._swap({name: self._with_router(model) for name, model in self._models.items()})

    def _take(self, policies: Mapping[str, TrafficPolicy], revision: int) -> None:
        """The policies every router built from now on reads, under the control plane's revision."""
        self._policies = dict(policies)
        self.sticky_keys = frozenset(p.sticky_metadata for p in policies.values() if p.sticky_metadata)
        self.revision = revision

    def policy(self, name: str) -> TrafficPolicy:
        return self._policies.get(name, NO_POLICY)

    def _with_router(self, model: Model) -> Model:
        if model.state != READY:
            return model
        latest = model.latest
        router = Router(
            self.policy(model.name),
            model.versions,
            declared=(*model.versions, *model.failed),
            default=latest.version if latest else None,
            revision=self.revision,
        )
        return dataclasses.replace(model, router=router)

    async def load(self, name: str) -> Model:
        """Load (or reload) one model from the repository: every version its version policy
        and its traffic policy name, each on its own. A version that fails leaves its previous
        instance serving, if it had one; the others are swapped in, and the error is raised
        after they are. A model none of whose versions load is FAILED (or, on a reload, keeps
        serving as it was). A name that is not in the repository is NOT_FOUND and leaves no
        trace."""
        self.repository.check_name(name)
        async with self._locks.setdefault(name, asyncio.Lock()):
            previous = self._models.get(name)
            if previous is None:
                self._publish(Model(name, LOADING))
            built = await self._build(name, self.policy(name), previous, reuse=False)
            self._follow_up(name, built)
            if built.model is None:
                error = built.error()
                if previous is None or previous.state != READY:
                    self._publish(Model(name, FAILED, reason=error.message))
                    await self._changed(name)
                raise error
            self._publish(self._with_router(built.model))
            log.info("model '%s' ready: versions %s", name, ", ".join(built.model.versions))
            self._retire(built.retired)
            await self._changed(name)
            if built.errors:
                raise built.error()
            return built.model

    def _follow_up(self, name: str, built: _Built) -> None:
        """After a load attempt: try again later (backing off) while something failed, as a
        remote Triton that is not up yet will come up; forget the backoff once all loaded."""
        if not built.errors:
            self._backoff.pop(name, None)
            return
        if self._closed or name in self._retries:
            return
        delay = self._backoff.get(name, RETRY_FIRST_S)
        self._backoff[name] = min(delay * 2, RETRY_MAX_S)
        log.warning("model '%s': trying the failed load again in %.0f s", name, delay)
        task = asyncio.get_running_loop().create_task(self._retry(name, delay))
        self._retries[name] = task

    async def _retry(self, name: str, delay: float) -> None:
        await asyncio.sleep(delay)
        self._retries.pop(name, None)
        model = self._models.get(name)
        if model is None or model.state in (UNAVAILABLE, LOADING):  # unloaded, or a load is on
            return
        if model.state == FAILED:
            with contextlib.suppress(GatewayError):  # logged; the next attempt is scheduled
                await self.load(name)
            return
        async with self._locks.setdefault(name, asyncio.Lock()):
            current = self._models.get(name)
            if current is not model:  # changed meanwhile: that change scheduled its own retry
                return
            built = await self._build(name, self.policy(name), model, reuse=True)
            self._follow_up(name, built)
            if built.model is None:
                return
            self._publish(self._with_router(built.model))
            self._retire(built.retired)
        log.info("model '%s' ready: versions %s", name, ", ".join(built.model.versions))
        await self._changed(name)

    async def apply(self, policies: Mapping[str, TrafficPolicy], revision: int) -> dict[str, dict[str, str]]:
        """Serve new traffic policies: load the versions they add (while the old snapshot
        serves), publish every model with its new router in one swap, then drain and close
        the versions no policy or version policy keeps. A model that cannot be read refuses
        the whole change (nothing is published); a version that fails to load only gets no
        traffic. Returns, per model, the versions that failed and why."""
        async with contextlib.AsyncExitStack() as locks:
            names = sorted(self._models)
            for name in names:  # every model's lock, in one order: no load interleaves
                await locks.enter_async_context(self._locks.setdefault(name, asyncio.Lock()))
            builds: dict[str, _Built] = {}
            try:
                for name in names:
                    model = self._models[name]
                    policy = policies.get(name, NO_POLICY)
                    if model.state != READY or policy == self.policy(name):
                        continue
                    built = builds[name] = await self._build(name, policy, model, reuse=True)
                    if built.model is None:
                        raise built.error()
            except BaseException:
                for built in builds.values():
                    await _close_versions(built.new)
                raise
            self._take(policies, revision)
            table = {}
            for name, model in self._models.items():
                found = builds.get(name)
                table[name] = self._with_router(found.model if found is not None and found.model else model)
            self._swap(table)
            for name, built in builds.items():
                self._retire(built.retired)
                self._follow_up(name, built)
        for name in builds:
            await self._changed(name)
        return {
            name: {v: e.message for v, e in built.errors.items()}
            for name, built in builds.items()
            if built.errors
        }

    async def _build(self, name: str, policy: TrafficPolicy, previous: Model | None, reuse: bool) -> _Built:
        """The versions of one model, loaded but not published. `reuse`: keep the instances of
        `previous` for versions it already serves (a traffic change); else load every version
        anew (a reload from disk)."""
        old = previous.versions if previous is not None and previous.state == READY else {}
        versions: dict[str, ModelVersion] = {}
        new: list[ModelVersion] = []
        errors: dict[str, GatewayError] = {}  # by version; "" for the model itself
        try:
            source = self.repository.read(name, also=policy.versions, tolerant=True)
            errors.update(source.failed)
            for version in source.versions:
                if reuse and version in old:
                    versions[version] = old[version]
                    continue
                try:
                    backend = await self._factory(source, version)
                except GatewayError as exc:
                    errors[version] = exc
                    continue
                versions[version] = self._version(source, version, backend)
                new.append(versions[version])
        except GatewayError as exc:
            errors[""] = exc
        except BaseException:
            await _close_versions(new)
            raise
        if errors:
            self._metrics.load_failed(name)
            for version, error in errors.items():
                where = f" version {version}" if version else ""
                log.error("loading model '%s'%s failed: %s", name, where, error.message)
        if "" in errors or not versions:
            await _close_versions(new)
            return _Built(None, errors, [], [])
        carried = {v: old[v] for v in errors if v in old}  # a version that failed keeps its old one
        versions.update(carried)
        latest = max(versions.values(), key=lambda v: int(v.version))
        model = Model(
            name,
            READY,
            effective_config(source, latest),
            MappingProxyType(dict(sorted(versions.items(), key=lambda i: int(i[0])))),
            failed=MappingProxyType({v: e.message for v, e in errors.items() if v not in carried}),
        )
        retired = [v for k, v in old.items() if versions.get(k) is not v]
        return _Built(model, errors, new, retired)

    def _version(self, source: ModelSource, version: str, backend: Backend) -> ModelVersion:
        metrics = self._metrics.for_version(source.name, version)
        run: RunBatch = backend.infer
        monitor = self._drift(source, version, backend, metrics.drift) if self._drift else None
        if monitor is not None:  # it counts each backend call's inputs and outputs
            metrics.drift = monitor
            run = monitor.wrap(backend.infer)
        served = ModelVersion(source.name, version, backend, metrics, run=run)
        metrics.upstream = backend.upstream
        policy, target_ms = self._batching(source, backend) if self._batching else (None, None)
        if policy is not None:
            controller = AdaptiveController(policy, target_ms / 1e3) if target_ms else None
            served.batcher = Batcher(
                run,
                backend.signature.output_names,
                policy,
                on_batch=metrics.executed,
                observe=controller.observe if controller else None,
                name=f"{source.name}/{version}",
            )
            served.batcher.start()
            metrics.batching = policy
            metrics.controller = controller
            metrics.batcher = served.batcher
        return served

    async def unload(self, name: str) -> None:
        self.model(name)  # NOT_FOUND for a name never loaded
        async with self._locks[name]:
            previous = self.model(name)
            self._publish(Model(name, UNAVAILABLE, previous.config, reason="unloaded"))
            self._retire(list(previous.versions.values()))
            await self._changed(name)

    async def load_repository(self, skip: Collection[str] = ()) -> list[str]:
        """Load every model of the repository but `skip` (unloaded on request before this
        process started); returns the names that failed. Every model is known (LOADING, so
        UNAVAILABLE rather than NOT_FOUND) before the first one loads."""
        names = [n for n in self.repository.model_names() if n not in skip]
        unloaded = {n: Model(n, UNAVAILABLE, reason="unloaded") for n in skip}
        self._swap({**unloaded, **{n: Model(n, LOADING) for n in names}, **self._models})
        failed = []
        for name in names:
            try:
                await self.load(name)
            except GatewayError:
                failed.append(name)
        return failed

    def _retire(self, versions: list[ModelVersion]) -> None:
        """Close versions that left the table once calls already running on them could finish."""
        if not versions:
            return

        async def close_later() -> None:
            await asyncio.sleep(self._drain_s)
            await _close_versions(versions)

        task = asyncio.create_task(close_later())
        self._retiring[task] = versions
        task.add_done_callback(lambda t: self._retiring.pop(t, None))

    async def close(self) -> None:
        """Close every backend now (the server has drained its calls)."""
        self._closed = True
        retries, self._retries = self._retries, {}
        for retry in retries.values():
            retry.cancel()
        await asyncio.gather(*retries.values(), return_exceptions=True)
        retiring, self._retiring = dict(self._retiring), {}
        for task in retiring:
            task.cancel()
        await asyncio.gather(*retiring, return_exceptions=True)
        models, self._models = self._models, MappingProxyType({})
        for versions in (*retiring.values(), *(list(m.versions.values()) for m in models.values())):
            await _close_versions(versions)


async def _close_versions(versions: list[ModelVersion]) -> None:
    for version in versions:
        await version.close()
