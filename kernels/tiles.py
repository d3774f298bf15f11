"""Building blocks shared by the matrix kernels (float32 and int8) and attention: GEMM tiles, streams, dots.

A product ``a @ b.T`` of two K-contiguous operands is computed as a grid of 3x4 tiles of dot products
(``dot_3x4``): LLVM vectorises the k loop into 12 vector accumulators (ymm on AVX2), and each tile reads
3 rows of ``a`` and 4 rows of ``b``. ``panel_product`` walks a panel of ``b`` (its rows stay in L1/L2) over
every row of ``a``; ``panel_gemm`` builds the GEMM kernels around it, one per way of packing the weights into
such panels. ``split_k`` cuts x into k-blocks. ``stream_rows`` is the other regime, a few rows of x and
float32 weights: it reads each weight once, in place. ``dot_row`` is one row's dot product, float32 or int8;
``dot_2rows`` two float32 rows' at once.
"""

import numpy as np
from numba import prange

from .activations import gelu_in_place
from .jit import jit

FAST = {"reassoc", "contract"}  # lets LLVM vectorise float reductions and fuse multiply-adds; keeps NaN/inf

MR, NR = 3, 4  # register tile: 12 vector accumulators + 3 operands fit AVX2's 16 registers
KC = 768  # k-block: 3 rows of x plus 4 rows of w (21 KB) stay in L1 during one tile
MC = 66  # row block, a multiple of MR: 66 x 768 floats of x (200 KB) stay in L2 while a panel sweeps them
NC = 64  # panel width: the packed 64 x 768 panel of w (192 KB) shares L2 with the row block
STREAM_CHUNK = 512  # stream_rows: columns per pass (4 weight rows x 512 floats = 8 KB of L1)
ONE_ROW_STREAMS = 8  # stream_rows with one row of x: rows of w read side by side, 8 multiply-adds per sum


# Both operands are handed to the tile as 2-D arrays whose k index starts at 0 (x split into k-blocks, w
# panels packed), so the tile indexes ``a[row, k]`` with k from range(): LLVM then sees unit-stride,
# non-negative indices and vectorises without gathers or per-element wraparound checks.


# Inlined (Numba IR) into the GEMM loops, which call it once per tile: a call per tile costs more than its
# loads (benchmarks/kernel_times.py's docstring has the measurement).
@jit(fastmath=FAST, inline="always")
def dot_3x4(a, r0, r1, r2, b, c0, c1, c2, c3, kc):
    """The 12 dot products a[r, :kc] . b[c, :kc] for r in (r0, r1, r2), c in (c0..c3), row-major."""
    s00 = s01 = s02 = s03 = s10 = s11 = s12 = s13 = s20 = s21 = s22 = s23 = np.float32(0.0)
    for k in range(kc):
        x0 = a[r0, k]
        x1 = a[r1, k]
        x2 = a[r2, k]
        y = b[c0, k]
        s00 += x0 * y
        s10 += x1 * y
        s20 += x2 * y
        y = b[c1, k]
        s01 += x0 * y
        s11 += x1 * y
        s21 += x2 * y
        y = b[c2, k]
        s02 += x0 * y
        s12 += x1 * y
        s22 += x2 * y
        y = b[c3, k]
        s03 += x0 * y
        s13 += x1 * y
        s23 += x2 * y
    return (s00, s01, s02, s03, s10, s11, s12, s13, s20, s21, s22, s23)


@jit(fastmath=FAST)
def add_tile(out, i, j, sums, n_rows, n_cols):
    """out[i:i+n_rows, j:j+n_cols] += the matching part of a 3x4 tile of sums."""
    if n_rows == MR and n_cols == NR:  # interior tile: straight-line stores
        for r in range(MR):
            out[i + r, j] += sums[r * NR]
            out[i + r, j + 1] += sums[r * NR + 1]
            out[i + r, j + 2] += sums[r * NR + 2]
            out[i + r, j + 3] += sums[r * NR + 3]
    else:
        for r in range(n_rows):
            for c in range(n_cols):
                out[i + r, j + c] += sums[r * NR + c]


