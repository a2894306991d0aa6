"""Reference profiles: what a model version's inputs and outputs looked like on training data.

A profile holds, for each numeric tensor of the model (inputs and outputs; a tensor's values per
row are its features): the quantile bin edges (kernels.quantile_edges), the reference's counts
in those bins, its NaN counts, its row count and the feature names. It is a `.npz` file (no
pickles), made by `modelgate profile build` from `.npy`, `.npz`, `.csv` or (with pyarrow)
`.parquet` data by running the model on it.
"""

from __future__ import annotations

import json
import sys
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from kernels import NumericStats, quantile_edges

__all__ = ["FORMAT", "Profile", "ProfileError", "TensorProfile", "build_profile", "load_profile", "read_data"]

FORMAT = 1


class ProfileError(Exception):
    """A profile or data file that cannot be used; the message says which and why."""


@dataclass(frozen=True)
class TensorProfile:
    name: str
    role: Literal["input", "output"]
    edges: NDArray[np.float64]  # (F, B + 1)
    counts: NDArray[np.int64]  # (F, B): the reference's rows per bin
    nan: NDArray[np.int64]  # (F,)
    rows: int
    features: tuple[str, ...] = ()

    @property
    def n_features(self) -> int:
        return int(self.edges.shape[0])


@dataclass(frozen=True)
class Profile:
    model: str
    version: str
    bins: int
    tensors: dict[str, TensorProfile] = field(default_factory=dict)

    def save(self, path: Path) -> None:
        meta = {
            "format": FORMAT,
            "model": self.model,
            "version": self.version,
            "bins": self.bins,
            "tensors": [
                {"name": t.name, "role": t.role, "rows": t.rows, "features": list(t.features)}
                for t in self.tensors.values()
            ],
        }
        arrays: dict[str, Any] = {"meta": np.array(json.dumps(meta))}
        for i, t in enumerate(self.tensors.values()):
            arrays[f"t{i}_edges"], arrays[f"t{i}_counts"], arrays[f"t{i}_nan"] = t.edges, t.counts, t.nan
        with open(path, "wb") as out:
            np.savez_compressed(out, **arrays)

    def check(
        self, inputs: Mapping[str, tuple[str, int]], outputs: Mapping[str, tuple[str, int]]
    ) -> list[str]:
        """Mismatches with a model's signature, given as name -> (datatype, values per row)."""
        problems = []
        for t in self.tensors.values():
            side = inputs if t.role == "input" else outputs
            if t.name not in side:
                problems.append(f"the profile's {t.role} '{t.name}' is not one of the model's {t.role}s")
                continue
            datatype, width = side[t.name]
            if width != t.n_features:
                problems.append(
                    f"{t.role} '{t.name}' has {width} values per row; the profile has {t.n_features} features"
                )
            if datatype in ("BYTES", "BOOL"):
                problems.append(f"{t.role} '{t.name}' is {datatype}: not numeric")
        return problems


def load_profile(path: Path) -> Profile:
    """Read a profile; ProfileError says what is wrong with a missing, corrupt or truncated one."""
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            if meta.get("format") != FORMAT:
                raise ProfileError(
                    f"profile {path}: format {meta.get('format')!r}, this build reads {FORMAT}"
                )
            tensors = {}
            for i, t in enumerate(meta["tensors"]):
                edges = np.asarray(data[f"t{i}_edges"], dtype=np.float64)
                counts = np.asarray(data[f"t{i}_counts"], dtype=np.int64)
                nan = np.asarray(data[f"t{i}_nan"], dtype=np.int64)
                if (
                    edges.ndim != 2
                    or counts.shape != (edges.shape[0], edges.shape[1] - 1)
                    or nan.shape != (edges.shape[0],)
                ):
                    raise ProfileError(f"profile {path}: tensor '{t['name']}' has inconsistent array shapes")
                if t["role"] not in ("input", "output"):
                    raise ProfileError(f"profile {path}: tensor '{t['name']}' has role {t['role']!r}")
                tensors[t["name"]] = TensorProfile(
                    t["name"], t["role"], edges, counts, nan, int(t["rows"]), tuple(t.get("features", ()))
                )
            return Profile(str(meta["model"]), str(meta["version"]), int(meta["bins"]), tensors)
    except ProfileError:
        raise
    except FileNotFoundError:
        raise ProfileError(f"profile {path}: no such file") from None
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile, EOFError) as exc:
        raise ProfileError(f"profile {path} is not a readable modelgate profile ({exc})") from None


