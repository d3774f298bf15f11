"""The integer dot products behind the int8 decode kernels: exact against NumPy int64, at the extremes of
int16 x int8 and past the block length that keeps int32 lanes from overflowing; and the int16 rounding of
activations."""

import numpy as np
import pytest
from tinygpt.kernels.intdot import BLOCK, CHUNK, GROUP, INT16_MAX, LANES, int16_row, int_dot, int_dot_lanes, int_dots
from tinygpt.kernels.quantized import linear_nt_int8

# Lengths around the vector chunk and the block: tails only, one chunk, a chunk plus a tail, a full block,
# a block plus a tail, several blocks with a ragged end.
DEPTHS = [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 768, BLOCK, BLOCK + 7, 2 * BLOCK + 3 * CHUNK + 5]


@pytest.mark.parametrize("depth", DEPTHS)
def test_int_dot_is_exact(depth):
    rng = np.random.default_rng(depth)
    x = rng.integers(-INT16_MAX, INT16_MAX + 1, depth).astype(np.int16)
    q = rng.integers(-127, 128, (3, depth)).astype(np.int8)
    for row in range(3):
        assert int_dot(x[None], q, row) == int(x.astype(np.int64) @ q[row].astype(np.int64))


@pytest.mark.parametrize("depth", DEPTHS)
def test_int_dots_of_a_group_of_rows_are_exact(depth):
    rng = np.random.default_rng(depth + 1)
    x = rng.integers(-INT16_MAX, INT16_MAX + 1, (GROUP + 3, depth)).astype(np.int16)
    q = rng.integers(-127, 128, (2, depth)).astype(np.int8)
    totals = np.empty(GROUP, np.int64)
    for first in (0, 3):
        for row in range(2):
            int_dots(x, first, q, row, 0, totals)
            want = x[first:first + GROUP].astype(np.int64) @ q[row].astype(np.int64)
            np.testing.assert_array_equal(totals, want)


@pytest.mark.parametrize("depth", DEPTHS)
def test_int_dot_lanes_of_distant_rows_are_exact(depth):
    rng = np.random.default_rng(depth + 2)
    x = rng.integers(-INT16_MAX, INT16_MAX + 1, (1, depth)).astype(np.int16)
    q = rng.integers(-127, 128, (3 * LANES + 2, depth)).astype(np.int8)
    totals = np.empty(LANES, np.int64)
    for row, stride in ((0, 1), (2, 3), (1, 0)):
        int_dot_lanes(x, 0, q, row, stride, totals)
        want = q[row + stride * np.arange(LANES)].astype(np.int64) @ x[0].astype(np.int64)
        np.testing.assert_array_equal(totals, want)


@pytest.mark.parametrize("depth", [BLOCK, 3 * BLOCK + CHUNK + 1])
def test_int_dot_does_not_overflow_at_the_extremes(depth):
    """Every product at its largest magnitude: a whole block summed in one int32 lane would wrap around."""
    x = np.full(depth, INT16_MAX, np.int16)
    q = np.stack([np.full(depth, 127, np.int8), np.full(depth, -127, np.int8)])
    assert int_dot(x[None], q, 0) == depth * INT16_MAX * 127
    assert int_dot(x[None], q, 1) == -depth * INT16_MAX * 127
    totals = np.empty(GROUP, np.int64)
    int_dots(np.tile(x, (GROUP, 1)), 0, q, 1, 0, totals)
    np.testing.assert_array_equal(totals, -depth * INT16_MAX * 127)
    lanes = np.empty(LANES, np.int64)
    int_dot_lanes(x[None], 0, np.tile(q, (LANES, 1)), 0, 1, lanes)  # rows 127, -127, 127, ...
    np.testing.assert_array_equal(lanes, depth * INT16_MAX * 127 * (-1) ** np.arange(LANES))


def test_int16_row_rounds_to_steps_of_the_peak():
    x = np.array([0.5, -2.0, 1.0, 0.0, 3e-5], np.float32)
    x_int = np.empty(5, np.int16)
    step = int16_row(x, x_int)
    assert step == 2.0 / INT16_MAX
    np.testing.assert_array_equal(x_int, [8192, -INT16_MAX, 16384, 0, 0])  # 0.5 / step = 8191.75 -> 8192


