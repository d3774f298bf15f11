"""The integer dot products behind the int8 decode kernels: exact against NumPy int64, at the extremes of
int16 x int8 and past the block length that keeps int32 sums from overflowing; and the int16 rounding of
activations."""

import re

import numpy as np
import pytest
from checked import checked
from target import is_x86_64, target_assembly, target_has_avx2
from tinygpt.kernels import quantized
from tinygpt.kernels.intdot import (
    INT16_MAX,
    VECTOR_WIDTH,
    WEIGHT_PAIR_VECTORS,
    WEIGHT_STREAMS,
    WEIGHTS_PER_BLOCK,
    WEIGHTS_PER_PASS,
    X_ROWS_PER_PASS,
    dot_one_row,
    dot_weight_streams,
    dot_x_rows,
    dot_x_rows_weight_pairs,
    int16_row,
    int_dots,
)

linear_nt_int8 = checked(quantized.linear_nt_int8)

# Lengths around a pass of the IR loop and the block: tails only, one pass, a pass plus a tail, a full block,
# a block plus a tail, several blocks with a ragged end.
PAIR_PASS = WEIGHT_PAIR_VECTORS * VECTOR_WIDTH  # weights per pass of dot_x_rows_weight_pairs
DEPTHS = [0, 1, PAIR_PASS - 1, PAIR_PASS + 1, WEIGHTS_PER_PASS - 1, WEIGHTS_PER_PASS, WEIGHTS_PER_PASS + 1, 768,
          WEIGHTS_PER_BLOCK,
          WEIGHTS_PER_BLOCK + 7, 2 * WEIGHTS_PER_BLOCK + 3 * WEIGHTS_PER_PASS + 5]
# (x_rows, weight_rows, the function the kernels use): the four the int8 kernels take, and one more shape
# from the same factory.
SHAPES = [(1, 1, dot_one_row), (X_ROWS_PER_PASS, 1, dot_x_rows), (X_ROWS_PER_PASS, 2, dot_x_rows_weight_pairs),
          (1, WEIGHT_STREAMS, dot_weight_streams), (2, 3, None)]


@pytest.mark.parametrize("x_rows, weight_rows, dots", SHAPES)
@pytest.mark.parametrize("depth", DEPTHS)
def test_int_dots_are_exact(depth, x_rows, weight_rows, dots):
    """totals[w * x_rows + r] = x[first + r] . q[row + w * stride], against NumPy int64, for rows of weights
    next to each other, apart, and one row taken again (stride 0)."""
    dots = dots or int_dots(x_rows, weight_rows)
    rng = np.random.default_rng(depth + 10 * x_rows + weight_rows)
    x = rng.integers(-INT16_MAX, INT16_MAX + 1, (x_rows + 3, depth)).astype(np.int16)
    q = rng.integers(-127, 128, (3 * weight_rows + 2, depth)).astype(np.int8)
    totals = np.empty(x_rows * weight_rows, np.float64)
    for first, row, stride in ((0, 0, 1), (3, 2, 3), (1, 1, 0)):
        dots(x, first, q, row, stride, totals)
        weights = q[row + stride * np.arange(weight_rows)].astype(np.int64)  # [weight_rows, K]
        want = weights @ x[first:first + x_rows].astype(np.int64).T  # [weight_rows, x_rows]
        np.testing.assert_array_equal(totals, want.reshape(-1))