@jit(fastmath=FAST)
def panel_product(xa, kc, bt, bt_row0, out, j0, width):
    """out[:, j0:j0+width] += xa[:, :kc] @ bt[bt_row0:bt_row0+width, :kc].T

    Edge tiles reuse the last valid row/column (clamped indices) and store only the valid part."""
    rows = xa.shape[0]
    last_col = bt_row0 + width - 1
    for i_block in range(0, rows, MC):
        i_end = min(rows, i_block + MC)
        last_row = i_end - 1
        for jj in range(0, width, NR):
            c = bt_row0 + jj
            c1 = min(c + 1, last_col)
            c2 = min(c + 2, last_col)
            c3 = min(c + 3, last_col)
            for i in range(i_block, i_end, MR):
                sums = dot_3x4(xa, i, min(i + 1, last_row), min(i + 2, last_row), bt, c, c1, c2, c3, kc)
                add_tile(out, i, j0 + jj, sums, min(MR, i_end - i), min(NR, width - jj))


@jit(parallel=True)
def split_k(x):
    """x [M, K] -> [ceil(K / KC), M, KC]: k-blocks of x, each C-contiguous (the tail block is not padded)."""
    rows, depth = x.shape
    n_blocks = (depth + KC - 1) // KC
    blocks = np.empty((n_blocks, rows, KC), np.float32)
    for i in prange(rows):
        for kb in range(n_blocks):
            k0 = kb * KC
            blocks[kb, i, : min(KC, depth - k0)] = x[i, k0 : k0 + KC]
    return blocks


@jit(fastmath=FAST)
def start_panel(out, j0, width, b, accumulate):
    """out[:, j0:j0+width] = [out +] b (0 without a bias): what a panel's products are then added to."""
    for i in range(out.shape[0]):
        for c in range(width):
            j = j0 + c
            if b is None:
                out[i, j] = out[i, j] if accumulate else np.float32(0.0)
            else:
                out[i, j] = b[j] + out[i, j] if accumulate else b[j]


