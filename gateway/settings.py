"""One validated configuration tree for the whole gateway.

Sources, later ones winning: defaults < the YAML file (`--config`) < `GATEWAY_<FIELD>`
environment variables (top-level fields, e.g. GATEWAY_GRPC_PORT=9001) < command-line flags.
`telemetry.tracing` also takes OpenTelemetry's standard `OTEL_*` variables, over the YAML.
`load_settings` reads them once at start-up; everything else receives the result explicitly.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import unquote

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

__all__ = [
    "ConfigSource",
    "DriftSettings",
    "LiveReference",
    "ModelSettings",
    "OnnxRuntimeSettings",
    "Settings",
    "SettingsError",
    "TelemetrySettings",
    "TracingSettings",
    "load_settings",
]

ENV_PREFIX = "GATEWAY_"


class SettingsError(Exception):
    """The configuration is invalid; the message says which field and why."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class OnnxRuntimeSettings(_Strict):
    """How in-process ONNX Runtime sessions are built."""

    providers: list[str] | None = Field(
        None,
        description="Execution providers in order of preference; null picks "
        "CUDAExecutionProvider when onnxruntime-gpu sees a GPU, else CPUExecutionProvider.",
    )
    intra_op_threads: int | None = Field(
        None,
        ge=1,
        description="Threads per session; null: CPU cores / workers - 1 (one core left to the "
        "transport), so N workers do not oversubscribe the machine.",
    )
    executor_threads: int = Field(1, ge=1, description="Concurrent backend calls per version.")
    inline_below_us: float = Field(
        250.0,
        ge=0,
        description="Calls estimated (from timings at warm-up) to take less than this run on "
        "the event loop instead of a thread (a thread hop costs more than a tiny model). 0: never.",
    )
    default_max_batch_size: int = Field(
        64,
        ge=0,
        description="max_batch_size for a model without config.pbtxt whose graph has "
        "a dynamic first dimension on every input and output.",
    )


class BatchingSettings(_Strict):
    """Dynamic batching. Every field may also be set per model under `models.<name>.batching`;
    a model's config.pbtxt `dynamic_batching` supplies the values the YAML leaves unset."""

    mode: Literal["auto", "on", "off"] | None = Field(
        None,
        description="auto (default): batch the models whose config.pbtxt has dynamic_batching "
        "or that have a models.<name>.batching section; on: every model with a batch dimension; off: none.",
    )
    max_batch_size: int | None = Field(
        None, ge=1, description="Rows per batch; null: the model's max_batch_size."
    )
    preferred_batch_size: list[int] | None = Field(
        None, description="Batch sizes sent at once, without waiting for the queue delay."
    )
    max_queue_delay_us: int | None = Field(
        None, ge=0, description="How long the oldest request may wait for others to join (default 500)."
    )
    max_queue_size: int | None = Field(
        None,
        ge=1,
        description="Queued requests per version; one more gets RESOURCE_EXHAUSTED (default 4096).",
    )
    timeout_us: int | None = Field(
        None,
        ge=1,
        description="Queue timeout when the request sets none (DEADLINE_EXCEEDED); null: only the "
        "caller's deadline.",
    )
    priority_levels: int | None = Field(
        None, ge=1, description="Priority levels; 1 is served first (default 1)."
    )
    default_priority_level: int | None = Field(None, ge=1, description="Level of a request without one.")
    target_p99_ms: float | None = Field(
        None,
        gt=0,
        description="SLO-adaptive mode: batch size and queue delay are adjusted at run time so "
        "that the p99 of queue + compute time stays under this target.",
    )

    @field_validator("mode", mode="before")
    @classmethod
    def _yaml_booleans(cls, value: Any) -> Any:
        """YAML 1.1 reads a bare `on`/`off` as true/false."""
        return {True: "on", False: "off"}.get(value, value) if isinstance(value, bool) else value

    def over(self, base: BatchingSettings) -> BatchingSettings:
        """These settings, with `base` filling what they leave unset."""
        return base.model_copy(update=self.model_dump(exclude_none=True))


