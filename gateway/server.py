"""One serving process: the gRPC server, its models and its lifecycle.

    start()  bind and serve at once (ServerLive answers; ServerReady stays false)
    load()   load and warm every model of the repository, then report ready
    close()  health NOT_SERVING -> refuse new calls -> let in-flight calls finish within the
             grace period -> cancel the rest -> close the backends

`run_worker` wraps this for a process: uvloop when installed, SIGTERM/SIGINT handling (the first
signal drains gracefully, a second one stops at once), exit status 0 after a clean drain.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import sys
from collections.abc import Callable, Coroutine, Iterable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2

from ._console import say
from ._proto import inference_pb2
from ._proto._pool import POOL
from .backends import Backend
from .backends.onnxruntime import OnnxRuntimeBackend, OrtOptions, default_intra_op_threads
from .backends.triton import TritonBackend, TritonOptions
from .batching import BatchingPolicy, resolve_policy
from .control import ConfigControl, ControlPlane, read_published
from .control.plane import DRIFT_DIR, TICK_S
from .dataplane import DataPlane
from .drift import DriftMonitor, LiveReferences, Profile, ProfileError, load_profile
from .registry import READY, Registry
from .repository import ModelSource, RemoteVersion, Repository, file_digest
from .routing import policies_of
from .settings import Settings
from .telemetry import Metrics, peer_snapshots, serve_metrics
from .telemetry.metrics import GC_PAUSES
from .telemetry.tracing import start_tracing
from .tensors import TensorSpec
from .transport import InferenceServicer, add_inference_service, new_server, resolve_transport
from .transport.admin import start_admin_server
from .transport.health import Health

__all__ = ["Gateway", "run_worker"]

log = logging.getLogger("gateway")

SERVICE_NAME = inference_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name
OVERALL = ""  # the health service name that stands for the whole server
SNAPSHOT_S = 1.0  # how often a worker hands its counters to the supervisor
CONFIG_POLL_S = 0.25  # how often a worker looks for a newly published config
PARENT_POLL_S = 1.0  # how often a worker checks that its supervisor is alive
TRACE_FLUSH_S = 3.0  # how long a stop waits for queued spans to be exported
GC_YOUNG_OBJECTS = 10_000  # the cyclic collector's first threshold while serving (see settle_gc)


def _add_to_pool(*files: Any) -> None:
    """Reflection serves from modelgate's own descriptor pool; give it the standard services."""
    for file in files:
        try:
            POOL.FindFileByName(file.DESCRIPTOR.name)
        except KeyError:
            POOL.AddSerializedFile(file.DESCRIPTOR.serialized_pb)


def _widths(specs: Iterable[TensorSpec]) -> dict[str, tuple[str, int]]:
    """name -> (datatype, values per row; -1 when a dimension is dynamic) of a signature side."""
    out = {}
    for spec in specs:
        dims = spec.shape[1:] if spec.shape and spec.shape[0] == -1 else spec.shape
        out[spec.name] = (
            spec.datatype,
            -1 if any(d < 0 for d in dims) else int(np.prod(dims, dtype=np.int64)),
        )
    return out


def bind_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


def ort_options(settings: Settings) -> OrtOptions:
    ort = settings.onnxruntime
    return OrtOptions(
        providers=tuple(ort.providers) if ort.providers is not None else None,
        intra_op_threads=ort.intra_op_threads or default_intra_op_threads(settings.workers),
        executor_threads=ort.executor_threads,
        inline_below_us=ort.inline_below_us,
        default_max_batch_size=ort.default_max_batch_size,
    )


def remote_versions(settings: Settings) -> dict[str, dict[str, RemoteVersion]]:
    """The `backend: triton` versions of the config, by model."""
    return {
        name: {
            version: RemoteVersion(tuple(spec.endpoints), spec.model or name, spec.model_version)
            for version, spec in model.versions.items()
            if spec.backend == "triton"
        }
        for name, model in settings.models.items()
    }


