from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetConfigRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetConfigResponse(_message.Message):
    __slots__ = ("revision", "yaml", "config_path", "admin_models")
    REVISION_FIELD_NUMBER: _ClassVar[int]
    YAML_FIELD_NUMBER: _ClassVar[int]
    CONFIG_PATH_FIELD_NUMBER: _ClassVar[int]
    ADMIN_MODELS_FIELD_NUMBER: _ClassVar[int]
    revision: int
    yaml: str
    config_path: str
    admin_models: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, revision: _Optional[int] = ..., yaml: _Optional[str] = ..., config_path: _Optional[str] = ..., admin_models: _Optional[_Iterable[str]] = ...) -> None: ...

class ApplyConfigRequest(_message.Message):
    __slots__ = ("yaml", "dry_run")
    YAML_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    yaml: str
    dry_run: bool
    def __init__(self, yaml: _Optional[str] = ..., dry_run: _Optional[bool] = ...) -> None: ...

class ApplyConfigResponse(_message.Message):
    __slots__ = ("applied", "revision", "diff", "errors", "served")
    APPLIED_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    DIFF_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    SERVED_FIELD_NUMBER: _ClassVar[int]
    applied: bool
    revision: int
    diff: _containers.RepeatedScalarFieldContainer[str]
    errors: _containers.RepeatedScalarFieldContainer[str]
    served: bool
    def __init__(self, applied: _Optional[bool] = ..., revision: _Optional[int] = ..., diff: _Optional[_Iterable[str]] = ..., errors: _Optional[_Iterable[str]] = ..., served: _Optional[bool] = ...) -> None: ...

class ChangeResponse(_message.Message):
    __slots__ = ("revision", "diff", "served")
    REVISION_FIELD_NUMBER: _ClassVar[int]
    DIFF_FIELD_NUMBER: _ClassVar[int]
    SERVED_FIELD_NUMBER: _ClassVar[int]
    revision: int
    diff: _containers.RepeatedScalarFieldContainer[str]
    served: bool
    def __init__(self, revision: _Optional[int] = ..., diff: _Optional[_Iterable[str]] = ..., served: _Optional[bool] = ...) -> None: ...

class SetTrafficRequest(_message.Message):
    __slots__ = ("model", "weights")
    class WeightsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    MODEL_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    model: str
    weights: _containers.ScalarMap[str, float]
    def __init__(self, model: _Optional[str] = ..., weights: _Optional[_Mapping[str, float]] = ...) -> None: ...

