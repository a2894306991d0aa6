"""The model repository on disk, in Triton's layout:

    REPO/<model>/config.pbtxt          optional; Triton's text format
    REPO/<model>/<version>/model.onnx  one directory per version, named by an integer

Reading it is the only place the gateway touches the file system on a client's behalf, so every
name is checked against a strict pattern and every path (symlinks and ONNX external data
included) must resolve inside the repository before it is opened.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from google.protobuf import text_format

from ._proto import model_config_pb2 as mc
from .errors import LoadError, NotFound

__all__ = ["ModelSource", "RemoteVersion", "Repository", "valid_model_name"]

_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}")
DEFAULT_MODEL_FILENAME = "model.onnx"


def _newest_first(versions: Mapping[str, Path | RemoteVersion]) -> dict[str, Path | RemoteVersion]:
    return {v: versions[v] for v in sorted(versions, key=int, reverse=True)}


def _is_version(name: str) -> bool:
    """A version directory: ASCII digits in canonical form ("1", not "01" or "²")."""
    return name.isascii() and name.isdigit() and str(int(name)) == name


def valid_model_name(name: str) -> bool:
    """A model name that is safe as one path component: no separators, no '..', no whitespace."""
    return bool(_NAME.fullmatch(name)) and ".." not in name


@dataclass(frozen=True)
class RemoteVersion:
    """A version served by remote Triton (or any KServe v2 gRPC) servers."""

    endpoints: tuple[str, ...]
    model: str
    model_version: str = ""  # empty: the remote server's choice


@dataclass(frozen=True)
class ModelSource:
    """What the repository holds for one model: its config (parsed, or empty when there is no
    config.pbtxt) and its versions: the files its version policy selects, and remote versions
    declared in the gateway's config (which win over a file of the same number)."""

    name: str
    config: mc.ModelConfig
    has_config: bool
    versions: dict[str, Path | RemoteVersion]  # newest first
    failed: dict[str, LoadError] = field(default_factory=dict)  # files refused (read(..., tolerant=True))


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


