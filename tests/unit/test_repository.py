"""gateway.repository: the Triton-layout model repository on disk (RELIABILITY case 5)."""

from __future__ import annotations

import gc
import hashlib
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.external_data_helper import set_external_data

from gateway.errors import LoadError, NotFound
from gateway.examples import mlp, write_config, write_version
from gateway.repository import Repository, file_digest, valid_model_name

SMALL = mlp((4, 8, 2))


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """tmp_path/repo is the repository; tmp_path itself plays 'outside'."""
    repo = tmp_path / "repo"
    repo.mkdir()
    return repo


def versions(root: Path, name: str, *numbers: int) -> None:
    for v in numbers:
        write_version(root, name, v, SMALL)


def load_error(root: Path, name: str, *fragments: str) -> str:
    with pytest.raises(LoadError) as info:
        Repository(root).read(name)
    assert info.value.code == "INVALID_ARGUMENT"
    for fragment in fragments:
        assert fragment in info.value.message, info.value.message
    return info.value.message


def external_model(location: str, via_constant: bool = False) -> bytes:
    """y = x + k, with k's data stored externally at `location` (an initializer, or the value
    attribute of a Constant node)."""
    k = numpy_helper.from_array(np.ones(4, np.float32), "k")
    set_external_data(k, location=location, offset=0, length=16)
    k.data_location = TensorProto.EXTERNAL
    k.ClearField("raw_data")
    nodes = [helper.make_node("Add", ["x", "k"], ["y"])]
    if via_constant:
        nodes.insert(0, helper.make_node("Constant", [], ["k"], value=k))
    graph = helper.make_graph(
        nodes,
        "ext",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])],
        [] if via_constant else [k],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


# -- listing ----------------------------------------------------------------------------------


def test_model_names_skips_invalid_names_and_files(root: Path) -> None:
    for name in ("b", "a", "m-1.v2", "_x"):
        versions(root, name, 1)
    for bad in (".hidden", "a b", "-dash", "é"):
        (root / bad).mkdir()
    (root / "file").write_text("not a model directory")
    assert Repository(root).model_names() == ["_x", "a", "b", "m-1.v2"]


@pytest.mark.parametrize("name", ["mlp", "a.b", "A_9-x", "x" * 128])
def test_valid_model_name(name: str) -> None:
    assert valid_model_name(name)


@pytest.mark.parametrize("name", ["", ".", "..", "../etc", "/abs", "a b", "x/y", "a..b", "x" * 129, "a\n"])
def test_invalid_model_name(name: str) -> None:
    assert not valid_model_name(name)


def test_root_must_be_a_directory(tmp_path: Path) -> None:
    with pytest.raises(LoadError, match="not a directory"):
        Repository(tmp_path / "missing")


# -- version policies -------------------------------------------------------------------------


def test_default_policy_is_latest_one(root: Path) -> None:
    versions(root, "m", 1, 3, 2)
    (root / "m" / "notes").mkdir()  # not a version
    (root / "m" / "7").mkdir()  # a version directory without a model file
    source = Repository(root).read("m")
    assert list(source.versions) == ["3"]
    assert source.versions["3"] == (root / "m" / "3" / "model.onnx").resolve()
    assert not source.has_config
    assert source.config.name == "m"
    assert source.config.platform == "onnxruntime_onnx"
    assert source.config.backend == "onnxruntime"


def test_latest_two_newest_first(root: Path) -> None:
    versions(root, "m", 1, 2, 10)
    write_config(root, "m", "version_policy: { latest { num_versions: 2 } }")
    assert list(Repository(root).read("m").versions) == ["10", "2"]


def test_all_versions_newest_first(root: Path) -> None:
    versions(root, "m", 1, 2, 3)
    write_config(root, "m", "version_policy: { all { } }")
    assert list(Repository(root).read("m").versions) == ["3", "2", "1"]


def test_specific_versions(root: Path) -> None:
    versions(root, "m", 1, 2, 3)
    write_config(root, "m", "version_policy: { specific { versions: [1, 3] } }")
    assert list(Repository(root).read("m").versions) == ["3", "1"]


def test_specific_naming_a_missing_version(root: Path) -> None:
    versions(root, "m", 1)
    write_config(root, "m", "version_policy: { specific { versions: [1, 4] } }")
    load_error(root, "m", "'m'", "[4]")


def test_no_versions(root: Path) -> None:
    (root / "m" / "1").mkdir(parents=True)
    load_error(root, "m", "'m'", "no version")


def test_non_ascii_digit_directory_is_not_a_version(root: Path) -> None:
    versions(root, "m", 1)
    write_version(root, "m", 2, SMALL).parent.rename(root / "m" / "²")
    assert list(Repository(root).read("m").versions) == ["1"]


