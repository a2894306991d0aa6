"""Builds the Cython extensions (kernels/_stats.pyx, gateway/_wire.pyx); everything else is in
pyproject.toml."""

import sys

from Cython.Build import cythonize
from setuptools import Extension, setup

# -O3 but not -march=native: the wheel must run on any machine of its platform (SSE2 on x86-64).
# MSVC has no -O3 (its default /O2 is the same idea).
flags = [] if sys.platform == "win32" else ["-O3"]
extensions = [
    Extension("kernels._stats", ["kernels/_stats.pyx"], extra_compile_args=flags),
    Extension("gateway._wire", ["gateway/_wire.pyx"], extra_compile_args=flags),
]

setup(ext_modules=cythonize(extensions, compiler_directives={"language_level": "3"}))