class VersionSettings(_Strict):
    """A version served elsewhere: `backend: triton` sends its calls to remote Triton (or any
    KServe v2 gRPC) servers. `backend: onnxruntime` (the default for versions in the repository)
    needs no entry."""

    backend: Literal["triton", "onnxruntime"] = "triton"
    endpoints: list[str] = Field(default_factory=list, description="host:port of each server.")
    model: str | None = Field(None, description="The model's name there (default: the same name).")
    model_version: str = Field("", description="The version there (default: the server's choice).")

    @field_validator("endpoints")
    @classmethod
    def _host_port(cls, value: list[str]) -> list[str]:
        for endpoint in value:
            host, _, port = endpoint.rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"endpoint '{endpoint}' is not host:port")
        return value


class TritonSettings(_Strict):
    """How remote (backend: triton) versions are called."""

    eject_after_failures: int = Field(3, ge=1, description="Consecutive failures that eject an endpoint.")
    probe_interval_s: float = Field(
        1.0,
        gt=0,
        description="How often endpoints are probed (ServerReady + ModelReady); an "
        "ejected endpoint is readmitted on its first good probe.",
    )
    connect_timeout_s: float = Field(
        10.0, gt=0, description="Time to fetch a remote model's metadata at load."
    )
    retry_budget: float = Field(
        0.1,
        ge=0,
        le=1,
        description="Retries allowed, as a share of calls (plus 3 a second); only "
        "UNAVAILABLE calls that never reached a server are retried, on another endpoint.",
    )


def _is_version(version: str) -> bool:
    return version.isascii() and version.isdigit() and str(int(version)) == version


class StickySettings(_Strict):
    """Where a request's sticky key is: one of a gRPC metadata key or a request parameter."""

    key: str | None = Field(None, description="gRPC metadata key, e.g. x-user-id (case-insensitive).")
    parameter: str | None = Field(None, description="Request parameter (string or integer) holding the key.")

    @model_validator(mode="after")
    def _one_source(self) -> StickySettings:
        if (self.key is None) == (self.parameter is None):
            raise ValueError("sticky needs exactly one of `key` (metadata) or `parameter`")
        return self


class CompareSettings(_Strict):
    """When a shadow's answer agrees with the primary's: |shadow - primary| <= atol + rtol * |primary|."""

    atol: float = Field(1e-4, ge=0)
    rtol: float = Field(1e-3, ge=0)


class RolloutSettings(_Strict):
    """An automatic canary rollout: the canary's share steps through `steps` while every gate
    holds, and falls back to 0% when one fails."""

    canary: str = Field(description="The version being rolled out.")
    baseline: str | None = Field(
        None, description="The version it is compared with; default: the other version with most traffic."
    )
    steps: list[float] = Field([5, 25, 50, 100], description="The canary's percentages, rising.")
    interval_s: float = Field(60.0, gt=0, description="Shortest time at each step.")
    min_requests: int = Field(500, ge=1, description="Canary requests a step needs before its gates count.")
    max_error_rate: float | None = Field(0.01, ge=0, le=1, description="Canary server errors / requests.")
    max_p99_ratio: float | None = Field(1.2, gt=0, description="Canary p99 / baseline p99.")
    max_shadow_disagreement: float | None = Field(
        0.05, ge=0, le=1, description="Disagreeing share of the baseline's requests mirrored to the canary."
    )
    max_drift: float | None = Field(
        None,
        ge=0,
        description="The canary's outputs scored against the baseline's over the step (the model's "
        "drift `score`, in its profile's output bins); needs `drift` on the model. null: off.",
    )

    @field_validator("steps")
    @classmethod
    def _rising(cls, value: list[float]) -> list[float]:
        if not value or any(not 0 < s <= 100 for s in value) or value != sorted(set(value)):
            raise ValueError(f"steps must be rising percentages in (0, 100], got {value}")
        return value


class LiveReference(_Strict):
    """A reference profile learned from live traffic: the baseline version's most recent `rows`
    rows (README: Drift). `reference: live` is short for `reference: {live: baseline}`."""

    live: str = Field(
        "baseline",
        description="The version whose traffic is the reference: `baseline` (the rollout's baseline, "
        "else the version with the most traffic weight, else the newest) or a version like 1.",
    )
    rows: int = Field(10_000, ge=10, le=1_000_000, description="Rows the reference is learned from.")
    bins: int = Field(10, ge=2, le=256, description="Quantile bins per numeric feature.")
    categorical: list[int] = Field(
        default_factory=list,
        description="Float input features (indices) counted as category codes, as "
        "`modelgate profile build --categorical` does; integer inputs' features are anyway.",
    )

    @field_validator("live")
    @classmethod
    def _source(cls, value: str) -> str:
        if value != "baseline" and not _is_version(value):
            raise ValueError(f"live must be `baseline` or a version like 1, 2, 3, got {value!r}")
        return value