def panel_gemm(pack):
    """A blocked GEMM kernel ``gemm(x_blocks, depth, weights, b, out, accumulate, gelu)``: out [M, N] =
    [out +] x @ W.T + b (no bias when b is None), then GELU if asked, for x given as ``split_k`` blocks of
    its ``depth`` columns. One task per panel of NC outputs: each k-block of the panel's rows of W is packed
    into a K-contiguous [NC, KC] buffer (192 KB, stays in L2) that every row of x then streams past.

    ``pack(weights, k0, k1, j0, width, panel)`` writes panel[c, k - k0] = W[j0 + c, k] for c < width, k0 <= k
    < k1, from the weights as they are stored: a ``jit_step`` function (see ``jit.jit_step``)."""

    @jit(parallel=True, fastmath=FAST)
    def gemm(x_blocks, depth, weights, b, out, accumulate, gelu):
        rows, n = out.shape
        for p in prange((n + NC - 1) // NC):
            j0 = p * NC
            width = min(NC, n - j0)
            start_panel(out, j0, width, b, accumulate)
            panel = np.empty((NC, KC), np.float32)
            for kb in range(x_blocks.shape[0]):
                k0 = kb * KC
                k1 = min(depth, k0 + KC)
                pack(weights, k0, k1, j0, width, panel)
                panel_product(x_blocks[kb], k1 - k0, panel, 0, out, j0, width)
            if gelu:
                for i in range(rows):
                    gelu_in_place(out[i, j0 : j0 + width])

    return gemm


@jit(fastmath=FAST)
def _stream_into_one_row(x_row, w, k0, k1, acc_row):
    """acc_row = x_row[k0:k1] @ w[k0:k1, :] (acc_row overwritten).

    The rows k0..k1 are cut into ONE_ROW_STREAMS runs of consecutive rows, and each pass over the sums takes
    the next row of every run: 8 multiply-adds per element of the sums, read as 8 sequential streams that
    each run through a whole run of rows. (8 *neighbouring* rows per pass would make 8 short runs through
    memory per pass, which restart the hardware prefetcher.)"""
    n = acc_row.size
    acc_row[:] = 0.0
    per_stream = (k1 - k0) // ONE_ROW_STREAMS  # rows per stream; the remainder rows come last, one at a time
    for r in range(per_stream):
        k = k0 + r
        for j0 in range(0, n, STREAM_CHUNK):
            j1 = min(n, j0 + STREAM_CHUNK)
            w0, w1 = w[k, j0:j1], w[k + per_stream, j0:j1]
            w2, w3 = w[k + 2 * per_stream, j0:j1], w[k + 3 * per_stream, j0:j1]
            w4, w5 = w[k + 4 * per_stream, j0:j1], w[k + 5 * per_stream, j0:j1]
            w6, w7 = w[k + 6 * per_stream, j0:j1], w[k + 7 * per_stream, j0:j1]
            a0, a1, a2, a3 = x_row[k], x_row[k + per_stream], x_row[k + 2 * per_stream], x_row[k + 3 * per_stream]
            a4, a5 = x_row[k + 4 * per_stream], x_row[k + 5 * per_stream]
            a6, a7 = x_row[k + 6 * per_stream], x_row[k + 7 * per_stream]
            sums = acc_row[j0:j1]
            for j in range(j1 - j0):
                sums[j] += ((a0 * w0[j] + a1 * w1[j]) + (a2 * w2[j] + a3 * w3[j])) + (
                    (a4 * w4[j] + a5 * w5[j]) + (a6 * w6[j] + a7 * w7[j])
                )
    for k in range(k0 + ONE_ROW_STREAMS * per_stream, k1):
        a = x_row[k]
        for j in range(n):
            acc_row[j] += a * w[k, j]


@jit(fastmath=FAST)
def stream_rows(x, w, k0, k1, acc):
    """acc[i, :] = x[i, k0:k1] @ w[k0:k1, :] for every row i of x (acc is overwritten).

    One row of x (decode) takes 8 rows of w per pass. More rows take 4 rows of w per pass, a 512-column
    chunk at a time (stays in L1 while every row of x uses it), applied to 2 rows of x at once, so one
    weight load feeds 8 multiply-adds."""
    rows, n = acc.shape
    if rows == 1:
        _stream_into_one_row(x[0], w, k0, k1, acc[0])
        return
    acc[:, :] = 0.0
    k = k0
    while k + 4 <= k1:
        for j0 in range(0, n, STREAM_CHUNK):
            j1 = min(n, j0 + STREAM_CHUNK)
            w0, w1, w2, w3 = w[k, j0:j1], w[k + 1, j0:j1], w[k + 2, j0:j1], w[k + 3, j0:j1]
            for i in range(0, rows - 1, 2):
                a0, a1, a2, a3 = x[i, k], x[i, k + 1], x[i, k + 2], x[i, k + 3]
                b0, b1, b2, b3 = x[i + 1, k], x[i + 1, k + 1], x[i + 1, k + 2], x[i + 1, k + 3]
                acc_a = acc[i, j0:j1]
                acc_b = acc[i + 1, j0:j1]
                for j in range(j1 - j0):
                    v0, v1, v2, v3 = w0[j], w1[j], w2[j], w3[j]
                    acc_a[j] += (a0 * v0 + a1 * v1) + (a2 * v2 + a3 * v3)
                    acc_b[j] += (b0 * v0 + b1 * v1) + (b2 * v2 + b3 * v3)
            if rows % 2:
                i = rows - 1
                a0, a1, a2, a3 = x[i, k], x[i, k + 1], x[i, k + 2], x[i, k + 3]
                acc_a = acc[i, j0:j1]
                for j in range(j1 - j0):
                    acc_a[j] += (a0 * w0[j] + a1 * w1[j]) + (a2 * w2[j] + a3 * w3[j])
        k += 4
    while k < k1:
        for i in range(rows):
            a = x[i, k]
            for j in range(n):
                acc[i, j] += a * w[k, j]
        k += 1


@jit(fastmath=FAST)
def dot_row(a, row):
    """a . row for float32 a [K] and a float32 or int8 row [K] (int8 widened to float32 in registers)."""
    total = np.float32(0.0)
    for k in range(a.size):
        total += a[k] * np.float32(row[k])
    return total


@jit(fastmath=FAST)
def dot_2rows(a, row0, row1):
    """(a . row0, a . row1) for float32 a, row0, row1 [K]: one load of a serves both rows."""
    total0 = np.float32(0.0)
    total1 = np.float32(0.0)
    for k in range(a.size):
        total0 += a[k] * row0[k]
        total1 += a[k] * row1[k]
    return total0, total1
