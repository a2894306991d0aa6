"""Reference profiles: what a model version's inputs and outputs looked like on training data.

A profile holds, for each numeric tensor of the model (inputs and outputs; a tensor's values per
row are its features): per numeric feature the quantile bin edges (kernels.quantile_edges) and
the reference's counts in those bins; per categorical feature its number of categories K and
the reference's counts of codes 0..K-1 and "other"; NaN counts, the row count and the feature
names. It is a `.npz` file (no pickles), made by `modelgate profile build` from `.npy`, `.npz`,
`.csv` or (with pyarrow) `.parquet` data by running the model on it, or by the control plane
from the baseline's live rows (`profile_from_rows`, gateway/drift/live.py).

Categorical features are codes, as an embedding lookup or a one-hot index takes them: every
feature of an integer tensor whose reference codes are all below MAX_CATEGORIES, and the float
features asked for (`categorical`), whose values count truncated to integers. K is one more than
the largest code in the reference; a negative code, one >= K, and a non-finite float count as
"other". Their counts go through kernels.CategoricalStats, the numeric ones' through NumericStats.
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

from kernels import CategoricalStats, NumericStats, quantile_edges

__all__ = [
    "FORMAT",
    "MAX_CATEGORIES",
    "Profile",
    "ProfileError",
    "TensorProfile",
    "build_profile",
    "category_codes",
    "load_profile",
    "profile_from_rows",
    "read_data",
]

FORMAT = 2  # 2 added categorical features; format 1 files (all numeric) read as they are
MAX_CATEGORIES = 256  # an integer feature with a code at or above this is binned as a number
_NO_CATEGORIES = np.zeros((0, 1), np.int64)


class ProfileError(Exception):
    """A profile or data file that cannot be used; the message says which and why."""


@dataclass(frozen=True)
class TensorProfile:
    """One tensor's reference. Features are numbered 0..F-1 in the tensor's row; `categorical`
    names the categorical ones, the rest are numeric (`numeric`), in order."""

    name: str
    role: Literal["input", "output"]
    edges: NDArray[np.float64]  # (N, B + 1): the numeric features' bin edges
    counts: NDArray[np.int64]  # (N, B): the reference's rows per bin
    nan: NDArray[np.int64]  # (F,): every feature's NaN count (0 for categorical ones)
    rows: int
    features: tuple[str, ...] = ()
    categorical: tuple[int, ...] = ()  # the categorical features, rising
    categories: NDArray[np.int64] = field(default_factory=lambda: _NO_CATEGORIES)  # (C, max K + 1)
    n_categories: NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, np.int64))  # (C,): K

    @property
    def n_features(self) -> int:
        return int(self.nan.shape[0])

    @property
    def numeric(self) -> tuple[int, ...]:
        chosen = set(self.categorical)
        return tuple(i for i in range(self.n_features) if i not in chosen)

    @property
    def flat_size(self) -> int:
        """Length of a monitor's flat counts: the numeric bins, then the categorical counts."""
        return int(self.counts.size + self.categories.size)

    @property
    def reference(self) -> NDArray[np.int64]:
        """The reference's counts, flat as a monitor sends its own."""
        return np.concatenate([self.counts.ravel(), self.categories.ravel()])

    def split(self, flat: NDArray[np.int64]) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        """Flat counts as (numeric bins (N, B), categorical counts (C, max K + 1))."""
        cut = self.counts.size
        return flat[:cut].reshape(self.counts.shape), flat[cut:].reshape(self.categories.shape)


@dataclass(frozen=True)
class Profile:
    model: str
    version: str
    bins: int
    tensors: dict[str, TensorProfile] = field(default_factory=dict)
    source: str = ""  # how it was made, when not from training data (a live reference says so)

    def save(self, path: Path) -> None:
        meta = {
            "format": FORMAT,
            "model": self.model,
            "version": self.version,
            "bins": self.bins,
            "tensors": [
                {
                    "name": t.name, "role": t.role, "rows": t.rows, "features": list(t.features),
                    "categorical": list(t.categorical),
                }
                for t in self.tensors.values()
            ],
            "source": self.source,
        }  # fmt: skip
        arrays: dict[str, Any] = {"meta": np.array(json.dumps(meta))}
        for i, t in enumerate(self.tensors.values()):
            arrays[f"t{i}_edges"], arrays[f"t{i}_counts"], arrays[f"t{i}_nan"] = t.edges, t.counts, t.nan
            arrays[f"t{i}_categories"], arrays[f"t{i}_n_categories"] = t.categories, t.n_categories
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
            if meta.get("format") not in (1, FORMAT):
                raise ProfileError(
                    f"profile {path}: format {meta.get('format')!r}, this build reads 1 and {FORMAT}"
                )
            tensors = {}
            for i, t in enumerate(meta["tensors"]):
                edges = np.asarray(data[f"t{i}_edges"], dtype=np.float64)
                counts = np.asarray(data[f"t{i}_counts"], dtype=np.int64)
                nan = np.asarray(data[f"t{i}_nan"], dtype=np.int64)
                categorical = tuple(int(c) for c in t.get("categorical", ()))
                cats = np.asarray(data[f"t{i}_categories"], np.int64) if categorical else _NO_CATEGORIES
                sizes = (
                    np.asarray(data[f"t{i}_n_categories"], np.int64) if categorical else np.zeros(0, np.int64)
                )
                n_features = edges.shape[0] + len(categorical) if edges.ndim == 2 else -1
                if (
                    edges.ndim != 2
                    or counts.shape != (edges.shape[0], edges.shape[1] - 1)
                    or nan.shape != (n_features,)
                    or sorted(set(categorical)) != list(categorical)
                    or any(not 0 <= c < n_features for c in categorical)
                    or sizes.shape != (len(categorical),)
                    or (categorical and cats.shape != (len(categorical), int(sizes.max()) + 1))
                ):
                    raise ProfileError(f"profile {path}: tensor '{t['name']}' has inconsistent array shapes")
                if t["role"] not in ("input", "output"):
                    raise ProfileError(f"profile {path}: tensor '{t['name']}' has role {t['role']!r}")
                tensors[t["name"]] = TensorProfile(
                    t["name"], t["role"], edges, counts, nan, int(t["rows"]), tuple(t.get("features", ())),
                    categorical, cats, sizes,
                )  # fmt: skip
            return Profile(
                str(meta["model"]),
                str(meta["version"]),
                int(meta["bins"]),
                tensors,
                str(meta.get("source", "")),
            )
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


