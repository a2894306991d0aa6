"""The transport seam: which server a setting picks, and one reading of the caller's deadline."""

from __future__ import annotations

import asyncio
import sys

import pytest

from gateway.transport import deadline_of, native_available, resolve_transport


class Context:
    def __init__(self, remaining: float | None) -> None:
        self.remaining = remaining

    def time_remaining(self) -> float | None:
        return self.remaining


def test_auto_is_native_where_the_wheel_is_installed() -> None:
    assert native_available()  # a dependency on Linux and macOS
    assert resolve_transport("auto") == "native"
    assert resolve_transport("native") == "native"
    assert resolve_transport("grpcio") == "grpcio"


def test_native_without_the_wheel_is_an_error_and_auto_falls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pygrpc_native", None)  # as if not installed
    monkeypatch.setattr("gateway.transport._server.native_available", lambda: False)
    assert resolve_transport("auto") == "grpcio"
    with pytest.raises(RuntimeError, match="pygrpc-native"):
        resolve_transport("native")


@pytest.mark.parametrize(
    ("remaining", "expected"),
    [(None, None), (float(sys.maxsize), None), (1.5, 1.5), (0.0, 0.0)],
    ids=["grpcio-none", "native-maxsize", "set", "expired"],
)
def test_deadline_reads_both_transports_no_deadline_values(
    remaining: float | None, expected: float | None
) -> None:
    async def read() -> float | None:
        now = asyncio.get_running_loop().time()
        deadline = deadline_of(Context(remaining))
        return None if deadline is None else deadline - now

    got = asyncio.run(read())
    assert got is None if expected is None else got == pytest.approx(expected, abs=0.05)