def test_int16_row_of_zeros_and_of_non_finite_values():
    x_int = np.full(3, 7, np.int16)
    assert int16_row(np.zeros(3, np.float32), x_int) == 0.0
    np.testing.assert_array_equal(x_int, 0)
    for bad in (np.nan, np.inf, -np.inf):
        assert np.isnan(int16_row(np.array([1.0, bad, 2.0], np.float32), x_int))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_decode_product_propagates_non_finite_activations(bad):
    """A NaN or infinite activation cannot be rounded to int16; the product must not come out finite."""
    rng = np.random.default_rng(3)
    q = rng.integers(-127, 128, (40, 70)).astype(np.int8)
    q[:, 5] = 1  # every output multiplies the bad activation by a nonzero weight
    x = rng.standard_normal((1, 70)).astype(np.float32)
    x[0, 5] = bad
    got = linear_nt_int8(x, q, np.ones(40, np.float32))
    assert not np.isfinite(got).any()
    want = x.astype(np.float64) @ q.T.astype(np.float64)  # what float32 arithmetic gives: all NaN or +-inf
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))


def test_batched_decode_product_keeps_a_non_finite_row_to_itself():
    """With several rows, only the row holding NaN takes float32 dot products; the others stay exact."""
    rng = np.random.default_rng(4)
    q = rng.integers(-127, 128, (40, 70)).astype(np.int8)
    x = rng.standard_normal((3, 70)).astype(np.float32)
    alone = linear_nt_int8(x[[0, 2]], q, np.ones(40, np.float32))
    x[1, 9] = np.nan
    got = linear_nt_int8(x, q, np.ones(40, np.float32))
    assert np.isnan(got[1]).all()
    np.testing.assert_array_equal(got[[0, 2]], alone)


@pytest.mark.parametrize("peak", [3e-42, 1e-30, 1e30])
def test_decode_product_of_tiny_and_huge_activations(peak):
    """Rounding to steps of peak / 32767 must not overflow for a subnormal peak nor lose a huge one."""
    rng = np.random.default_rng(6)
    q = rng.integers(-127, 128, (8, 40)).astype(np.int8)
    x = (rng.uniform(-1, 1, (1, 40)) * peak).astype(np.float32)
    got = linear_nt_int8(x, q, np.ones(8, np.float32))
    want = x.astype(np.float64) @ q.T.astype(np.float64)
    step = np.abs(x).max().astype(np.float64) / INT16_MAX
    bound = 0.5 * step * np.abs(q).sum(axis=1) + 4 * 2.0**-24 * np.abs(x).astype(np.float64) @ np.abs(q.T)
    assert np.all(np.isfinite(got))
    assert np.all(np.abs(got - want) <= bound + np.finfo(np.float32).smallest_subnormal)


@pytest.mark.parametrize("streams", [1, LANES])
def test_x86_with_avx2_gets_the_16_lane_multiply_add(streams):
    """The IR loop (one row of weights, or LANES side by side) is plain LLVM vector code that the x86 backend
    should fuse into vpmaddwd on 256-bit registers; if a Numba/LLVM upgrade stopped that, the int8 decode
    would silently lose its speed."""
    import platform

    import llvmlite.binding as llvm
    from numba import njit

    if platform.machine() not in ("x86_64", "AMD64") or not llvm.get_host_cpu_features().get("avx2", False):
        pytest.skip("vpmaddwd on ymm registers needs an x86-64 CPU with AVX2")

    @njit  # not cached: Numba only shows the machine code of functions it compiled in this process
    def dot(x, q):
        return int_dot(x, q, 0)

    @njit
    def dot_lanes(x, q):
        totals = np.empty(LANES, np.int64)
        int_dot_lanes(x, 0, q, 0, 1, totals)
        return totals.sum()

    x, q = np.ones((1, 64), np.int16), np.ones((LANES, 64), np.int8)
    dot = dot if streams == 1 else dot_lanes
    assert dot(x, q) == 64 * streams
    assembly = next(iter(dot.inspect_asm().values()))
    assert "vpmaddwd" in assembly and "%ymm" in assembly.split("vpmaddwd", 1)[1].splitlines()[0]