def test_default_model_filename(root: Path) -> None:
    write_version(root, "m", 1, SMALL, filename="net.onnx")
    write_version(root, "m", 2, SMALL)  # model.onnx only: not this model's file
    write_config(root, "m", 'default_model_filename: "net.onnx"')
    source = Repository(root).read("m")
    assert list(source.versions) == ["1"]
    assert source.versions["1"].name == "net.onnx"


def test_default_model_filename_must_be_plain(root: Path) -> None:
    versions(root, "m", 1)
    write_config(root, "m", 'default_model_filename: "../../outside.onnx"')
    load_error(root, "m", "'m'", "default_model_filename")


# -- config.pbtxt -----------------------------------------------------------------------------


def test_config_is_parsed(root: Path) -> None:
    versions(root, "m", 1)
    write_config(root, "m", 'name: "m"\nmax_batch_size: 8\ninput [ { name: "x" data_type: TYPE_FP32 } ]')
    source = Repository(root).read("m")
    assert source.has_config
    assert source.config.max_batch_size == 8
    assert [i.name for i in source.config.input] == ["x"]


def test_config_parse_error_names_model(root: Path) -> None:
    versions(root, "m", 1)
    write_config(root, "m", "max_batch_size: {{ nope")
    load_error(root, "m", "'m'", "config.pbtxt")


def test_config_not_utf8(root: Path) -> None:
    versions(root, "m", 1)
    (root / "m" / "config.pbtxt").write_bytes(b'name: "\xff"')
    load_error(root, "m", "'m'", "config.pbtxt")


def test_config_name_mismatch(root: Path) -> None:
    versions(root, "m", 1)
    write_config(root, "m", 'name: "other"')
    load_error(root, "m", "'m'", "'other'")


def test_unknown_config_fields_are_tolerated(root: Path) -> None:
    versions(root, "m", 1)
    write_config(
        root,
        "m",
        """
        max_batch_size: 4
        optimization { execution_accelerators { cpu_execution_accelerator: [ { name: "openvino" } ] } }
        instance_group [ { count: 2 kind: KIND_CPU } ]
        response_cache { enable: true }
        model_warmup: [ { name: "w" batch_size: 1 } ]
        """,
    )
    source = Repository(root).read("m")
    assert source.config.max_batch_size == 4
    assert source.config.instance_group[0].count == 2


def test_unknown_repeated_message_field_without_colon_is_tolerated(root: Path) -> None:
    versions(root, "m", 1)
    write_config(root, "m", 'model_warmup [ { name: "w" batch_size: 1 } ]')
    Repository(root).read("m")


@pytest.mark.parametrize("line", ['backend: "python"', 'platform: "tensorrt_plan"'])
def test_non_onnxruntime_backend(root: Path, line: str) -> None:
    versions(root, "m", 1)
    write_config(root, "m", line)
    load_error(root, "m", "'m'", "onnxruntime")


def test_explicit_onnxruntime_backend_is_accepted(root: Path) -> None:
    versions(root, "m", 1)
    write_config(root, "m", 'backend: "onnxruntime"\nplatform: "onnxruntime_onnx"')
    assert list(Repository(root).read("m").versions) == ["1"]


# -- names and paths that must not reach outside ------------------------------------------------


@pytest.fixture
def fs_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Path]]:
    """Every path stat-ed, lstat-ed or listed while the test runs (pathlib goes through these)."""
    calls: list[Path] = []
    for fn_name in ("stat", "lstat", "scandir"):
        real = getattr(os, fn_name)

        def spy(path: object = ".", *args: object, _real: object = real, **kwargs: object) -> object:
            calls.append(Path(os.fsdecode(path)).absolute())  # type: ignore[arg-type]
            return _real(path, *args, **kwargs)  # type: ignore[operator]

        monkeypatch.setattr(os, fn_name, spy)
    yield calls


@pytest.mark.parametrize("name", ["../etc", "/abs", "a b", "", "..", "x/y", "../outside-model"])
def test_read_of_unsafe_names_is_not_found_without_touching_outside(
    root: Path, fs_calls: list[Path], name: str
) -> None:
    sentinel = root.parent / "outside-model"
    versions(sentinel.parent, sentinel.name, 1)  # a valid model just outside the repository
    versions(root, "x", 1)
    repository = Repository(root)
    fs_calls.clear()
    with pytest.raises(NotFound) as info:
        repository.read(name)
    assert info.value.code == "NOT_FOUND"
    real_root = root.resolve()
    # resolving a path inside the repository may lstat the repository's own ancestors: allowed
    outside = [p for p in fs_calls if not p.is_relative_to(real_root) and not real_root.is_relative_to(p)]
    assert outside == []


def test_read_of_unknown_model_is_not_found(root: Path) -> None:
    with pytest.raises(NotFound, match="'nope'"):
        Repository(root).read("nope")


def test_model_directory_symlinked_outside(root: Path) -> None:
    versions(root.parent, "elsewhere", 1)
    (root / "m").symlink_to(root.parent / "elsewhere", target_is_directory=True)
    load_error(root, "m", "'m'", "outside the model repository")


