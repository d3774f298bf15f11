"""cross_entropy against float64 NumPy: log-sum-exp minus the target's logit, row by row."""

import numpy as np
import pytest

from checked import checked
from tinygpt.kernels import checks, threads
from tinygpt.kernels.softmax import cross_entropy as cross_entropy_kernel

cross_entropy = checked(cross_entropy_kernel)


def reference(logits, targets):
    x = logits.astype(np.float64)
    top = x.max(axis=1, keepdims=True)
    lse = np.log(np.exp(x - top).sum(axis=1)) + top[:, 0]
    return lse - x[np.arange(len(x)), targets]


@pytest.mark.parametrize("rows, width", [(1, 1), (3, 7), (5, 1000), (2, 50257)])
def test_matches_float64_reference(rows, width):
    rng = np.random.default_rng(rows * width)
    logits = (rng.standard_normal((rows, width)) * 4).astype(np.float32)
    targets = rng.integers(0, width, rows)
    # exp_f64 is within 3e-10 relative of exp, so the log of the sum is within ~1e-9 of float64 NumPy's;
    # the target's logit is exact.
    np.testing.assert_allclose(cross_entropy(logits, targets), reference(logits, targets), rtol=0, atol=1e-9)


def test_extreme_logits_neither_overflow_nor_lose_the_small_terms():
    logits = np.array([[1e30, 0.0, -1e30], [80.0, 80.0, -200.0], [0.0, -100.0, -100.0]], np.float32)
    got = cross_entropy(logits, np.array([0, 1, 1], np.int64))
    assert got[0] == 0.0  # the target dominates: probability 1
    assert got[1] == pytest.approx(np.log(2.0), rel=1e-12)
    assert got[2] == pytest.approx(100.0 + np.log1p(2 * np.exp(-100.0)), rel=1e-12)


def test_nan_propagates():
    logits = np.array([[0.0, np.nan, 1.0], [0.0, 1.0, 2.0]], np.float32)
    got = cross_entropy(logits, np.array([0, 0], np.int64))
    assert np.isnan(got[0]) and np.isfinite(got[1])


def test_rows_are_independent_of_each_other_and_of_the_thread_count():
    rng = np.random.default_rng(3)
    logits = rng.standard_normal((9, 5000)).astype(np.float32)
    targets = rng.integers(0, 5000, 9)
    together = cross_entropy(logits, targets)
    for i in range(9):
        assert cross_entropy(logits[i:i + 1].copy(), targets[i:i + 1].copy())[0] == together[i]
    saved = threads._num_threads
    try:
        threads.set_num_threads(1)
        np.testing.assert_array_equal(cross_entropy(logits, targets), together)
    finally:
        threads._num_threads = saved


def test_writes_into_out_and_takes_no_rows():
    logits = np.zeros((2, 4), np.float32)
    out = np.full(2, np.nan)
    assert cross_entropy(logits, np.array([1, 3], np.int64), out=out) is out
    np.testing.assert_allclose(out, np.log(4.0), rtol=1e-12)
    assert cross_entropy(np.zeros((0, 4), np.float32), np.zeros(0, np.int64)).shape == (0,)


def valid_args():
    return dict(logits=np.zeros((2, 4), np.float32), targets=np.array([0, 3], np.int64))


@pytest.mark.parametrize(
    "changes, match",
    [
        (dict(logits=np.zeros((2, 4), np.float64)), "logits must be float32"),
        (dict(logits=np.zeros(8, np.float32)), "logits must have 2 dimensions"),
        (dict(logits=np.zeros((2, 0), np.float32)), "at least one column"),
        (dict(targets=np.array([0, 3], np.int32)), "targets must be int64"),
        (dict(targets=np.array([0, 1, 2], np.int64)), r"targets must have shape \(2,\)"),
        (dict(targets=np.array([0, 4], np.int64)), r"targets must be in 0 .. 3 \(columns of logits\), got \[4\]"),
        (dict(targets=np.array([-1, 0], np.int64)), r"got \[-1\]"),
        (dict(out=np.zeros(2, np.float32)), "out must be a C-contiguous float64 array of shape"),
        (dict(out=np.zeros(3)), "out must be a C-contiguous float64 array of shape"),
    ],
)
def test_rejects_bad_arguments(changes, match):
    with pytest.raises(ValueError, match=match):
        checks.cross_entropy(**{**valid_args(), **changes})