class DriftSettings(_Strict):
    """Drift monitoring of a model's inputs and outputs against a reference profile."""

    reference: Annotated[
        Annotated[Path, Tag("file")] | Annotated[LiveReference, Tag("live")],
        Discriminator(lambda v: "live" if isinstance(v, dict | LiveReference) else "file"),
    ] = Field(
        description="The profile (.npz) that `modelgate profile build` made, or `live` / "
        "{live: baseline|VERSION, rows: N, bins: B}: learned from the baseline's live traffic."
    )
    window: int = Field(10_000, ge=1, description="Rows per window (unless window_s is set).")
    window_s: float | None = Field(None, gt=0, description="Seconds per window instead of rows.")
    score: Literal["psi", "js", "ks", "wasserstein"] = Field(
        "psi", description="The score that decides alerts and the rollout gate."
    )
    alert: float = Field(0.2, gt=0, description="A window whose worst feature scores above this alerts.")
    features: list[str | int] | None = Field(
        None, description="Input features that count toward alerts (names or indices); null: all."
    )

    @field_validator("reference", mode="before")
    @classmethod
    def _live_shorthand(cls, value: Any) -> Any:
        if value == "live":
            return {"live": "baseline"}
        if isinstance(value, dict) and "live" not in value:
            raise ValueError(
                "a live reference needs `live: baseline` (or a version), e.g. {live: baseline, rows: 10000}"
            )
        return value

    @property
    def live(self) -> LiveReference | None:
        """The live reference's settings; None when the reference is a profile file."""
        return self.reference if isinstance(self.reference, LiveReference) else None


