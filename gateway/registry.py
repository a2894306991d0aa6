"""Loaded models and their versions.

The table of models is an immutable mapping replaced as a whole when a model is loaded or
unloaded, so the hot path (`get`) reads it without a lock and never sees a half-made change.
A reload builds and warms every new version before it swaps the table; if anything fails the
old versions keep serving. Versions that leave the table are closed once their in-flight calls
could have finished.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from ._proto import model_config_pb2 as mc
from .backends import Backend
from .batching import AdaptiveController, Batcher, BatchingPolicy
from .errors import GatewayError, NotFound, Unavailable
from .repository import ModelSource, Repository
from .telemetry import Metrics, VersionMetrics
from .tensors import DATATYPES, Signature

__all__ = ["BackendFactory", "Model", "ModelVersion", "Registry"]

log = logging.getLogger(__name__)

BackendFactory = Callable[[ModelSource, str], Awaitable[Backend]]
"""(source, version) -> a loaded, warmed backend (its info names the artifact's digest)."""

BatchingFactory = Callable[[ModelSource, Backend], tuple[BatchingPolicy | None, float | None]]
"""(source, backend) -> (the version's batching policy or None, the p99 target in ms or None)."""

READY, LOADING, UNAVAILABLE, FAILED = "READY", "LOADING", "UNAVAILABLE", "FAILED"
"""A model's states. UNAVAILABLE: unloaded on request; FAILED: its last load failed (reason says
why). RepositoryIndex reports FAILED as Triton does, UNAVAILABLE with the reason."""


@dataclass(eq=False)
class ModelVersion:
    model: str
    version: str
    backend: Backend
    metrics: VersionMetrics
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
    versions: Mapping[str, ModelVersion] = field(default_factory=dict)
    reason: str = ""

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


class Registry:
    def __init__(
        self,
        repository: Repository,
        factory: BackendFactory,
        metrics: Metrics,
        drain_s: float = 5.0,
        on_change: Callable[[str], Awaitable[None]] | None = None,
        batching: BatchingFactory | None = None,
    ) -> None:
        self.repository = repository
        self._factory = factory
        self._metrics = metrics
        self._drain_s = drain_s
        self._on_change = on_change
        self._batching = batching
        self._models: Mapping[str, Model] = MappingProxyType({})
        self._locks: dict[str, asyncio.Lock] = {}
        self._retiring: dict[Model, asyncio.Task[None]] = {}

    # -- the hot path -------------------------------------------------------------------------

    def get(self, name: str, version: str = "") -> ModelVersion:
        model = self._models.get(name)
        if model is None:
            raise NotFound(f"unknown model '{name}'")
        if model.state != READY:
            raise Unavailable(
                f"model '{name}' is not ready ({model.state.lower()}"
                + (f": {model.reason})" if model.reason else ")")
            )
        if not version:
            latest = model.latest
            assert latest is not None  # a READY model has versions
            return latest
        found = model.versions.get(version)
        if found is None:
            raise NotFound(
                f"model '{name}' has no version '{version}' "
                f"(serving: {', '.join(sorted(model.versions, key=int))})"
            )
        return found

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
        """No model is loading or failed (unloaded ones do not count)."""
        return all(m.state in (READY, UNAVAILABLE) for m in self._models.values())

    # -- changes ------------------------------------------------------------------------------

    def _publish(self, model: Model) -> None:
        table = dict(self._models)
        table[model.name] = model
        self._models = MappingProxyType(table)

    async def _changed(self, name: str) -> None:
        if self._on_change is not None:
            await self._on_change(name)

    async def load(self, name: str) -> Model:
        """Load (or reload) one model from the repository. On failure the model's previous
        versions keep serving and the error is raised. A name that is not in the repository is
        NOT_FOUND and leaves no trace."""
        self.repository.check_name(name)
        lock = self._locks.setdefault(name, asyncio.Lock())
        async with lock:
            previous = self._models.get(name)
            if previous is None:
                self._publish(Model(name, LOADING))
            try:
                source = self.repository.read(name)
                versions: dict[str, ModelVersion] = {}
                try:
                    for version in source.versions:
                        backend = await self._factory(source, version)
                        versions[version] = self._version(source, version, backend)
                except BaseException:
                    for v in versions.values():
                        await v.close()
                    raise
            except GatewayError as exc:
                self._metrics.load_failed(name)
                log.error("loading model '%s' failed: %s", name, exc.message)
                if previous is None or previous.state != READY:
                    self._publish(Model(name, FAILED, reason=exc.message))
                    await self._changed(name)
                raise
            latest = max(versions.values(), key=lambda v: int(v.version))
            model = Model(name, READY, effective_config(source, latest), MappingProxyType(versions))
            self._publish(model)
            log.info("model '%s' ready: versions %s", name, ", ".join(versions))
            if previous is not None:
                self._retire(previous)
            await self._changed(name)
            return model

    def _version(self, source: ModelSource, version: str, backend: Backend) -> ModelVersion:
        metrics = self._metrics.for_version(source.name, version)
        served = ModelVersion(source.name, version, backend, metrics)
        metrics.upstream = backend.upstream
        policy, target_ms = self._batching(source, backend) if self._batching else (None, None)
        if policy is not None:
            controller = AdaptiveController(policy, target_ms / 1e3) if target_ms else None
            served.batcher = Batcher(
                backend.infer,
                backend.signature.output_names,
                policy,
                on_batch=metrics.executed,
                observe=controller.observe if controller else None,
                name=f"{source.name}/{version}",
            )
            served.batcher.start()
            metrics.batching = policy
            metrics.controller = controller
        return served

    async def unload(self, name: str) -> None:
        self.model(name)  # NOT_FOUND for a name never loaded
        async with self._locks[name]:
            previous = self.model(name)
            self._publish(Model(name, UNAVAILABLE, previous.config, reason="unloaded"))
            self._retire(previous)
            await self._changed(name)

    async def load_repository(self) -> list[str]:
        """Load every model of the repository; returns the names that failed."""
        failed = []
        for name in self.repository.model_names():
            try:
                await self.load(name)
            except GatewayError:
                failed.append(name)
        return failed

    def _retire(self, model: Model) -> None:
        if not model.versions:
            return

        async def close_later() -> None:
            await asyncio.sleep(self._drain_s)
            await _close_versions(model)
            self._retiring.pop(model, None)

        self._retiring[model] = asyncio.create_task(close_later())

    async def close(self) -> None:
        """Close every backend now (the server has drained its calls)."""
        retiring, self._retiring = self._retiring, {}
        for task in retiring.values():
            task.cancel()
        await asyncio.gather(*retiring.values(), return_exceptions=True)
        models, self._models = self._models, MappingProxyType({})
        for model in (*retiring, *models.values()):
            await _close_versions(model)


async def _close_versions(model: Model) -> None:
    for version in model.versions.values():
        await version.close()
