"""gelu_new against an exact float64 formula and against torch's float32 tanh GELU."""

import numpy as np
import pytest
import torch

from checked import checked
from independent_rows import assert_rows_independent, thread_count  # noqa: F401  (a fixture)
from tinygpt.kernels import activations, checks
from tinygpt.kernels.activations import exp_f64, gelu_in_place

gelu_new = checked(activations.gelu_new)


def gelu64(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x**3)))


def ulp32(v: np.ndarray) -> np.ndarray:
    """Float32 ulp at |v|, as float64 (halving it in float32 would round the smallest subnormal to 0)."""
    return np.spacing(np.abs(v).astype(np.float32)).astype(np.float64)


def sample(rng: np.random.Generator, *shape: int) -> np.ndarray:
    """Mostly N(0, 3) values plus a few large ones, where tanh saturates."""
    x = (3 * rng.standard_normal(shape)).astype(np.float32)
    x.reshape(-1)[::97] *= 10
    return x


def test_matches_float64_tanh_formula():
    x = sample(np.random.default_rng(0), 100_003)  # odd length: a partial last chunk
    got = gelu_new(x)
    want = gelu64(x)
    # gelu_new works in float64 (exp accurate to 3e-10 relative) and rounds once to float32: half a float32
    # ulp, plus that relative 3e-10 near rounding ties. The float64 reference itself is off by up to
    # 2**-53 * |x| where tanh(u) is near -1 (1 + tanh cancels), which matters for tiny outputs at x << 0.
    tolerance = 0.5 * ulp32(want) + 1e-9 * np.abs(want) + 2.0**-53 * np.abs(x)
    assert np.all(np.abs(got - want) <= tolerance)


def test_gelu_in_place_on_rows_equals_gelu_new():
    """The fused kernels' GELU, applied to one row (a contiguous slice of a 2-D array), is gelu_new exactly."""
    x = sample(np.random.default_rng(5), 7, 131)
    want = gelu_new(x)
    rows = x.copy()
    for i in range(rows.shape[0]):
        gelu_in_place(rows[i, 3:])
    assert np.array_equal(rows[:, 3:], want[:, 3:])
    assert np.array_equal(rows[:, :3], x[:, :3])  # outside the slice: untouched


def test_half_an_ulp_from_cancellation_free_form():
    """0.5*(1 + tanh(u)) == 1/(1 + exp(-2u)): the same function without cancellation for x << 0, so in
    float64 it is exact to float32 precision everywhere, tiny negative outputs included."""
    x = sample(np.random.default_rng(3), 100_000)
    x64 = x.astype(np.float64)
    with np.errstate(over="ignore"):
        want = x64 / (1.0 + np.exp(-2.0 * np.sqrt(2.0 / np.pi) * (x64 + 0.044715 * x64**3)))
    tolerance = 0.5 * ulp32(want) + 1e-9 * np.abs(want)
    assert np.all(np.abs(gelu_new(x) - want) <= tolerance)


def test_matches_torch_tanh_gelu():
    x = sample(np.random.default_rng(1), 64, 257)
    got = gelu_new(x)
    want = torch.nn.functional.gelu(torch.from_numpy(x), approximate="tanh").numpy()
    # torch evaluates 0.5*x*(1 + tanh(u)) in float32: tanh and the sum 1 + tanh are each off by up to about
    # one float32 ulp of 1 (2**-23), which the factor 0.5*x scales to 2**-24*|x| each; plus the rounding
    # of the product. Our value is within half an ulp of exact, so the two differ by at most this much.
    tolerance = 2.0**-23 * np.abs(x) + ulp32(want)
    assert np.all(np.abs(got - want) <= tolerance)


def test_shapes_and_in_place():
    x = sample(np.random.default_rng(2), 3, 5, 7)
    want = gelu_new(x.copy())
    assert want.shape == (3, 5, 7) and want.dtype == np.float32
    assert gelu_new(x, out=x) is x
    assert np.array_equal(x, want)
    out = np.empty_like(x)
    assert gelu_new(want, out=out) is out
    assert gelu_new(np.zeros((0, 4), np.float32)).shape == (0, 4)


def test_special_values():
    x = np.array([0.0, -0.0, np.inf, np.nan, -40.0, 40.0], np.float32)
    got = gelu_new(x)
    assert got[0] == 0.0 and got[1] == 0.0
    assert got[2] == np.inf
    assert np.isnan(got[3])
    assert got[4] == 0.0  # x * Phi(x) underflows float32 for x <= -14 or so
    assert got[5] == 40.0


def test_exp_f64_accuracy():
    """The vectorisable exp behind GELU (and attention's softmax) against libm's exp."""
    x = np.linspace(-700.0, 700.0, 200_001)
    got = np.array([exp_f64(v) for v in x[::50]])
    want = np.exp(x[::50])
    assert np.all(np.abs(got / want - 1.0) <= 3e-10)  # degree-8 Taylor remainder on |r| <= ln(2)/2


@pytest.mark.parametrize(
    "x, out, match",
    [
        (np.zeros(4, np.float64), None, "x must be float32"),
        (np.zeros((4, 4), np.float32)[:, ::2], None, "x must be C-contiguous"),
        ([1.0, 2.0], None, "x must be a numpy array"),
        (np.zeros(4, np.float32), np.zeros(5, np.float32), r"out must have shape \(4,\)"),
        (np.zeros(4, np.float32), np.zeros(4, np.float64), "out must be float32"),
    ],
)
def test_rejects_bad_arguments(x, out, match):
    with pytest.raises(ValueError, match=match):
        checks.gelu_new(x, out)


def test_out_partially_overlapping_x_is_rejected():
    x = np.zeros(8, np.float32)
    with pytest.raises(ValueError, match="out must not overlap x"):
        checks.gelu_new(x[:4], out=x[2:6])


@pytest.mark.parametrize("width", [3072, 13])
def test_rows_are_independent(width, thread_count):
    """A row's GELU does not depend on the other rows (parallel chunks cut rows at any element)."""
    rng = np.random.default_rng(width)
    x = sample(rng, 48, width)
    assert_rows_independent(lambda index: gelu_new(x[index]), 48, rng)