def test_version_directory_symlinked_outside(root: Path) -> None:
    versions(root, "m", 1)
    versions(root.parent, "elsewhere", 2)
    (root / "m" / "2").symlink_to(root.parent / "elsewhere" / "2", target_is_directory=True)
    load_error(root, "m", "'m'", "outside the model repository")


def test_failed_read_closes_its_directory_iterator(root: Path) -> None:
    versions(root, "m", 1)
    versions(root.parent, "elsewhere", 2)
    (root / "m" / "2").symlink_to(root.parent / "elsewhere" / "2", target_is_directory=True)
    gc.collect()  # whatever earlier tests left behind is not this test's business
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        with pytest.raises(LoadError, match="outside the model repository"):  # the read must fail
            Repository(root).read("m")
        gc.collect()
    leaks = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert [m for m in leaks if "scandir" in m.lower() or "iterator" in m.lower()] == []


def test_model_file_symlinked_outside(root: Path) -> None:
    (root.parent / "outside.onnx").write_bytes(SMALL)
    (root / "m" / "1").mkdir(parents=True)
    (root / "m" / "1" / "model.onnx").symlink_to(root.parent / "outside.onnx")
    load_error(root, "m", "'m'", "outside the model repository")


def test_config_symlinked_outside(root: Path) -> None:
    versions(root, "m", 1)
    (root.parent / "config.pbtxt").write_text("max_batch_size: 1")
    (root / "m" / "config.pbtxt").symlink_to(root.parent / "config.pbtxt")
    load_error(root, "m", "'m'", "outside the model repository")


def test_symlink_inside_the_repository_is_accepted(root: Path) -> None:
    versions(root, "shared", 1)
    (root / "m" / "1").mkdir(parents=True)
    (root / "m" / "1" / "model.onnx").symlink_to(root / "shared" / "1" / "model.onnx")
    assert list(Repository(root).read("m").versions) == ["1"]


@pytest.mark.parametrize("location", ["../../../outside.bin", "../2/weights.bin", "/etc/passwd", ""])
def test_external_data_outside_the_version_directory(root: Path, location: str) -> None:
    (root.parent / "outside.bin").write_bytes(np.ones(4, np.float32).tobytes())
    write_version(root, "m", 1, external_model(location))
    load_error(root, "m", "'k'", "outside the version directory")


def test_external_data_symlinked_outside(root: Path) -> None:
    (root.parent / "outside.bin").write_bytes(np.ones(4, np.float32).tobytes())
    path = write_version(root, "m", 1, external_model("weights.bin"))
    (path.parent / "weights.bin").symlink_to(root.parent / "outside.bin")
    load_error(root, "m", "'k'", "outside the version directory")


def test_external_data_in_a_subgraph_outside(root: Path) -> None:
    inner = onnx.load_from_string(external_model("../../../outside.bin"))
    branch = helper.make_graph(
        list(inner.graph.node),
        "branch",
        [],
        list(inner.graph.output),
        list(inner.graph.initializer),
    )
    node = helper.make_node("If", ["c"], ["y"], then_branch=branch, else_branch=branch)
    graph = helper.make_graph(
        [node],
        "g",
        [
            helper.make_tensor_value_info("c", TensorProto.BOOL, []),
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [4]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    write_version(root, "m", 1, model.SerializeToString())
    load_error(root, "m", "'k'", "outside the version directory")


def test_external_data_in_a_constant_attribute_outside(root: Path) -> None:
    (root.parent / "outside.bin").write_bytes(np.ones(4, np.float32).tobytes())
    write_version(root, "m", 1, external_model("../../../outside.bin", via_constant=True))
    load_error(root, "m", "outside the version directory")


def test_external_data_inside_the_version_directory(root: Path) -> None:
    model = onnx.load_from_string(SMALL)
    version_dir = root / "m" / "1"
    version_dir.mkdir(parents=True)
    onnx.save_model(
        model,
        str(version_dir / "model.onnx"),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="weights.bin",
        size_threshold=0,
    )
    saved = onnx.load(str(version_dir / "model.onnx"), load_external_data=False)
    assert any(t.data_location == TensorProto.EXTERNAL for t in saved.graph.initializer)
    assert (version_dir / "weights.bin").is_file()
    assert list(Repository(root).read("m").versions) == ["1"]


def test_corrupt_model_file(root: Path) -> None:
    write_version(root, "m", 1, b"\xff\xff\xff\xff not an onnx model")
    load_error(root, "m", "model.onnx", "not a valid ONNX model")


# -- digests ----------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 5, 3 * (1 << 20) + 7])  # crosses the 1 MiB read chunks
def test_file_digest_is_sha256_of_the_bytes(tmp_path: Path, size: int) -> None:
    data = np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8).tobytes()
    path = tmp_path / "f"
    path.write_bytes(data)
    assert file_digest(path) == "sha256:" + hashlib.sha256(data).hexdigest()