class Gateway:
    """A serving process. `metrics_port` -1 leaves metrics to someone else (the supervisor,
    when there are several workers). It follows the configs published in `run_dir`, starting
    from `revision`; with a `plane` (one process is the whole gateway) it also hosts the control
    plane and its admin API."""

    def __init__(
        self,
        settings: Settings,
        *,
        run_dir: Path,
        revision: int = 1,
        plane: ControlPlane | None = None,
        grpc_port: int | None = None,
        metrics_port: int | None = None,
        metrics: Metrics | None = None,
        snapshot_dir: Path | None = None,
        reuse_port: bool = False,
    ) -> None:
        self.settings = settings
        self.plane = plane
        self._reuse_port = reuse_port
        self.metrics = metrics or Metrics()
        # Built here, in the serving process (workers are forked before any SDK object exists).
        self.tracing = start_tracing(settings.telemetry.tracing, self.metrics)
        self._grpc_port = settings.grpc_port if grpc_port is None else grpc_port
        self._metrics_port = settings.metrics_port if metrics_port is None else metrics_port
        options = ort_options(settings)
        triton = TritonOptions(
            max_message_bytes=settings.max_message_bytes,
            eject_after_failures=settings.triton.eject_after_failures,
            probe_interval_s=settings.triton.probe_interval_s,
            connect_timeout_s=settings.triton.connect_timeout_s,
            retry_budget=settings.triton.retry_budget,
        )

        async def make_backend(source: ModelSource, version: str) -> Backend:
            where = source.versions[version]
            if isinstance(where, RemoteVersion):
                return await TritonBackend.connect(source.name, version, where, source.config, triton)
            digest = await asyncio.to_thread(file_digest, where)
            return await asyncio.to_thread(OnnxRuntimeBackend.load, where, source.config, options, digest)

        def batching(source: ModelSource, backend: Backend) -> tuple[BatchingPolicy | None, float | None]:
            max_batch = backend.signature.max_batch_size
            return resolve_policy(settings, source.name, source.config, max_batch, backend.concurrency)

        profiles: dict[Path, Profile | None] = {}
        self.live_references = LiveReferences(run_dir / DRIFT_DIR, settings)

        def drift(
            source: ModelSource, version: str, backend: Backend, previous: DriftMonitor | None
        ) -> DriftMonitor | None:
            spec = settings.models[source.name].drift if source.name in settings.models else None
            if spec is None:
                return None
            signature = backend.signature
            if spec.live is not None:  # learned from the baseline's traffic (gateway/drift/live.py)
                return self.live_references.monitor(
                    source.name,
                    version,
                    source.versions,
                    signature.max_batch_size > 0,
                    lambda p: p.check(_widths(signature.inputs), _widths(signature.outputs)),
                    previous,
                )
            assert isinstance(spec.reference, Path)
            if spec.reference not in profiles:
                try:
                    profiles[spec.reference] = load_profile(spec.reference)
                except ProfileError as exc:
                    log.error("model '%s': drift monitoring off: %s", source.name, exc)
                    profiles[spec.reference] = None
            profile = profiles[spec.reference]
            if profile is None:
                return None
            problems = profile.check(_widths(backend.signature.inputs), _widths(backend.signature.outputs))
            if problems:
                log.error(
                    "model '%s': drift monitoring off, the profile does not fit: %s",
                    source.name,
                    "; ".join(problems),
                )
                return None
            if previous is not None and previous.profile is profile:
                return previous  # a reloaded version counts on where it left off
            return DriftMonitor(
                profile, batched=backend.signature.max_batch_size > 0, label=f"{source.name}/{version}"
            )

        self.registry = Registry(
            Repository(settings.model_repository, remote_versions(settings)),
            make_backend,
            self.metrics,
            drain_s=settings.drain_s,
            on_change=self._on_model_change,
            batching=batching,
            drift=drift,
        )
        self.registry.set_policies(policies_of(settings), revision)
        self.control = ConfigControl(self.registry, settings, run_dir)
        if plane is not None:
            plane.snapshots = lambda: [self.metrics.snapshot()]
        self.dataplane = DataPlane(
            self.registry,
            self.metrics,
            model_control=self.control.request if settings.model_control_mode == "explicit" else None,
            max_inflight=settings.max_inflight_requests,
            max_inflight_bytes=settings.max_inflight_bytes,
            peers=None if snapshot_dir is None else partial(peer_snapshots, snapshot_dir),
        )
        self.health = Health()
        self.port = 0
        self.metrics_port = -1
        self.admin_port = -1
        self._admin_server: Any = None
        self.transport = ""
        self._server: Any = None  # grpc.aio.Server, or pygrpc-native's drop-in for it
        self._metrics_server: Any = None
        self._snapshot_dir = snapshot_dir
        self._closed = asyncio.Event()
        self._hurry = asyncio.Event()  # a second signal: skip the shutdown delay
        self._closing = False
        self._tasks: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        s = self.settings
        self.transport = resolve_transport(s.transport)
        servicer = InferenceServicer(self.dataplane, tracing=self.tracing)
        server = new_server(
            self.transport,
            max_message_bytes=s.max_message_bytes,
            reuse_port=self._reuse_port,
            batch=servicer.infer_batch if s.native_batch else None,
        )
        add_inference_service(servicer, server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        _add_to_pool(health_pb2, reflection_pb2)
        reflection.enable_server_reflection(
            (
                SERVICE_NAME,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ),
            server,
            pool=POOL,
        )
        address = bind_address(s.host, self._grpc_port)
        try:
            self.port = server.add_insecure_port(address)
        except RuntimeError:  # both transports say a busy port this way
            self.port = 0
        if self.port == 0:
            raise OSError(f"cannot bind gRPC to {address}: port in use or address not available")
        await self._sync_overall_health()  # NOT_SERVING until loaded (a worker loads first)
        await server.start()
        self._server = server
        if self._metrics_port >= 0:
            try:
                self._metrics_server, self.metrics_port = serve_metrics(
                    self._metrics_port,
                    s.host,
                    self.metrics.registry(self.plane.snapshot) if self.plane else self.metrics.registry(),
                )
            except OSError as exc:
                await server.stop(0)
                raise OSError(
                    f"cannot bind metrics to {bind_address(s.host, self._metrics_port)}: {exc}"
                ) from None
        if self.plane is not None and s.admin_port >= 0:
            try:
                self._admin_server, self.admin_port = await start_admin_server(
                    self.plane, s.admin_host, s.admin_port
                )
            except OSError:
                await server.stop(0)
                self._stop_metrics()
                raise
        if self._snapshot_dir is not None:
            self._spawn(self._publish_snapshots(self._snapshot_dir))
        self._spawn(self._watch_config())
        if self.live_references.active:
            self._spawn(self._watch_live_references())
        if self.plane is not None:
            self._spawn(self._drive_plane(self.plane))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _publish_snapshots(self, directory: Path) -> None:
        """Hand this worker's counters to the supervisor's /metrics, every SNAPSHOT_S."""
        while not self._closing:
            await asyncio.to_thread(self.metrics.write_snapshot, directory)
            await asyncio.sleep(SNAPSHOT_S)

    async def _watch_live_references(self) -> None:
        """Hand the baseline's rows to the control plane, and its learned profile to the
        monitors (gateway/drift/live.py), every SNAPSHOT_S."""
        while not self._closing:
            await asyncio.sleep(SNAPSHOT_S)
            try:
                await asyncio.to_thread(self.live_references.poll)
            except Exception:  # drift must never take serving down
                log.exception("live drift reference poll failed")

    async def _drive_plane(self, plane: ControlPlane) -> None:
        """The control plane, when this process is the whole gateway: the config file and the
        rollouts, every TICK_S."""
        while not self._closing:
            await asyncio.sleep(TICK_S)
            try:
                plane.tick()
            except Exception:  # the control plane must not take the data plane down with it
                log.exception("control plane tick failed")

    async def _watch_config(self) -> None:
        """Serve each config the control plane publishes."""
        while not self._closing:
            await asyncio.sleep(CONFIG_POLL_S)
            if not self._closing:
                await self.control.poll()

    async def load(self) -> list[str]:
        """Load the repository; ready once every model is. Returns the models that failed."""
        failed = await self.registry.load_repository(skip=self.control.unloaded)
        self.metrics.overhead.start()  # serving begins: loading and warming were not overhead
        self.dataplane.accepting = not self._closing
        await self._sync_overall_health()
        return failed

    async def _set_model_health(self, name: str, ok: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if ok else health_pb2.HealthCheckResponse.NOT_SERVING
        await self.health.set(name, status)

    async def _sync_overall_health(self) -> None:
        ok = self.dataplane.server_ready()
        await self._set_model_health(OVERALL, ok)

    async def _on_model_change(self, name: str) -> None:
        """Keep per-model and overall health in step with loads and unloads."""
        model = self.registry.models.get(name)
        await self._set_model_health(name, model is not None and model.state == READY)
        if self.dataplane.accepting:
            await self._sync_overall_health()

    async def close(self, grace: float | None = None) -> None:
        """Health NOT_SERVING (and ServerReady false), then `shutdown_delay_s` more of serving, then
        refuse new calls and drain within the grace period. Safe to call twice: the second
        call cuts the delay and the grace to zero."""
        if self._server is None:  # not serving yet (a worker still loading)
            self._closing = True
            self._closed.set()
            return
        grace = self.settings.grace_s if grace is None else grace
        if self._closing:
            self._hurry.set()  # no more shutdown delay
            await self._server.stop(0)
            return
        self._closing = True
        self.dataplane.accepting = False  # ServerReady false
        await self.health.enter_graceful_shutdown()  # health NOT_SERVING
        delay = self.settings.shutdown_delay_s
        if delay > 0 and grace > 0:  # load balancers see NOT_SERVING while calls still succeed
            log.info("shutdown delay: serving %.1fs more while health says NOT_SERVING", delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._hurry.wait(), delay)
        if self._admin_server is not None:
            await self._admin_server.stop(0)
        # no await between the line and the stop: once it is logged, new calls are refused
        log.info("draining: up to %.1fs for in-flight calls", grace)
        await self._server.stop(grace)
        if self.cut:
            log.error(
                "%d in-flight call(s) cut: the grace period (%.1fs) ran out or a second signal came",
                self.cut,
                grace,
            )
        try:
            await self.dataplane.close()
            await self.registry.close()
            await self.close_tracing()
            if self._snapshot_dir is not None:
                self.metrics.write_snapshot(self._snapshot_dir)
        finally:  # the process exits even if a step failed (the error is logged)
            self._stop_metrics()
            self._closed.set()

    async def close_tracing(self) -> None:
        """Export the spans still queued, within TRACE_FLUSH_S (a collector that is down must not
        hold the stop up)."""
        tracing, self.tracing = self.tracing, None
        if tracing is not None:
            await asyncio.to_thread(tracing.close, TRACE_FLUSH_S)

    def _stop_metrics(self) -> None:
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
            self._metrics_server.server_close()
            self._metrics_server = None

    @property
    def cut(self) -> int:
        """In-flight calls a stop cut (the grace ran out, or a second signal): exit status 1."""
        return self.dataplane.cut

    @property
    def closing(self) -> bool:
        """A drain has begun (SIGTERM or close())."""
        return self._closing

    async def wait_closed(self) -> None:
        await self._closed.wait()

    async def __aenter__(self) -> Gateway:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


async def _serve(
    settings: Settings,
    run_dir: Path,
    plane: ControlPlane | None,
    grpc_port: int | None,
    metrics_port: int | None,
    label: str,
    snapshot_dir: Path | None,
    reuse_port: bool,
) -> int:
    published = read_published(run_dir)  # a restarted worker starts from the newest revision
    gateway = Gateway(
        published.settings if published is not None else settings,
        run_dir=run_dir,
        revision=published.revision if published is not None else 1,
        plane=plane,
        grpc_port=grpc_port,
        metrics_port=metrics_port,
        snapshot_dir=snapshot_dir,
        reuse_port=reuse_port,
    )
    loop = asyncio.get_running_loop()
    signals = 0

    def on_signal() -> None:
        nonlocal signals
        signals += 1
        log.info("signal received (%d): %s", signals, "draining" if signals == 1 else "stopping now")
        gateway._spawn(gateway.close(None if signals == 1 else 0))

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    if (
        plane is not None
    ):  # SIGHUP: read the config file again (the supervisor sends it to its control process)
        loop.add_signal_handler(signal.SIGHUP, lambda: plane.reload("SIGHUP"))
    else:
        loop.add_signal_handler(signal.SIGHUP, lambda: None)
    if reuse_port:  # a supervisor's worker: it goes when its supervisor does
        gateway._spawn(_watch_parent(gateway, os.getppid()))
    closed = loop.create_task(gateway.wait_closed())
    loading = loop.create_task(gateway.load())
    if reuse_port:  # one of several workers: the others serve meanwhile, so listen once ready
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait({loading, closed}, return_when=asyncio.FIRST_COMPLETED)
        if gateway.closing or not loading.done():
            loading.cancel()
            await asyncio.gather(loading, return_exceptions=True)
            await gateway.registry.close()
            await gateway.close_tracing()
            await asyncio.gather(*gateway._tasks, return_exceptions=True)
            say(f"modelgate{label}: stopped")
            return 0
    try:
        await gateway.start()
    except OSError as exc:  # a busy port: one clear line, exit 2
        say(f"modelgate{label}: {exc}", sys.stderr)
        loading.cancel()
        return 2
    say(
        f"modelgate{label}: gRPC listening on {bind_address(settings.host, gateway.port)}"
        + f" ({gateway.transport} transport)"
        + (
            f", metrics on http://{bind_address(settings.host, gateway.metrics_port)}/metrics"
            if gateway.metrics_port >= 0
            else ""
        )
    )
    if gateway.admin_port >= 0:
        say(f"modelgate{label}: admin API on {bind_address(settings.admin_host, gateway.admin_port)}")
    with contextlib.suppress(asyncio.CancelledError):
        done, _ = await asyncio.wait({loading, closed}, return_when=asyncio.FIRST_COMPLETED)
    if loading in done and not gateway.closing:
        failed = loading.result()
        models = len(gateway.registry.models)
        say(
            f"modelgate{label}: ready, {models - len(failed)} of {models} models loaded"
            + (f" (failed: {', '.join(failed)})" if failed else "")
        )
        settle_gc()
    await gateway.wait_closed()
    loading.cancel()
    await asyncio.gather(loading, *gateway._tasks, return_exceptions=True)
    if gateway.cut:
        say(f"modelgate{label}: stopped, {gateway.cut} in-flight call(s) cut", sys.stderr)
        return 1
    say(f"modelgate{label}: stopped")
    return 0


def settle_gc() -> None:
    """Tune the cyclic garbage collector for serving, once the models are loaded.

    What is loaded by now (modules, protobuf descriptors, sessions) lives as long as the process:
    `gc.freeze()` keeps full collections from traversing it again (~60,000 objects; a full pass
    took ~20-30 ms of the loop). A call's objects are freed by reference counting when it is
    answered, but the collector runs a young-generation pass every 700 allocations net of frees,
    and the calls in flight alone hold more than that (about 20 objects each, 64 calls ~1,300):
    a pass every few calls, each traversing every call in flight, and survivors promoted until a
    full pass. A first threshold above the objects of the calls in flight makes passes run when
    garbage really accumulates (reference cycles, e.g. exceptions kept with their tracebacks).
    Under h2load at 64 in flight no pass runs at all (loadtests/threads_h2load.py reads them from
    /metrics; the A/B is in loadtests/README.md)."""
    gc.freeze()
    _young, *older = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_OBJECTS, *older)
    GC_PAUSES.watch()  # modelgate_gc_passes_total, modelgate_gc_pause_seconds_total


async def _watch_parent(gateway: Gateway, parent: int) -> None:
    """Drain and stop when the supervisor is gone (killed: no signal reached the workers)."""
    while not gateway.closing:
        await asyncio.sleep(PARENT_POLL_S)
        if os.getppid() != parent:
            log.error("the supervisor (pid %d) is gone: draining", parent)
            await gateway.close()
            return


def run_worker(
    settings: Settings,
    run_dir: Path,
    plane: ControlPlane | None = None,
    grpc_port: int | None = None,
    metrics_port: int | None = None,
    label: str = "",
    snapshot_dir: Path | None = None,
    reuse_port: bool = False,
) -> int:
    """Serve until SIGTERM/SIGINT, following the configs published in `run_dir`; with `plane`,
    this process is the whole gateway (control plane and admin API too; SIGHUP re-reads the
    config). Returns the process exit status. `reuse_port`: this process is one of the
    supervisor's workers, which share the port."""
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        return runner.run(
            _serve(settings, run_dir, plane, grpc_port, metrics_port, label, snapshot_dir, reuse_port)
        )