def category_codes(values: NDArray[Any]) -> NDArray[np.int64]:
    """Category codes of a (rows x features) block: integers as they are, floats truncated,
    NaN and ±inf as -1 ("other")."""
    if values.dtype == np.int64:
        return values
    if values.dtype.kind in "iub":
        return values.astype(np.int64)
    with np.errstate(invalid="ignore"):
        clipped = np.clip(values, -1, 2**62)  # NaN stays NaN
    return np.where(np.isfinite(clipped), clipped, -1).astype(np.int64)


def _profile_tensor(
    name: str,
    role: Literal["input", "output"],
    data: NDArray[Any],
    bins: int,
    features: tuple[str, ...],
    categorical: Sequence[str | int] = (),
) -> TensorProfile:
    width = data.shape[1]
    features = features if len(features) == width else ()
    asked = {features.index(c) if isinstance(c, str) else c for c in categorical if c in features}
    asked |= {c for c in categorical if isinstance(c, int) and 0 <= c < width}
    integers = data.dtype.kind in "iub"  # every feature whose codes fit; `categorical` is for floats
    chosen = []
    for i in range(width) if integers else sorted(asked):
        top = int(category_codes(data[:, i : i + 1]).max(initial=-1))
        if top < MAX_CATEGORIES:
            chosen.append(i)
        elif not integers:
            label = features[i] if features else str(i)
            raise ProfileError(
                f"{role} '{name}' feature {label}: codes go up to {top}; a categorical feature's codes "
                f"are 0..{MAX_CATEGORIES - 1}"
            )
    numeric = [i for i in range(width) if i not in chosen]
    nan = np.zeros(width, np.int64)
    if numeric:
        values = np.ascontiguousarray(data[:, numeric], dtype=np.float64)
        edges = quantile_edges(values, bins)
        stats = NumericStats(edges)
        stats.update(values)
        counts, nan[numeric] = stats.bins.copy(), stats.nan_count
    else:
        edges, counts = np.zeros((0, bins + 1)), np.zeros((0, bins), np.int64)
    cats, sizes = _NO_CATEGORIES, np.zeros(0, np.int64)
    if chosen:
        codes = np.ascontiguousarray(category_codes(data[:, chosen]))
        sizes = np.maximum(codes.max(axis=0, initial=-1) + 1, 1).astype(np.int64)
        tally = CategoricalStats(sizes)
        tally.update(codes)
        cats = tally.counts.copy()
    return TensorProfile(
        name, role, edges, counts, nan, int(data.shape[0]), features, tuple(chosen), cats, sizes
    )


def profile_from_rows(
    model: str,
    version: str,
    tensors: Mapping[str, tuple[Literal["input", "output"], NDArray[Any]]],
    bins: int = 10,
    features: tuple[str, ...] = (),
    categorical: Sequence[str | int] = (),
    source: str = "",
) -> Profile:
    """A profile of rows already seen: name -> (role, rows x features). `features` names the
    inputs' features; `categorical` (names or indices) marks float input features categorical
    (integer tensors are, wherever their codes fit: module docstring)."""
    out = {}
    for name, (role, rows) in tensors.items():
        if rows.shape[0] == 0:
            raise ProfileError(f"{role} '{name}': no rows")
        if rows.dtype.kind not in "fiu":  # BOOL and BYTES are not monitored
            continue
        rows = rows.reshape(rows.shape[0], -1)
        named = features if role == "input" else ()
        out[name] = _profile_tensor(name, role, rows, bins, named, categorical if role == "input" else ())
    return Profile(model, version, bins, out, source)


def build_profile(
    model: str,
    version: str,
    inputs: Mapping[str, NDArray[Any]],
    run: Callable[[dict[str, NDArray[Any]]], Mapping[str, NDArray[Any]]],
    bins: int = 10,
    chunk_rows: int = 1024,
    features: tuple[str, ...] = (),
    progress: bool = True,
    categorical: Sequence[str | int] = (),
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
    tensors: dict[str, tuple[Literal["input", "output"], NDArray[Any]]] = {
        n: ("input", np.concatenate(c)) for n, c in seen_in.items() if c[0].dtype.kind in "fiu"
    }
    tensors.update({n: ("output", np.concatenate(c)) for n, c in seen_out.items()})
    return profile_from_rows(model, version, tensors, bins, features, categorical)
