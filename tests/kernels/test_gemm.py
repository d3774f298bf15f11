"""gemm.broadcast_gemm, the kernel of products of more than SMALL_M rows (float32 ``linear`` with gemm="numba",
and every int8 product of that size): each output is one chain of multiply-adds, so a row's result must not
depend on the other rows in the product, their number, its position, or the thread count. (Its accuracy
against float64 products is in test_matmul.py and test_quantized.py, which run it through the public kernels.)"""

import numpy as np
import pytest
from checked import checked
from rounding import random
from test_matmul import LINEAR_CASES
from test_quantized import quantized_rows
from tinygpt.kernels import gemm, matmul, quantized
from tinygpt.kernels.matmul import SMALL_M
from tinygpt.kernels.threads import get_num_threads, set_num_threads

linear, linear_nt_int8 = checked(matmul.linear), checked(quantized.linear_nt_int8)

# More rows than two row blocks, ending in a ragged tile of rows; test_matmul's products: distilgpt2's, then
# N not a multiple of a strip (16) or of a panel (64), K not a multiple of the k-block (256) and shorter than one.
ROWS = 2 * gemm.BLOCK_ROWS + gemm.TILE_ROWS + 1
CASES = LINEAR_CASES


def at_threads(count, compute):
    before = get_num_threads()
    set_num_threads(count)
    try:
        return compute()
    finally:
        set_num_threads(before)


def assert_rows_independent_of_their_neighbours(product, rng):
    """product(index) -> the kernel's rows for x[index], index longer than SMALL_M: each must equal that row
    in the whole product, computed at another thread count, in shuffled subsets of several sizes."""
    whole = at_threads(2, lambda: product(np.arange(ROWS))).view(np.int32)
    for threads, size in [(1, ROWS), (2, SMALL_M + 1), (1, SMALL_M + 7), (2, gemm.BLOCK_ROWS + 1)]:
        index = rng.permutation(ROWS)[:size]
        got = at_threads(threads, lambda: product(index)).view(np.int32)
        differ = np.flatnonzero((got != whole[index]).any(axis=1))
        assert differ.size == 0, f"{threads} thread(s), {size} rows: rows {index[differ]} differ"


@pytest.mark.parametrize("k, n, options", CASES)
def test_float32_rows_are_independent(k, n, options):
    rng = np.random.default_rng(k * 7 + n)
    x, w, b, base = random(rng, ROWS, k), random(rng, k, n), random(rng, n), random(rng, ROWS, n)

    def product(index):
        out = base[index].copy() if options.get("accumulate") else None
        return linear(x[index], w, b, out, gemm="numba", **options)

    assert_rows_independent_of_their_neighbours(product, rng)


@pytest.mark.parametrize("k, n, options", CASES)
def test_int8_rows_are_independent(k, n, options):
    rng = np.random.default_rng(k * 11 + n)
    x, b, base = random(rng, ROWS, k), random(rng, n), random(rng, ROWS, n)
    q, scale, _ = quantized_rows(rng, n, k)

    def product(index):
        out = base[index].copy() if options.get("accumulate") else None
        return linear_nt_int8(x[index], q, scale, b, out, **options)

    assert_rows_independent_of_their_neighbours(product, rng)
    # and equal to decode's numbers: one row at a time, and a few rows at a time (the integer dot products)
    whole = product(np.arange(ROWS))
    np.testing.assert_array_equal(np.concatenate([product(np.array([i])) for i in range(ROWS)]), whole)
    index = rng.permutation(ROWS)[:SMALL_M]
    np.testing.assert_array_equal(product(index), whole[index])


def test_int8_sums_stay_exact_at_the_extremes():
    """The bound of the module docstring at its limit: every x at +-32767 steps times weights at +-127 over
    K = 3072 (six 512-deep k-blocks, each summing to 512 * 32767 * 127 < 2**31 in an int32 element) equals
    the exact int64 product, scaled once. An overflow would wrap to a value of the other sign."""
    k, n, rows = 3072, 32, SMALL_M + 1
    rng = np.random.default_rng(1)
    signs = rng.choice(np.array([-1, 1], np.int8), (n, k))
    q = (signs * 127).astype(np.int8)
    q[:4] = 127  # rows of q all at +127 (and x all at +1 below): sums at the very top of the range
    scale = np.ones(n, np.float32)
    x = np.ones((rows, k), np.float32)
    x[1::2] *= rng.choice(np.array([-1, 1], np.float32), (rows // 2, k))
    got = linear_nt_int8(x, q, scale)
    exact = (np.rint(x * 32767).astype(np.int64) @ q.T.astype(np.int64)).astype(np.float64) / 32767
    np.testing.assert_array_equal(got, exact.astype(np.float32))
    assert got[0, 0] == k * 127


def test_each_output_is_one_chain_of_multiply_adds_in_k_order():
    """The order the module docstring promises, checked against its definition: bias first, then k = 0, 1, ...
    x and w carry at most 8 significant bits, so every product is exact in float32 (fused or not, the only
    rounding is the sum's), and their magnitudes span few enough bits that each float64 sum is exact: rounding
    it to float32 is then exactly the kernel's step. The values spread over 2**-8 .. 2**30, so the order of
    the sum changes the result (checked: summing in reverse gives other bits)."""
    rng = np.random.default_rng(5)
    rows, k, n = SMALL_M + 5, 2 * gemm.KC + 3, 20

    def values(*shape):
        return (rng.integers(-128, 129, shape) * 2.0 ** rng.integers(-4, 5, shape)).astype(np.float32)

    x, w, b = values(rows, k), values(k, n), values(n)

    def chain(order):
        total = np.tile(b, (rows, 1))
        for kk in order:
            total = (total.astype(np.float64) + x[:, kk : kk + 1].astype(np.float64) * w[kk]).astype(np.float32)
        return total

    want = chain(range(k))
    assert not np.array_equal(want, chain(reversed(range(k))))
    np.testing.assert_array_equal(linear(x, w, b, gemm="numba"), want)
