"""A shadow's answer against the primary's."""

from __future__ import annotations

import numpy as np

from gateway.routing import compare

A = {"y": np.array([[0.1, 0.9], [0.8, 0.2]], np.float32)}


def test_identical_answers_agree() -> None:
    c = compare(A, {"y": A["y"].copy()}, ["y"], atol=1e-4, rtol=1e-3)
    assert c.agree and c.max_abs_diff == 0.0 and c.outputs == ()
    assert (c.argmax_rows, c.argmax_agree) == (2, 2)


def test_within_tolerance_agrees_and_reports_the_difference() -> None:
    c = compare(A, {"y": A["y"] + 5e-5}, ["y"], atol=1e-4, rtol=0)
    assert c.agree and 4e-5 < c.max_abs_diff < 6e-5


def test_beyond_tolerance_disagrees_and_argmax_is_counted_per_row() -> None:
    shadow = {"y": np.array([[0.1, 0.9], [0.2, 0.8]], np.float32)}  # row 1 flips its label
    c = compare(A, shadow, ["y"], atol=1e-4, rtol=1e-3)
    assert not c.agree and c.outputs == ("y",)
    assert abs(c.max_abs_diff - 0.6) < 1e-6
    assert (c.argmax_rows, c.argmax_agree) == (2, 1)


def test_relative_tolerance_scales_with_the_primary() -> None:
    big = {"y": np.array([1000.0, 2000.0])}
    assert compare(big, {"y": big["y"] * 1.0005}, ["y"], atol=0, rtol=1e-3).agree
    assert not compare(big, {"y": big["y"] * 1.002}, ["y"], atol=0, rtol=1e-3).agree


def test_missing_output_or_other_shape_disagrees_infinitely() -> None:
    c = compare(A, {}, ["y"], atol=1, rtol=1)
    assert not c.agree and c.max_abs_diff == float("inf")
    c = compare(A, {"y": A["y"][:1]}, ["y"], atol=1, rtol=1)
    assert not c.agree and c.max_abs_diff == float("inf")


def test_nan_equals_nan_and_nan_against_a_number_disagrees() -> None:
    nan = {"y": np.array([np.nan, 1.0])}
    assert compare(nan, {"y": np.array([np.nan, 1.0])}, ["y"], atol=0, rtol=0).agree
    c = compare(nan, {"y": np.array([0.0, 1.0])}, ["y"], atol=0, rtol=0)
    assert not c.agree and c.max_abs_diff == float("inf")


def test_equal_infinities_agree_and_integers_do_not_wrap() -> None:
    inf = {"y": np.array([np.inf, -np.inf, 1.0])}
    assert compare(inf, {"y": np.array([np.inf, -np.inf, 1.0])}, ["y"], atol=0, rtol=0).agree
    assert not compare(inf, {"y": np.array([np.inf, np.inf, 1.0])}, ["y"], atol=0, rtol=0).agree
    small = {"y": np.array([0], np.uint8)}
    c = compare(small, {"y": np.array([255], np.uint8)}, ["y"], atol=0, rtol=0)
    assert not c.agree and c.max_abs_diff == 255


def test_bytes_and_bool_outputs_must_be_equal() -> None:
    words = {"s": np.array([b"a", b"b"], dtype=object)}
    assert compare(words, {"s": np.array([b"a", b"b"], dtype=object)}, ["s"], atol=1, rtol=1).agree
    assert not compare(words, {"s": np.array([b"a", b"c"], dtype=object)}, ["s"], atol=1, rtol=1).agree
    flags = {"f": np.array([True, False])}
    assert not compare(flags, {"f": np.array([True, True])}, ["f"], atol=1, rtol=1).agree


def test_only_the_requested_outputs_are_compared() -> None:
    primary = {"y": A["y"], "z": np.zeros(2)}
    assert compare(primary, {"y": A["y"], "z": np.ones(2)}, ["y"], atol=0, rtol=0).agree