class VersionRequest(_message.Message):
    __slots__ = ("model", "version")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: str
    def __init__(self, model: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class ModelRequest(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: str
    def __init__(self, model: _Optional[str] = ...) -> None: ...

class ListVersionsRequest(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: str
    def __init__(self, model: _Optional[str] = ...) -> None: ...

class VersionStatus(_message.Message):
    __slots__ = ("model", "version", "state", "reason", "weight", "role", "requests", "errors", "p99_ms")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    P99_MS_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: str
    state: str
    reason: str
    weight: float
    role: str
    requests: int
    errors: int
    p99_ms: float
    def __init__(self, model: _Optional[str] = ..., version: _Optional[str] = ..., state: _Optional[str] = ..., reason: _Optional[str] = ..., weight: _Optional[float] = ..., role: _Optional[str] = ..., requests: _Optional[int] = ..., errors: _Optional[int] = ..., p99_ms: _Optional[float] = ...) -> None: ...

class ListVersionsResponse(_message.Message):
    __slots__ = ("revision", "versions")
    REVISION_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    revision: int
    versions: _containers.RepeatedCompositeFieldContainer[VersionStatus]
    def __init__(self, revision: _Optional[int] = ..., versions: _Optional[_Iterable[_Union[VersionStatus, _Mapping]]] = ...) -> None: ...

class RolloutStatus(_message.Message):
    __slots__ = ("model", "canary", "baseline", "status", "step", "steps", "canary_weight", "reason")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    CANARY_FIELD_NUMBER: _ClassVar[int]
    BASELINE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    CANARY_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    model: str
    canary: str
    baseline: str
    status: str
    step: int
    steps: _containers.RepeatedScalarFieldContainer[float]
    canary_weight: float
    reason: str
    def __init__(self, model: _Optional[str] = ..., canary: _Optional[str] = ..., baseline: _Optional[str] = ..., status: _Optional[str] = ..., step: _Optional[int] = ..., steps: _Optional[_Iterable[float]] = ..., canary_weight: _Optional[float] = ..., reason: _Optional[str] = ...) -> None: ...

class GetRolloutResponse(_message.Message):
    __slots__ = ("rollouts",)
    ROLLOUTS_FIELD_NUMBER: _ClassVar[int]
    rollouts: _containers.RepeatedCompositeFieldContainer[RolloutStatus]
    def __init__(self, rollouts: _Optional[_Iterable[_Union[RolloutStatus, _Mapping]]] = ...) -> None: ...

class Disagreement(_message.Message):
    __slots__ = ("at", "input_digest", "max_abs_diff", "outputs_json")
    AT_FIELD_NUMBER: _ClassVar[int]
    INPUT_DIGEST_FIELD_NUMBER: _ClassVar[int]
    MAX_ABS_DIFF_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_JSON_FIELD_NUMBER: _ClassVar[int]
    at: float
    input_digest: str
    max_abs_diff: float
    outputs_json: str
    def __init__(self, at: _Optional[float] = ..., input_digest: _Optional[str] = ..., max_abs_diff: _Optional[float] = ..., outputs_json: _Optional[str] = ...) -> None: ...

class ShadowPair(_message.Message):
    __slots__ = ("model", "primary", "shadow", "compared", "agreed", "disagreed", "failed", "dropped", "agreement_rate", "argmax_agreement", "p99_ms", "diff_bounds", "diff_counts", "recent")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PRIMARY_FIELD_NUMBER: _ClassVar[int]
    SHADOW_FIELD_NUMBER: _ClassVar[int]
    COMPARED_FIELD_NUMBER: _ClassVar[int]
    AGREED_FIELD_NUMBER: _ClassVar[int]
    DISAGREED_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    AGREEMENT_RATE_FIELD_NUMBER: _ClassVar[int]
    ARGMAX_AGREEMENT_FIELD_NUMBER: _ClassVar[int]
    P99_MS_FIELD_NUMBER: _ClassVar[int]
    DIFF_BOUNDS_FIELD_NUMBER: _ClassVar[int]
    DIFF_COUNTS_FIELD_NUMBER: _ClassVar[int]
    RECENT_FIELD_NUMBER: _ClassVar[int]
    model: str
    primary: str
    shadow: str
    compared: int
    agreed: int
    disagreed: int
    failed: int
    dropped: int
    agreement_rate: float
    argmax_agreement: float
    p99_ms: float
    diff_bounds: _containers.RepeatedScalarFieldContainer[float]
    diff_counts: _containers.RepeatedScalarFieldContainer[int]
    recent: _containers.RepeatedCompositeFieldContainer[Disagreement]
    def __init__(self, model: _Optional[str] = ..., primary: _Optional[str] = ..., shadow: _Optional[str] = ..., compared: _Optional[int] = ..., agreed: _Optional[int] = ..., disagreed: _Optional[int] = ..., failed: _Optional[int] = ..., dropped: _Optional[int] = ..., agreement_rate: _Optional[float] = ..., argmax_agreement: _Optional[float] = ..., p99_ms: _Optional[float] = ..., diff_bounds: _Optional[_Iterable[float]] = ..., diff_counts: _Optional[_Iterable[int]] = ..., recent: _Optional[_Iterable[_Union[Disagreement, _Mapping]]] = ...) -> None: ...

class GetShadowReportResponse(_message.Message):
    __slots__ = ("pairs",)
    PAIRS_FIELD_NUMBER: _ClassVar[int]
    pairs: _containers.RepeatedCompositeFieldContainer[ShadowPair]
    def __init__(self, pairs: _Optional[_Iterable[_Union[ShadowPair, _Mapping]]] = ...) -> None: ...

class DriftReportRequest(_message.Message):
    __slots__ = ("model", "version")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: str
    def __init__(self, model: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class DriftVersion(_message.Message):
    __slots__ = ("version", "alert", "reason", "windows")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ALERT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    WINDOWS_FIELD_NUMBER: _ClassVar[int]
    version: str
    alert: bool
    reason: str
    windows: int
    def __init__(self, version: _Optional[str] = ..., alert: _Optional[bool] = ..., reason: _Optional[str] = ..., windows: _Optional[int] = ...) -> None: ...

class DriftFeature(_message.Message):
    __slots__ = ("version", "tensor", "role", "feature", "window_rows", "psi", "js", "ks", "wasserstein", "nan_rate", "counts", "over", "out_of_range_rate", "edges", "reference_counts", "live_counts", "kind")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    TENSOR_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    FEATURE_FIELD_NUMBER: _ClassVar[int]
    WINDOW_ROWS_FIELD_NUMBER: _ClassVar[int]
    PSI_FIELD_NUMBER: _ClassVar[int]
    JS_FIELD_NUMBER: _ClassVar[int]
    KS_FIELD_NUMBER: _ClassVar[int]
    WASSERSTEIN_FIELD_NUMBER: _ClassVar[int]
    NAN_RATE_FIELD_NUMBER: _ClassVar[int]
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    OVER_FIELD_NUMBER: _ClassVar[int]
    OUT_OF_RANGE_RATE_FIELD_NUMBER: _ClassVar[int]
    EDGES_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_COUNTS_FIELD_NUMBER: _ClassVar[int]
    LIVE_COUNTS_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    version: str
    tensor: str
    role: str
    feature: str
    window_rows: int
    psi: float
    js: float
    ks: float
    wasserstein: float
    nan_rate: float
    counts: bool
    over: bool
    out_of_range_rate: float
    edges: _containers.RepeatedScalarFieldContainer[float]
    reference_counts: _containers.RepeatedScalarFieldContainer[int]
    live_counts: _containers.RepeatedScalarFieldContainer[int]
    kind: str
    def __init__(self, version: _Optional[str] = ..., tensor: _Optional[str] = ..., role: _Optional[str] = ..., feature: _Optional[str] = ..., window_rows: _Optional[int] = ..., psi: _Optional[float] = ..., js: _Optional[float] = ..., ks: _Optional[float] = ..., wasserstein: _Optional[float] = ..., nan_rate: _Optional[float] = ..., counts: _Optional[bool] = ..., over: _Optional[bool] = ..., out_of_range_rate: _Optional[float] = ..., edges: _Optional[_Iterable[float]] = ..., reference_counts: _Optional[_Iterable[int]] = ..., live_counts: _Optional[_Iterable[int]] = ..., kind: _Optional[str] = ...) -> None: ...

class GetDriftReferenceResponse(_message.Message):
    __slots__ = ("profile", "reference")
    PROFILE_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    profile: bytes
    reference: str
    def __init__(self, profile: _Optional[bytes] = ..., reference: _Optional[str] = ...) -> None: ...

class GetDriftReportResponse(_message.Message):
    __slots__ = ("model", "score", "alert", "versions", "features", "reference")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    ALERT_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    model: str
    score: str
    alert: float
    versions: _containers.RepeatedCompositeFieldContainer[DriftVersion]
    features: _containers.RepeatedCompositeFieldContainer[DriftFeature]
    reference: str
    def __init__(self, model: _Optional[str] = ..., score: _Optional[str] = ..., alert: _Optional[float] = ..., versions: _Optional[_Iterable[_Union[DriftVersion, _Mapping]]] = ..., features: _Optional[_Iterable[_Union[DriftFeature, _Mapping]]] = ..., reference: _Optional[str] = ...) -> None: ...

class CostReportRequest(_message.Message):
    __slots__ = ("model", "since_s")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    SINCE_S_FIELD_NUMBER: _ClassVar[int]
    model: str
    since_s: float
    def __init__(self, model: _Optional[str] = ..., since_s: _Optional[float] = ...) -> None: ...

class VersionCost(_message.Message):
    __slots__ = ("model", "version", "requests", "rows", "cpu_seconds", "gpu_seconds", "wall_seconds", "cpu_measured", "overhead_cpu_seconds", "cpu_seconds_per_1k", "usd", "usd_per_1k")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    CPU_SECONDS_FIELD_NUMBER: _ClassVar[int]
    GPU_SECONDS_FIELD_NUMBER: _ClassVar[int]
    WALL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    CPU_MEASURED_FIELD_NUMBER: _ClassVar[int]
    OVERHEAD_CPU_SECONDS_FIELD_NUMBER: _ClassVar[int]
    CPU_SECONDS_PER_1K_FIELD_NUMBER: _ClassVar[int]
    USD_FIELD_NUMBER: _ClassVar[int]
    USD_PER_1K_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: str
    requests: int
    rows: int
    cpu_seconds: float
    gpu_seconds: float
    wall_seconds: float
    cpu_measured: bool
    overhead_cpu_seconds: float
    cpu_seconds_per_1k: float
    usd: float
    usd_per_1k: float
    def __init__(self, model: _Optional[str] = ..., version: _Optional[str] = ..., requests: _Optional[int] = ..., rows: _Optional[int] = ..., cpu_seconds: _Optional[float] = ..., gpu_seconds: _Optional[float] = ..., wall_seconds: _Optional[float] = ..., cpu_measured: _Optional[bool] = ..., overhead_cpu_seconds: _Optional[float] = ..., cpu_seconds_per_1k: _Optional[float] = ..., usd: _Optional[float] = ..., usd_per_1k: _Optional[float] = ...) -> None: ...

class GetCostReportResponse(_message.Message):
    __slots__ = ("covered_s", "cpu_core_hour_usd", "gpu_hour_usd", "overhead_cpu_seconds", "versions")
    COVERED_S_FIELD_NUMBER: _ClassVar[int]
    CPU_CORE_HOUR_USD_FIELD_NUMBER: _ClassVar[int]
    GPU_HOUR_USD_FIELD_NUMBER: _ClassVar[int]
    OVERHEAD_CPU_SECONDS_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    covered_s: float
    cpu_core_hour_usd: float
    gpu_hour_usd: float
    overhead_cpu_seconds: float
    versions: _containers.RepeatedCompositeFieldContainer[VersionCost]
    def __init__(self, covered_s: _Optional[float] = ..., cpu_core_hour_usd: _Optional[float] = ..., gpu_hour_usd: _Optional[float] = ..., overhead_cpu_seconds: _Optional[float] = ..., versions: _Optional[_Iterable[_Union[VersionCost, _Mapping]]] = ...) -> None: ...