def read_data(path: Path, input_names: Sequence[str]) -> tuple[dict[str, NDArray[Any]], tuple[str, ...]]:
    """Training data for a profile: arrays by input name, and feature names when the file has
    them (a CSV header, parquet columns). `.npy` and `.csv` and `.parquet` hold one input (the
    model's only one); `.npz` holds arrays named like the inputs."""
    suffix = path.suffix.lower()
    names: tuple[str, ...] = ()
    try:
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as data:
                missing = [n for n in input_names if n not in data]
                if missing:
                    raise ProfileError(
                        f"{path}: no array named {', '.join(missing)} (it has {', '.join(data.files)})"
                    )
                return {n: np.asarray(data[n]) for n in input_names}, ()
        if suffix == ".npy":
            array = np.load(path, allow_pickle=False)
        elif suffix == ".csv":
            with open(path) as f:
                header = f.readline().strip().split(",")
            if all(_is_number(h) for h in header):
                array = np.loadtxt(path, delimiter=",", ndmin=2)
            else:
                names = tuple(h.strip() for h in header)
                array = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)
        elif suffix == ".parquet":
            try:
                import pyarrow.parquet as pq  # type: ignore[import-not-found]
            except ImportError:
                raise ProfileError(f"{path}: reading .parquet needs pyarrow (pip install pyarrow)") from None
            table = pq.read_table(path)
            names = tuple(table.column_names)
            array = np.column_stack([table.column(n).to_numpy() for n in names])
        else:
            raise ProfileError(f"{path}: unknown data format '{suffix}' (.npy, .npz, .csv or .parquet)")
    except ProfileError:
        raise
    except FileNotFoundError:
        raise ProfileError(f"{path}: no such file") from None
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise ProfileError(f"{path} cannot be read as {suffix[1:]} data ({exc})") from None
    if len(input_names) != 1:
        raise ProfileError(
            f"{path}: the model has inputs {', '.join(input_names)}; give an .npz with one array per input"
        )
    return {input_names[0]: array}, names


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _profile_tensor(
    name: str,
    role: Literal["input", "output"],
    chunks: list[NDArray[Any]],
    bins: int,
    features: tuple[str, ...],
) -> TensorProfile:
    data = np.concatenate(chunks).astype(np.float64, copy=False)
    edges = quantile_edges(data, bins)
    stats = NumericStats(edges)
    stats.update(np.ascontiguousarray(data))
    width = data.shape[1]
    return TensorProfile(
        name, role, edges, stats.bins.copy(), stats.nan_count.copy(), int(data.shape[0]),
        features if len(features) == width else (),
    )  # fmt: skip


def build_profile(
    model: str,
    version: str,
    inputs: Mapping[str, NDArray[Any]],
    run: Callable[[dict[str, NDArray[Any]]], Mapping[str, NDArray[Any]]],
    bins: int = 10,
    chunk_rows: int = 1024,
    features: tuple[str, ...] = (),
    progress: bool = True,
) -> Profile:
    """Run the model on `inputs` (rows first) in chunks and profile its inputs and outputs."""
    rows = {a.shape[0] for a in inputs.values()}
    if len(rows) != 1:
        raise ProfileError(f"the inputs have different row counts: {sorted(rows)}")
    total = rows.pop()
    if total == 0:
        raise ProfileError("the data has no rows")
    seen_in: dict[str, list[NDArray[Any]]] = {n: [] for n in inputs}
    seen_out: dict[str, list[NDArray[Any]]] = {}
    for start in range(0, total, chunk_rows):
        batch = {n: np.ascontiguousarray(a[start : start + chunk_rows]) for n, a in inputs.items()}
        outputs = run(batch)
        for n, a in batch.items():
            seen_in[n].append(a.reshape(a.shape[0], -1))
        for n, a in outputs.items():
            if a.dtype.kind in "fiu":
                seen_out.setdefault(n, []).append(a.reshape(a.shape[0], -1))
        if progress:
            done = min(total, start + chunk_rows)
            bar = "#" * (30 * done // total)
            print(f"\rprofiling {total} rows [{bar:<30}] {100 * done // total:3d}%", end="", file=sys.stderr)
    if progress:
        print(file=sys.stderr)
    tensors = {
        n: _profile_tensor(n, "input", c, bins, features)
        for n, c in seen_in.items()
        if c[0].dtype.kind in "fiu"
    }
    tensors.update({n: _profile_tensor(n, "output", c, bins, ()) for n, c in seen_out.items()})
    return Profile(model, version, bins, tensors)
