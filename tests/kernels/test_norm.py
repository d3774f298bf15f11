"""layer_norm against a float64 NumPy formula and torch.nn.functional.layer_norm."""

import numpy as np
import pytest
import torch

from checked import checked
from independent_rows import assert_rows_independent, thread_count  # noqa: F401  (a fixture)
from tinygpt.kernels import checks, norm

layer_norm = checked(norm.layer_norm)


def normalized64(x, eps):
    """(x - mean) / sqrt(var + eps) per row, in float64."""
    x = x.astype(np.float64)
    mean = x.mean(axis=1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps)


def ulp32(v: np.ndarray) -> np.ndarray:
    return np.spacing(np.abs(v).astype(np.float32)).astype(np.float64)


def inputs(rng, rows, width, offset=0.0):
    x = (rng.standard_normal((rows, width)) * 4 + offset).astype(np.float32)
    gamma = rng.standard_normal(width).astype(np.float32)
    beta = rng.standard_normal(width).astype(np.float32)
    return x, gamma, beta


@pytest.mark.parametrize("rows, width", [(1, 1), (1, 768), (3, 17), (65, 130), (130, 65)])
@pytest.mark.parametrize("offset", [0.0, 1000.0])
def test_matches_float64_formula(rows, width, offset):
    """offset=1000 puts the mean far above the spread, where a one-pass E[x^2] - E[x]^2 in float32 fails."""
    x, gamma, beta = inputs(np.random.default_rng(rows * width), rows, width, offset)
    got = layer_norm(x, gamma, beta, 1e-5)
    scaled = normalized64(x, 1e-5) * gamma
    want = scaled + beta
    # Statistics and the affine map are computed in float64 (errors ~1e-16 relative to the terms
    # |x_hat * gamma| and |beta|), then rounded once to float32: half an ulp.
    tolerance = 0.5 * ulp32(want) + 1e-12 * (np.abs(scaled) + np.abs(beta))
    assert got.dtype == np.float32
    assert np.all(np.abs(got - want) <= tolerance)


def test_matches_torch():
    x, gamma, beta = inputs(np.random.default_rng(9), 40, 768)
    got = layer_norm(x, gamma, beta, 1e-5)
    want = torch.nn.functional.layer_norm(
        torch.from_numpy(x), (768,), torch.from_numpy(gamma), torch.from_numpy(beta), eps=1e-5
    ).numpy()
    # torch works in float32 and sums the 768 terms of the mean and variance in a cascade (pairwise-like),
    # so those carry ~log2(768) = 10 units of roundoff (u = 2**-24), rsqrt halves the variance's; the
    # centring, rsqrt, two multiplies and an add round once each: (10 + 6) u of |x_hat * gamma| + |beta|.
    scale = np.abs(normalized64(x, 1e-5) * gamma) + np.abs(beta)
    assert np.all(np.abs(got - want) <= 16 * 2.0**-24 * scale)


def test_constant_row_gives_beta():
    """Zero variance: (x - mean) is exactly 0, so out = beta (eps keeps the division finite)."""
    x = np.full((2, 5), 3.25, np.float32)
    gamma, beta = np.ones(5, np.float32), np.arange(5, dtype=np.float32)
    assert np.array_equal(layer_norm(x, gamma, beta, 1e-5), np.tile(beta, (2, 1)))


def test_in_place_and_out():
    x, gamma, beta = inputs(np.random.default_rng(4), 6, 33)
    want = layer_norm(x, gamma, beta, 1e-5)
    out = np.empty_like(x)
    assert layer_norm(x, gamma, beta, 1e-5, out=out) is out
    assert np.array_equal(out, want)
    assert layer_norm(x, gamma, beta, 1e-5, out=x) is x
    assert np.array_equal(x, want)


@pytest.mark.parametrize(
    "changes, match",
    [
        (dict(x=np.zeros((2, 4), np.float64)), "x must be float32"),
        (dict(x=np.zeros(4, np.float32)), "x must have 2 dimensions"),
        (dict(x=np.zeros((2, 0), np.float32), gamma=np.zeros(0, np.float32)), "x must have at least one column"),
        (dict(gamma=np.zeros(5, np.float32)), r"gamma must have shape \(4,\)"),
        (dict(beta=np.zeros(4, np.int64)), "beta must be float32"),
        (dict(eps=-1.0), "eps must be a finite number >= 0"),
        (dict(eps=float("nan")), "eps must be a finite number >= 0"),
        (dict(eps=10**400), "eps must be a finite number >= 0"),
        (dict(eps="1e-5"), "eps must be a finite number >= 0"),
        (dict(eps=True), "eps must be a finite number >= 0"),
        (dict(out=np.zeros((4, 2), np.float32)), r"out must have shape \(2, 4\)"),
    ],
)
def test_rejects_bad_arguments(changes, match):
    args = dict(x=np.zeros((2, 4), np.float32), gamma=np.ones(4, np.float32), beta=np.zeros(4, np.float32), eps=1e-5)
    with pytest.raises(ValueError, match=match):
        checks.layer_norm(**{**args, **changes})


@pytest.mark.parametrize("width", [768, 13])
def test_rows_are_independent(width, thread_count):
    """A row's result does not depend on the other rows (one thread for a few rows, parallel for more)."""
    rng = np.random.default_rng(width)
    x, gamma, beta = inputs(rng, 48, width, offset=3.0)
    assert_rows_independent(lambda index: layer_norm(x[index], gamma, beta, 1e-5), 48, rng)
