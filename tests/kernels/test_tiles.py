"""tiles.broadcast_chains, the register tile of paged attention: each output lane is one chain of multiply-adds
in k order, starting from out's value, bit for bit the chain a scalar loop of ``fmuladd`` computes."""

import numpy as np
import pytest
from numba import njit
from tinygpt.kernels.jit import jit
from tinygpt.kernels.tiles import LANES, broadcast_chains, fmuladd

VARIANTS = [(1, 4, 2), (1, 1, 2), (1, 1, 8), (4, 1, 2)]  # (rows of a, matrices, vectors): what attention builds


@jit()
def scalar_chain(a, row, a0, n, flat, at, width, start):
    """start, then fmuladd(a[row, a0 + k], flat[at + k * width], ...) for k = 0 .. n-1: one lane's chain."""
    value = start
    for k in range(n):
        value = fmuladd(a[row, a0 + k], flat[at + k * width], value)
    return value


def caller(tile, chunks):
    """A compiled function calling ``tile`` with the matrices as separate arguments."""
    if chunks == 4:
        return njit(lambda a, ra, a0, n, m0, m1, m2, m3, at, out, rows, out_cols:
                    tile(a, ra, a0, n, (m0, m1, m2, m3), at, out, rows, out_cols))
    return njit(lambda a, ra, a0, n, m0, at, out, rows, out_cols: tile(a, ra, a0, n, (m0,), at, out, rows, out_cols))


TILES = {variant: caller(broadcast_chains(*variant), variant[1]) for variant in VARIANTS}


@pytest.mark.parametrize("a_rows, chunks, vectors", VARIANTS)
@pytest.mark.parametrize("n", [0, 1, 7, 16, 64])
def test_each_lane_is_one_chain_in_k_order(a_rows, chunks, vectors, n):
    rng = np.random.default_rng(100 * a_rows + 10 * chunks + vectors + n)
    lanes = vectors * LANES
    a = rng.standard_normal((a_rows + 2, n + 5)).astype(np.float32)
    # matrices of different row lengths, read from a row and column past their start (a block's later slots)
    widths = [lanes + 8 * c for c in range(chunks)]
    mats = [rng.standard_normal((n + 3, width)).astype(np.float32) for width in widths]
    at = tuple(2 * width + 8 * (c % 2) for c, width in enumerate(widths))
    out = rng.standard_normal((a_rows + 3, chunks * lanes + 16)).astype(np.float32)
    ra = tuple(range(1, a_rows + 1))[::-1]  # rows of a in reverse: any rows, any order
    rows = tuple(range(2, a_rows + 2))
    out_cols = tuple(16 + lanes * c for c in range(chunks))[::-1]
    want = out.copy()
    for r in range(a_rows):
        for c in range(chunks):
            for lane in range(lanes):
                want[rows[r], out_cols[c] + lane] = scalar_chain(
                    a, ra[r], 3, n, mats[c].reshape(-1), at[c] + lane, widths[c], out[rows[r], out_cols[c] + lane])
    got = out.copy()
    TILES[a_rows, chunks, vectors](a, ra, 3, n, *mats, at, got, rows, out_cols)
    np.testing.assert_array_equal(got, want)
    if n:  # the chains did run (and a float64 sum agrees to float32 rounding)
        r, c = 0, 0
        flat = mats[c].reshape(-1)
        terms = a[ra[r], 3 : 3 + n].astype(np.float64) * flat[at[c] + np.arange(n) * widths[c]]
        assert abs(got[rows[r], out_cols[c]] - (out[rows[r], out_cols[c]] + terms.sum())) <= 1e-4 * (
            abs(out[rows[r], out_cols[c]]) + np.abs(terms).sum())