class Repository:
    def __init__(self, root: Path, remote: Mapping[str, Mapping[str, RemoteVersion]] | None = None) -> None:
        self.root = root.resolve()
        if not self.root.is_dir():
            raise LoadError(f"model repository {root} is not a directory")
        self.remote = {name: dict(versions) for name, versions in (remote or {}).items() if versions}
        bad = [name for name in self.remote if not valid_model_name(name)]
        if bad:
            raise LoadError(f"invalid model names in the config: {bad}")

    def model_names(self) -> list[str]:
        """Every directory of the repository whose name is a valid model name, and every model
        with remote versions."""
        with os.scandir(self.root) as entries:
            local = {e.name for e in entries if valid_model_name(e.name) and e.is_dir()}
        return sorted(local | set(self.remote))

    def check_name(self, name: str) -> None:
        """NotFound unless `name` is a valid model name the repository or the config knows."""
        if not valid_model_name(name):
            raise NotFound(f"'{name}' is not a valid model name")
        if name not in self.remote and not (self.root / name).is_dir():
            raise NotFound(f"model '{name}' is not in the repository")

    def shown(self, path: Path) -> str:
        """A path as clients may see it: relative to the repository, never the server's own."""
        try:
            return str(path.relative_to(self.root))
        except ValueError:
            return path.name

    def _inside(self, path: Path, what: str) -> Path:
        real = path.resolve()
        if real != self.root and self.root not in real.parents:
            raise LoadError(f"{what} ({self.shown(path)}) resolves outside the model repository")
        return real

    def version_names(self, name: str) -> set[str]:
        """Every version the repository and the config hold for a model, whatever its version
        policy selects (empty for an unknown model)."""
        found = set(self.remote.get(name, {}))
        if valid_model_name(name) and (self.root / name).is_dir():
            with os.scandir(self.root / name) as entries:
                found |= {e.name for e in entries if _is_version(e.name) and e.is_dir()}
        return found

    def read(self, name: str, also: Iterable[str] = (), tolerant: bool = False) -> ModelSource:
        """Parse one model's config and pick its versions: those its version policy selects, and
        `also` (the versions its traffic policy names). Raises NotFound for an unknown model and
        LoadError for anything malformed or missing; with `tolerant`, a version whose file is
        refused is left out and named in `failed` instead (the others still load)."""
        self.check_name(name)
        remote = self.remote.get(name, {})
        if not (self.root / name).is_dir():
            _check_named(name, [v for v in also if v not in remote])
            config = mc.ModelConfig(name=name, platform="remote", backend="triton")
            return ModelSource(name, config, False, _newest_first(remote))
        model_dir = self._inside(self.root / name, f"model '{name}'")

        config = mc.ModelConfig()
        config_path = model_dir / "config.pbtxt"
        has_config = config_path.is_file()
        if has_config:
            self._inside(config_path, f"config of model '{name}'")
            try:
                text_format.Parse(config_path.read_text(), config, allow_unknown_field=True)
            except (text_format.ParseError, UnicodeDecodeError) as exc:
                raise LoadError(f"model '{name}': cannot parse config.pbtxt: {exc}") from None
            if config.name and config.name != name:
                raise LoadError(
                    f"model '{name}': config.pbtxt names the model '{config.name}'; "
                    "it must match the directory"
                )
            if config.backend not in ("", "onnxruntime") or config.platform not in ("", "onnxruntime_onnx"):
                raise LoadError(
                    f"model '{name}': backend '{config.backend or config.platform}' is not served "
                    "in-process (only onnxruntime)"
                )
        config.name = name
        if not config.platform:
            config.platform = "onnxruntime_onnx"
        if not config.backend:
            config.backend = "onnxruntime"
        filename = config.default_model_filename or DEFAULT_MODEL_FILENAME
        if not valid_model_name(filename):
            raise LoadError(f"model '{name}': default_model_filename '{filename}' is not a plain file name")

        available: dict[int, Path] = {}
        with os.scandir(model_dir) as entries:
            version_dirs = [e.name for e in entries if _is_version(e.name) and e.is_dir()]
        for version in version_dirs:
            path = model_dir / version / filename
            if path.is_file():
                available[int(version)] = self._inside(path, f"model '{name}' version {version}")
        files = self._apply_policy(name, config.version_policy, available) if available or not remote else {}
        missing = []
        for version in also:
            if version in remote or version in files:
                continue
            if int(version) in available:
                files[version] = available[int(version)]
            else:
                missing.append(version)
        _check_named(name, missing)
        failed = {}
        for version, file in list(files.items()):
            try:
                check_external_data(file, file.parent)
            except LoadError as exc:
                if not tolerant:
                    raise
                failed[version] = exc
                del files[version]
        chosen: dict[str, Path | RemoteVersion] = {**files, **remote}
        return ModelSource(name, config, has_config, _newest_first(chosen), failed)

    @staticmethod
    def _apply_policy(
        name: str, policy: mc.ModelVersionPolicy, available: dict[int, Path]
    ) -> dict[str, Path]:
        newest_first = sorted(available, reverse=True)
        which = policy.WhichOneof("policy_choice")
        if which == "all":
            picked = newest_first
        elif which == "specific":
            missing = [v for v in policy.specific.versions if v not in available]
            if missing:
                raise LoadError(
                    f"model '{name}': version_policy names versions {missing} that have no "
                    "model file in the repository"
                )
            picked = sorted(policy.specific.versions, reverse=True)
        else:
            count = policy.latest.num_versions if which == "latest" else 1
            picked = newest_first[: max(count, 1)]
        if not picked:
            raise LoadError(f"model '{name}' has no version directory holding a model file")
        return {str(v): available[v] for v in picked}


def _check_named(name: str, missing: list[str]) -> None:
    if missing:
        raise LoadError(
            f"model '{name}': the traffic config names version(s) {', '.join(sorted(missing, key=int))} "
            "that are neither in the repository nor remote"
        )


def _tensors(model: Any) -> Iterator[Any]:
    """Every TensorProto of an ONNX model: initializers (dense and sparse), tensor attributes
    of every node, in every subgraph and function."""
    graphs = [model.graph]
    nodes = [n for f in model.functions for n in f.node]
    while graphs or nodes:
        if graphs:
            graph = graphs.pop()
            yield from graph.initializer
            for sparse in graph.sparse_initializer:
                yield sparse.values
                yield sparse.indices
            nodes.extend(graph.node)
            continue
        for attr in nodes.pop().attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("sparse_tensor"):
                yield attr.sparse_tensor.values
                yield attr.sparse_tensor.indices
            for sparse in attr.sparse_tensors:
                yield sparse.values
                yield sparse.indices
            if attr.HasField("g"):
                graphs.append(attr.g)
            graphs.extend(attr.graphs)


def _shown(path: Path, version_dir: Path) -> str:
    """MODEL/VERSION/FILE: what a client may see of a model file's path."""
    return f"{version_dir.parent.name}/{version_dir.name}/{path.name}"


def check_external_data(path: Path, version_dir: Path) -> None:
    """Refuse an ONNX file whose external-data tensors point outside its version directory."""
    import onnx  # imported lazily: only loading needs it

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError and friends without a common base
        raise LoadError(f"{_shown(path, version_dir)} is not a valid ONNX model: {exc}") from None
    root = version_dir.resolve()
    for tensor in _tensors(model):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        if root not in (root / location).resolve().parents:
            raise LoadError(
                f"{_shown(path, version_dir)}: tensor '{tensor.name}' keeps its data at '{location}', "
                "outside the version directory"
            )
