"""The compiled extension is built here (a silent fallback would hide a broken build), and the
fallback works where it is not."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import kernels
from kernels import _stats


def test_the_compiled_extension_is_built_and_chosen() -> None:
    assert kernels.COMPILED, "kernels/_stats.pyx is not built: run `pip install -e .`"
    assert kernels.BACKEND is _stats
    assert kernels.NumericStats([[0.0, 1.0]])._backend is _stats


def test_without_the_extension_the_reference_runs_with_a_warning() -> None:
    script = textwrap.dedent(
        """
        import sys, warnings
        import numpy as np
        sys.modules["kernels._stats"] = None  # as if it had never been built
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            import kernels
        stats = kernels.NumericStats([[0.0, 1.0, 2.0]])
        stats.update(np.array([[0.5], [1.5], [9.0]]))
        print(kernels.COMPILED, kernels.BACKEND.__name__, stats.bins.tolist())
        print(*(f"{w.category.__name__}: {w.message}" for w in caught), sep="\\n")
        """
    )
    root = Path(kernels.__file__).parent.parent
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=root, capture_output=True, text=True, check=True
    )
    lines = done.stdout.splitlines()
    assert lines[0] == "False kernels._reference [[1, 2]]"
    assert lines[1].startswith("RuntimeWarning: kernels: the compiled extension is not built")
