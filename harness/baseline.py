"""An earlier commit of the gateway, beside the working tree, for before/after benchmarks run side
by side in one process (`--baseline REV` of bench_h2load.py and bench_batching.py).

    with checkout("HEAD~1") as tree:
        GatewayProcess(repo, env=baseline_env(tree))   # serves REV's gateway/

A detached git worktree of REV in a temporary folder, with the working tree's compiled kernels
copied in (REV's sources, this build's extensions: the benchmarks compare the Python).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["baseline_env", "checkout"]

ROOT = Path(__file__).resolve().parent.parent


@contextmanager
def checkout(rev: str) -> Iterator[Path]:
    """REV's tree in a temporary folder; removed on exit."""
    folder = Path(tempfile.mkdtemp(prefix="modelgate-baseline-"))
    tree = folder / "tree"
    git = ["git", "-C", str(ROOT)]
    subprocess.run([*git, "worktree", "add", "--detach", str(tree), rev], check=True, capture_output=True)
    try:
        for built in (ROOT / "kernels").glob("*.so"):
            shutil.copy2(built, tree / "kernels" / built.name)
        yield tree
    finally:
        subprocess.run([*git, "worktree", "remove", "--force", str(tree)], capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


def baseline_env(tree: Path) -> dict[str, str]:
    """The environment in which `python -m gateway` imports `tree`'s gateway (ahead of the
    editable install of the working tree)."""
    return {"PYTHONPATH": str(tree)}
