"""The committed stubs in gateway/_proto are what tools/gen_protos.py makes of protos/."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_generated_stubs_are_current() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "gen_protos.py"), "--check"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr


def test_wire_compatible_with_tritonclient() -> None:
    """Same package, services, method paths and field numbers as tritonclient's own stubs."""
    from tritonclient.grpc import model_config_pb2 as theirs_config
    from tritonclient.grpc import service_pb2 as theirs

    from gateway._proto import inference_pb2 as ours
    from gateway._proto import model_config_pb2 as ours_config

    ours_svc = ours.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    theirs_svc = theirs.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    assert ours_svc.full_name == theirs_svc.full_name
    for method in ours_svc.methods:
        other = theirs_svc.methods_by_name[method.name]
        assert (method.input_type.full_name, method.output_type.full_name) == (
            other.input_type.full_name,
            other.output_type.full_name,
        )
        assert (method.client_streaming, method.server_streaming) == (
            other.client_streaming,
            other.server_streaming,
        )

    def check(mine: object, other: object) -> None:
        for field in mine.fields:  # type: ignore[attr-defined]
            if field.number >= 100:  # modelgate extensions
                continue
            twin = other.fields_by_number[field.number]  # type: ignore[attr-defined]
            assert (field.name, field.type, field.is_repeated) == (twin.name, twin.type, twin.is_repeated), (
                field.full_name
            )
            if field.message_type is not None and not field.message_type.GetOptions().map_entry:
                check(field.message_type, twin.message_type)
            if field.enum_type is not None:
                assert {v.name: v.number for v in field.enum_type.values}.items() <= {
                    v.name: v.number for v in twin.enum_type.values
                }.items()

    for name, message in ours.DESCRIPTOR.message_types_by_name.items():
        check(message, theirs.DESCRIPTOR.message_types_by_name[name])
    for name, message in ours_config.DESCRIPTOR.message_types_by_name.items():
        check(message, theirs_config.DESCRIPTOR.message_types_by_name[name])
