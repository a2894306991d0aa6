"""Every kernel test runs against both backends: the compiled loops and the NumPy reference.

The compiled module is imported directly, so a missing build fails these tests rather than
quietly testing the reference twice.
"""

from __future__ import annotations

from types import ModuleType

import pytest

from kernels import _reference, _stats


@pytest.fixture(params=[_stats, _reference], ids=["compiled", "reference"])
def backend(request: pytest.FixtureRequest) -> ModuleType:
    module: ModuleType = request.param
    return module
