"""The admin API (protos/admin.proto): messages in, the control plane's operations, messages out.

It runs on its own port (`admin_port`, loopback by default) and its own grpc.aio server, never
the inference port. Changes answer once every serving process took the new revision, or after
`WAIT_S` with `served` false (the change stands; a worker still loading picks it up).
"""

from __future__ import annotations

import json
import logging
from typing import Any

import grpc

from .._proto import admin_pb2 as pb
from .._proto import admin_pb2_grpc
from ..control import Change, ControlPlane
from ..errors import InvalidArgument
from ._errors import handled

__all__ = ["AdminServicer", "start_admin_server"]

log = logging.getLogger("gateway.admin")

WAIT_S = 10.0


class AdminServicer(admin_pb2_grpc.AdminServiceServicer):
    def __init__(self, plane: ControlPlane) -> None:
        self._plane = plane

    async def _changed(self, change: Change) -> pb.ChangeResponse:
        served = await self._plane.wait_served(change.revision, WAIT_S)
        return pb.ChangeResponse(revision=change.revision, diff=change.diff, served=served)

    @handled
    async def GetConfig(self, request: pb.GetConfigRequest, context: Any) -> pb.GetConfigResponse:
        plane = self._plane
        return pb.GetConfigResponse(
            revision=plane.revision,
            yaml=plane.config_yaml(),
            config_path=str(plane.source.path or ""),
            admin_models=plane.admin_models,
        )

    @handled
    async def ApplyConfig(self, request: pb.ApplyConfigRequest, context: Any) -> pb.ApplyConfigResponse:
        change = self._plane.apply_config(request.yaml, request.dry_run)
        served = change.applied and await self._plane.wait_served(change.revision, WAIT_S)
        return pb.ApplyConfigResponse(
            applied=change.applied,
            revision=change.revision,
            diff=change.diff,
            errors=change.errors,
            served=served,
        )

    @handled
    async def SetTraffic(self, request: pb.SetTrafficRequest, context: Any) -> pb.ChangeResponse:
        _need(request.model, "model")
        if not request.weights:
            raise InvalidArgument("weights: give at least one version's weight, e.g. {'1': 90, '2': 10}")
        return await self._changed(self._plane.set_traffic(request.model, dict(request.weights)))

    @handled
    async def LoadVersion(self, request: pb.VersionRequest, context: Any) -> pb.ChangeResponse:
        _need(request.model, "model")
        _need(request.version, "version")
        return await self._changed(self._plane.load_version(request.model, request.version))

    @handled
    async def UnloadVersion(self, request: pb.VersionRequest, context: Any) -> pb.ChangeResponse:
        _need(request.model, "model")
        _need(request.version, "version")
        return await self._changed(self._plane.unload_version(request.model, request.version))

    @handled
    async def ListVersions(self, request: pb.ListVersionsRequest, context: Any) -> pb.ListVersionsResponse:
        rows = self._plane.list_versions(request.model)
        return pb.ListVersionsResponse(
            revision=self._plane.revision, versions=[pb.VersionStatus(**r) for r in rows]
        )

    @handled
    async def GetRollout(self, request: pb.ModelRequest, context: Any) -> pb.GetRolloutResponse:
        out = []
        for r in self._plane.rollout_status(request.model):
            out.append(
                pb.RolloutStatus(
                    model=r["model"],
                    canary=r["canary"],
                    baseline=r["baseline"],
                    status=r["status"],
                    step=r["step"] + 1,
                    steps=r["steps"],
                    canary_weight=r["traffic"][r["canary"]],
                    reason=r["reason"],
                )
            )
        return pb.GetRolloutResponse(rollouts=out)

    async def _rollout(self, request: pb.ModelRequest, what: str) -> pb.ChangeResponse:
        _need(request.model, "model")
        return await self._changed(self._plane.rollout_command(request.model, what))

    @handled
    async def Promote(self, request: pb.ModelRequest, context: Any) -> pb.ChangeResponse:
        return await self._rollout(request, "promote")

    @handled
    async def Rollback(self, request: pb.ModelRequest, context: Any) -> pb.ChangeResponse:
        return await self._rollout(request, "rollback")

    @handled
    async def Pause(self, request: pb.ModelRequest, context: Any) -> pb.ChangeResponse:
        return await self._rollout(request, "pause")

    @handled
    async def Resume(self, request: pb.ModelRequest, context: Any) -> pb.ChangeResponse:
        return await self._rollout(request, "resume")

    @handled
    async def GetShadowReport(self, request: pb.ModelRequest, context: Any) -> pb.GetShadowReportResponse:
        pairs = []
        for p in self._plane.shadow_report(request.model):
            recent = [
                pb.Disagreement(
                    at=d["at"],
                    input_digest=d["input_digest"],
                    max_abs_diff=d["max_abs_diff"],
                    outputs_json=json.dumps(d["outputs"]),
                )
                for d in p["recent"]
            ]
            pairs.append(pb.ShadowPair(**{k: v for k, v in p.items() if k != "recent"}, recent=recent))
        return pb.GetShadowReportResponse(pairs=pairs)

    @handled
    async def GetDriftReport(self, request: pb.DriftReportRequest, context: Any) -> pb.GetDriftReportResponse:
        _need(request.model, "model")
        plane = self._plane
        rows = plane.drift_report(request.model, request.version)
        spec = plane.drift.settings_of(request.model)
        assert spec is not None  # drift_report refused a model without drift monitoring
        versions = [
            pb.DriftVersion(
                version=v,
                alert=(request.model, v) in plane.drift.alerting,
                reason=plane.drift.alerting.get((request.model, v), ""),
                windows=n,
            )
            for (m, v), n in sorted(plane.drift.windows.items())
            if m == request.model and (not request.version or v == request.version)
        ]
        features = [pb.DriftFeature(**{k: v for k, v in r.items() if k != "model"}) for r in rows]
        return pb.GetDriftReportResponse(
            model=request.model,
            score=spec.score,
            alert=spec.alert,
            versions=versions,
            features=features,
            reference=plane.drift.reference_state(request.model),
        )

    @handled
    async def GetDriftReference(self, request: pb.ModelRequest, context: Any) -> pb.GetDriftReferenceResponse:
        _need(request.model, "model")
        profile, reference = self._plane.drift_reference(request.model)
        return pb.GetDriftReferenceResponse(profile=profile, reference=reference)

    @handled
    async def GetCostReport(self, request: pb.CostReportRequest, context: Any) -> pb.GetCostReportResponse:
        if not request.since_s >= 0:  # NaN too
            raise InvalidArgument(f"since_s must be >= 0 seconds, got {request.since_s}")
        report = self._plane.cost_report(request.model, request.since_s)
        versions = [
            pb.VersionCost(**{k: v for k, v in row.items() if v is not None}) for row in report["versions"]
        ]
        return pb.GetCostReportResponse(
            **{k: v for k, v in report.items() if k != "versions" and v is not None}, versions=versions
        )


def _need(value: str, name: str) -> None:
    if not value:
        raise InvalidArgument(f"{name} is required")


async def start_admin_server(plane: ControlPlane, host: str, port: int) -> tuple[grpc.aio.Server, int]:
    """Serve the admin API on host:port (grpc.aio: a few calls a minute need no native front).
    Raises OSError when the port cannot be bound."""
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])  # a busy port is an error, not shared
    admin_pb2_grpc.add_AdminServiceServicer_to_server(AdminServicer(plane), server)
    address = f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError:
        bound = 0
    if bound == 0:
        raise OSError(f"cannot bind the admin API to {address}: port in use or address not available")
    await server.start()
    return server, bound