@pytest.mark.parametrize("depth", [WEIGHTS_PER_BLOCK, 3 * WEIGHTS_PER_BLOCK + WEIGHTS_PER_PASS + 1])
def test_int_dots_do_not_overflow_at_the_extremes(depth):
    """Every product at its largest magnitude: a whole block summed in one int32 element would wrap around."""
    x = np.full(depth, INT16_MAX, np.int16)
    q = np.stack([np.full(depth, 127, np.int8), np.full(depth, -127, np.int8)])
    one = np.empty(1, np.float64)
    dot_one_row(x[None], 0, q, 0, 0, one)
    assert one[0] == depth * INT16_MAX * 127
    dot_one_row(x[None], 0, q, 1, 0, one)
    assert one[0] == -depth * INT16_MAX * 127
    totals = np.empty(X_ROWS_PER_PASS, np.float64)
    dot_x_rows(np.tile(x, (X_ROWS_PER_PASS, 1)), 0, q, 1, 0, totals)
    np.testing.assert_array_equal(totals, -depth * INT16_MAX * 127)
    pairs = np.empty(2 * X_ROWS_PER_PASS, np.float64)  # one vector per pass: twice the multiply-adds per element
    dot_x_rows_weight_pairs(np.tile(x, (X_ROWS_PER_PASS, 1)), 0, q, 0, 1, pairs)
    np.testing.assert_array_equal(pairs, depth * INT16_MAX * 127 * np.repeat([1, -1], X_ROWS_PER_PASS))
    streams = np.empty(WEIGHT_STREAMS, np.float64)
    dot_weight_streams(x[None], 0, np.tile(q, (WEIGHT_STREAMS, 1)), 0, 1, streams)  # rows 127, -127, 127, ...
    np.testing.assert_array_equal(streams, depth * INT16_MAX * 127 * (-1) ** np.arange(WEIGHT_STREAMS))


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


# The vector integer multiply-add instructions LLVM may choose for the IR loop's multiply, add-pairs, add: AVX2's
# vpmaddwd (then vpaddd), or AVX-512 VNNI's vpdpwssd, which does all three.
MULTIPLY_ADD = re.compile(r"^\s*(vpmaddwd|vpdpwssd)\s[^\n]*%[yz]mm", re.MULTILINE)


@pytest.mark.skipif(not is_x86_64(), reason="checks x86-64 instruction selection")
def test_target_probe_agrees_with_what_numba_compiles():
    """target_has_avx2 asks LLVM with the CPU and features Numba compiles for; if Numba stopped passing them
    as it does today, the probe would answer for another CPU. So: Numba's own code for a sum of integers
    uses 256- or 512-bit integer adds exactly when the probe finds AVX2."""
    from numba import njit

    @njit
    def total(a):
        s = np.int32(0)
        for i in range(a.size):  # LLVM vectorises this sum with the widest integer adds the target has
            s += a[i]
        return s

    assert total(np.ones(100, np.int32)) == 100
    ours = next(iter(total.inspect_asm().values()))
    wide_integer_adds = re.search(r"vpadd[dq]\s[^\n]*%[yz]mm", ours) is not None  # 256 or 512 bits
    assert wide_integer_adds == target_has_avx2(), target_assembly.__doc__


@pytest.mark.parametrize("weight_rows", [1, WEIGHT_STREAMS])
def test_integer_loop_compiles_to_a_vector_integer_multiply_add(weight_rows):
    """The IR loop (one row of weights, or WEIGHT_STREAMS side by side) is plain LLVM vector code that the x86
    backend should fuse into an integer multiply-add on 256- or 512-bit registers: vpmaddwd on AVX2 and
    AVX-512, vpdpwssd with AVX-512 VNNI. If a Numba/LLVM upgrade stopped that (widening to float32, or
    scalar or 128-bit code), the int8 decode would silently lose its speed. What to expect is decided by the
    CPU Numba compiles for (NUMBA_CPU_NAME may name another than the host)."""
    if not target_has_avx2():
        pytest.skip("the integer multiply-add on 256-bit registers needs an x86-64 target with AVX2; this "
                    "target has none, and LLVM's choice there is not pinned")
    from numba import njit

    dots = int_dots(1, weight_rows)

    @njit  # not cached: Numba only shows the machine code of functions it compiled in this process
    def dot(x, q):
        totals = np.empty(weight_rows, np.float64)
        dots(x, 0, q, 0, 1, totals)
        return totals.sum()

    x, q = np.ones((1, 64), np.int16), np.ones((weight_rows, 64), np.int8)
    assert dot(x, q) == 64 * weight_rows
    assembly = next(iter(dot.inspect_asm().values()))
    assert MULTIPLY_ADD.search(assembly), "no vpmaddwd / vpdpwssd on ymm or zmm registers"
    assert "cvtdq2ps" not in assembly  # integers are never widened to float32