class ModelSettings(_Strict):
    batching: BatchingSettings | None = None
    versions: dict[str, VersionSettings] = Field(default_factory=dict)
    traffic: dict[str, float] | None = Field(
        None,
        description="Weights of the versions that take unpinned traffic, normalised; versions not "
        "listed get none (a pin still reaches them). Absent: the newest version takes it all.",
    )
    sticky: StickySettings | None = Field(None, description="The same key always lands on the same version.")
    shadow: dict[str, float] = Field(
        default_factory=dict,
        description="Versions that get a copy of a share (0-1] of the requests; their answers are "
        "compared with the primary's and discarded.",
    )
    compare: CompareSettings = CompareSettings()
    rollout: RolloutSettings | None = Field(
        None, description="Automatic rollout of a canary; it then owns this model's weights."
    )
    shadow_max_inflight: int = Field(
        64,
        ge=1,
        description="Shadow copies in flight for this model; over it, copies are dropped and counted.",
    )
    drift: DriftSettings | None = Field(None, description="Drift monitoring (a restart changes it).")

    @field_validator("versions")
    @classmethod
    def _numbered(cls, value: dict[str, VersionSettings]) -> dict[str, VersionSettings]:
        for version, spec in value.items():
            if not _is_version(version):
                raise ValueError(f"version '{version}' is not a number like 1, 2, 3")
            if spec.backend == "triton" and not spec.endpoints:
                raise ValueError(f"version '{version}': backend triton needs endpoints")
        return value

    @field_validator("traffic")
    @classmethod
    def _weights(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        if value is None:
            return value
        problems = [f"version '{v}' is not a number like 1, 2, 3" for v in value if not _is_version(v)]
        problems += [f"version '{v}' has a negative weight ({w})" for v, w in value.items() if w < 0]
        if sum(w for w in value.values() if w > 0) <= 0:
            problems.append("the weights sum to 0 (no version would take traffic)")
        if problems:
            raise ValueError("; ".join(problems))
        return value

    @field_validator("shadow")
    @classmethod
    def _shadows(cls, value: dict[str, float], info: ValidationInfo) -> dict[str, float]:
        traffic = info.data.get("traffic") or {}
        problems = [f"version '{v}' is not a number like 1, 2, 3" for v in value if not _is_version(v)]
        problems += [
            f"version '{v}': share must be in (0, 1], got {s}" for v, s in value.items() if not 0 < s <= 1
        ]
        primaries = {v for v, w in traffic.items() if w > 0}
        problems += [
            f"version '{v}' is the only version that takes traffic (a shadow of the primary itself)"
            for v in value
            if primaries == {v}
        ]
        if problems:
            raise ValueError("; ".join(problems))
        return value

    @model_validator(mode="after")
    def _sticky_needs_split(self) -> ModelSettings:
        if self.sticky is not None and self.traffic is None:
            raise ValueError("sticky needs a traffic split to choose from")
        rollout = self.rollout
        if rollout is not None:
            if not _is_version(rollout.canary) or (rollout.baseline and not _is_version(rollout.baseline)):
                raise ValueError("rollout: canary and baseline are versions like 1, 2, 3")
            if rollout.baseline is None and not [v for v in self.traffic or {} if v != rollout.canary]:
                raise ValueError("rollout needs a baseline: name it, or give it weight in traffic")
            if rollout.baseline == rollout.canary:
                raise ValueError("rollout: the baseline cannot be the canary")
        return self

    def rollout_baseline(self) -> str | None:
        """The rollout's baseline: named, or the other version with the most traffic."""
        if self.rollout is None:
            return None
        if self.rollout.baseline is not None:
            return self.rollout.baseline
        others = {v: w for v, w in (self.traffic or {}).items() if v != self.rollout.canary}
        return max(sorted(others, key=int), key=lambda v: others[v])

    def live_reference_version(self, versions: Iterable[str]) -> str | None:
        """The version whose traffic a live drift reference learns from (None: no live
        reference, or no version): the one named, else the rollout's baseline, else the
        version with the most traffic weight, else the newest of `versions`."""
        live = self.drift.live if self.drift is not None else None
        if live is None:
            return None
        if live.live != "baseline":
            return live.live
        baseline = self.rollout_baseline()
        if baseline is not None:
            return baseline
        weights = {v: w for v, w in (self.traffic or {}).items() if w > 0}
        if weights:
            return max(sorted(weights, key=int), key=lambda v: weights[v])
        return max(versions, key=int, default=None)


class TracingSettings(_Strict):
    """OpenTelemetry traces: a span per inference call and per stage behind it. The standard
    OTEL_* environment variables override these fields (README: Tracing)."""

    enabled: bool = Field(False, description="Trace at all; off, the request path pays one check.")
    exporter: Literal["otlp", "console", "none"] = Field(
        "otlp",
        description="otlp: OTLP/gRPC to `endpoint`; console: JSON lines on stdout; none: spans are "
        "made and dropped (for measuring).",
    )
    endpoint: str | None = Field(
        None, description="The collector's OTLP/gRPC address (http://host:4317); null: localhost:4317."
    )
    sampler_ratio: float = Field(1.0, ge=0, le=1, description="Share of new traces sampled (by trace id).")
    parent_based: bool = Field(
        True, description="A caller's sampled flag decides for its requests; the ratio only for new traces."
    )
    service_name: str = Field("modelgate", description="The `service.name` resource attribute.")
    resource_attributes: dict[str, str] = Field(
        default_factory=dict, description="More resource attributes (deployment.environment, ...)."
    )
    max_queue_size: int = Field(
        2048,
        ge=1,
        description="Ended spans waiting for export per process; over it they are dropped and counted "
        "(modelgate_trace_spans_dropped_total).",
    )
    export_timeout_s: float = Field(10.0, gt=0, description="Time one export to the collector may take.")


class TelemetrySettings(_Strict):
    tracing: TracingSettings = TracingSettings()


class CostSettings(_Strict):
    """Prices for `modelgate cost report` (README: Cost accounting): what a core-hour of CPU and
    an hour of GPU cost. null: the report shows seconds, no price."""

    cpu_core_hour_usd: float | None = Field(
        None, ge=0, description="US dollars per core-hour of CPU (backend calls and the gateway's own)."
    )
    gpu_hour_usd: float | None = Field(None, ge=0, description="US dollars per hour of GPU.")


class Settings(_Strict):
    """The gateway's configuration (YAML keys are these field names)."""

    model_repository: Path = Field(description="Triton-layout model repository.")
    host: str = Field("127.0.0.1", description="Address the gRPC and metrics ports bind to.")
    grpc_port: int = Field(8001, ge=0, le=65535, description="Inference gRPC port (0: any free).")
    metrics_port: int = Field(
        8002, ge=-1, le=65535, description="Prometheus /metrics HTTP port (0: any free, -1: off)."
    )
    admin_port: int = Field(
        8003, ge=-1, le=65535, description="Admin API gRPC port (modelgate admin; 0: any free, -1: off)."
    )
    admin_host: str = Field(
        "127.0.0.1",
        description="Address the admin port binds to: loopback unless you mean it (the admin API "
        "changes what is served).",
    )
    workers: int = Field(1, ge=1, le=64, description="Worker processes sharing the gRPC port.")
    transport: Literal["auto", "native", "grpcio"] = Field(
        "auto",
        description="The gRPC server: native (pygrpc-native, HTTP/2 in Rust outside the GIL), grpcio "
        "(grpc.aio: TLS-capable, no wheel needed), or auto: native where pygrpc-native is installed.",
    )
    native_batch: bool = Field(
        True,
        description="On the native transport, ModelInfer calls reach the data plane in the batches "
        "the front receives them in, each queued and answered without a task of its own (false: "
        "one task per call, as on grpcio).",
    )
    grace_s: float = Field(10.0, ge=0, description="On SIGTERM, how long in-flight calls may take to finish.")
    worker_heartbeat_s: float = Field(
        5.0,
        ge=0,
        description="With --workers N: a serving worker that has not handed over its counters for "
        "this long (hung, or stopped) is killed and replaced. 0: never.",
    )
    shutdown_delay_s: float = Field(
        0.0,
        ge=0,
        description="On SIGTERM, how long to go on serving while health says NOT_SERVING, before new "
        "calls are refused: time for a load balancer to notice (Kubernetes: a few seconds).",
    )
    max_message_bytes: int = Field(
        64 * 1024 * 1024, ge=1024, description="Largest gRPC message received or sent."
    )
    model_control_mode: Literal["none", "explicit"] = Field(
        "explicit", description="explicit: RepositoryModelLoad/Unload work; none: they are refused."
    )
    max_inflight_requests: int = Field(
        4096,
        ge=0,
        description="Inference requests served at once per worker; one more gets "
        "RESOURCE_EXHAUSTED at once (0: no cap).",
    )
    max_inflight_bytes: int = Field(
        1 << 30,
        ge=0,
        description="Bytes of inference requests served at once per worker (their messages' size); "
        "one that would go over gets RESOURCE_EXHAUSTED at once (0: no budget).",
    )
    drain_s: float = Field(
        5.0,
        ge=0,
        description="How long a replaced or unloaded version stays open for calls already running on it.",
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    state_dir: Path = Field(
        Path("modelgate-state"),
        description="Where runtime traffic decisions (rollout steps, rollbacks) are kept, so that a "
        "restart resumes them; created when first needed.",
    )
    onnxruntime: OnnxRuntimeSettings = OnnxRuntimeSettings()
    triton: TritonSettings = TritonSettings()
    telemetry: TelemetrySettings = TelemetrySettings()
    cost: CostSettings = Field(CostSettings(), description="Prices for the cost report.")
    batching: BatchingSettings = Field(
        BatchingSettings(), description="Batching defaults for every model.")  # fmt: skip
    models: dict[str, ModelSettings] = Field(
        default_factory=dict, description="Per-model settings, by model name.")  # fmt: skip

    @field_validator("model_repository")
    @classmethod
    def _repository_exists(cls, value: Path) -> Path:
        if not value.is_dir():
            raise ValueError(f"{value} is not a directory")
        return value


def _env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in Settings.model_fields:
        key = ENV_PREFIX + name.upper()
        if key in environ and name not in (
            "onnxruntime",
            "batching",
            "models",
            "triton",
            "telemetry",
            "cost",
        ):
            out[name] = environ[key]
    return out


_SAMPLERS = {  # OTEL_TRACES_SAMPLER -> (parent_based, ratio; None: OTEL_TRACES_SAMPLER_ARG's)
    "always_on": (False, 1.0),
    "always_off": (False, 0.0),
    "traceidratio": (False, None),
    "parentbased_always_on": (True, 1.0),
    "parentbased_always_off": (True, 0.0),
    "parentbased_traceidratio": (True, None),
}


def _otel_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    """`telemetry.tracing` fields from OpenTelemetry's standard variables. Naming an exporter
    (otlp, console) or an OTLP endpoint turns tracing on; `none` or OTEL_SDK_DISABLED=true off."""
    out: dict[str, Any] = {}
    env = {k: v.strip() for k, v in environ.items() if k.startswith("OTEL_") and v.strip()}
    if "OTEL_SERVICE_NAME" in env:
        out["service_name"] = env["OTEL_SERVICE_NAME"]
    endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    if endpoint:
        out["endpoint"] = endpoint
        out["enabled"] = True
    exporter = env.get("OTEL_TRACES_EXPORTER", "").lower()
    if exporter:
        first = exporter.split(",")[0].strip()  # the SDK takes a list; one exporter here
        out["exporter"] = first
        out["enabled"] = first != "none"
    sampler = env.get("OTEL_TRACES_SAMPLER", "").lower()
    if sampler:
        if sampler not in _SAMPLERS:
            raise SettingsError(f"OTEL_TRACES_SAMPLER={sampler}: not one of {', '.join(_SAMPLERS)}")
        out["parent_based"], ratio = _SAMPLERS[sampler]
        out["sampler_ratio"] = ratio if ratio is not None else env.get("OTEL_TRACES_SAMPLER_ARG", 1.0)
    if "OTEL_RESOURCE_ATTRIBUTES" in env:
        attributes = {}
        for pair in env["OTEL_RESOURCE_ATTRIBUTES"].split(","):
            key, sep, value = pair.partition("=")
            if sep and key.strip():
                attributes[unquote(key.strip())] = unquote(value.strip())
        out["resource_attributes"] = attributes
    if env.get("OTEL_SDK_DISABLED", "").lower() == "true":
        out["enabled"] = False
    return out


def load_settings(
    config_file: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    text: str | None = None,
) -> Settings:
    """Merge the sources and validate once. Raises SettingsError with every problem listed.
    `text`: the YAML itself instead of the file's (a config sent to the admin API)."""
    data: dict[str, Any] = {}
    if config_file is not None or text is not None:
        where = f"config {config_file}" if text is None else "the config sent"
        try:
            if text is None:
                assert config_file is not None
                text = config_file.read_text()
            loaded = yaml.safe_load(text) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise SettingsError(f"cannot read {where}: {exc}") from None
        if not isinstance(loaded, dict):
            raise SettingsError(f"{where}: top level must be a mapping")
        data.update(loaded)
    environ = os.environ if environ is None else environ
    data.update(_env_overrides(environ))
    otel = _otel_overrides(environ)
    if otel:
        telemetry = data.get("telemetry")
        telemetry = dict(telemetry) if isinstance(telemetry, dict) else {}
        tracing = telemetry.get("tracing")
        resource = otel.pop("resource_attributes", None)
        tracing = {**tracing, **otel} if isinstance(tracing, dict) else otel
        if resource is not None:  # the variable's attributes over the YAML's
            yaml_resource = tracing.get("resource_attributes")
            tracing["resource_attributes"] = {
                **(yaml_resource if isinstance(yaml_resource, dict) else {}),
                **resource,
            }
        telemetry["tracing"] = tracing
        data["telemetry"] = telemetry
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            value = {**data[key], **value}  # a flag changes one field of a section, not all
        data[key] = value
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}" for e in exc.errors()
        )
        raise SettingsError(f"invalid configuration: {problems}") from None


@dataclass(frozen=True)
class ConfigSource:
    """Where the settings came from (the YAML file and the command line's flags), so that the
    control plane (gateway/control) can read them again the same way."""

    path: Path | None = None
    overrides: Mapping[str, Any] = dataclass_field(default_factory=dict)

    def load(self, text: str | None = None) -> Settings:
        """The file's settings with the flags over them; `text`: this YAML instead of the file."""
        return load_settings(None if text is not None else self.path, self.overrides, text=text)
