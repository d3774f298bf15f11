"""int8 weight quantization: weights stored as int8 with one float32 scale per output; activations stay float32
between kernels (decode products round them to int16 inside the kernel, see M <= INT16_ROWS below).

Decode reads every weight once per token, so its speed is the weight bytes over memory bandwidth; int8
weights are a quarter of float32's bytes. ``quantize_rows`` makes the int8 weights (symmetric, per output
channel) of a weight laid out ``[outputs, inputs]``, ``quantize_columns`` those of a weight laid out
``[inputs, outputs]`` (returned as ``[outputs, inputs]``); ``linear_nt_int8`` computes
``x @ (q * scale).T + b`` with ``matmul.linear``'s options (accumulate, GELU). No kernel makes a float32
copy of a weight.

Every int8 weight is stored with its outputs as rows, including GPT-2's Conv1D layers, whose files hold
``[inputs, outputs]``: ``quantize_columns`` transposes them while quantizing, in cache-sized tiles (a
float32 transposed copy made first would cost more than the quantizing). Decode then takes one dot product
per output, each thread reading its slab of q as WEIGHT_STREAMS sequential streams side by side, with the
scale, bias and residual add applied as each result is made and GELU over the slab, in one parallel pass:
no second pass to add up partial sums, as streaming ``[inputs, outputs]`` rows would need.

* M = 1 (decode): x is rounded to int16 steps of max|x| / 32767 (``intdot.int16_row``), then one exact
  integer dot product per row of q (``intdot.dot_weight_streams``: vpmaddwd on AVX2, 16 weights per
  instruction), ``(sum_k x_int[k] q[j, k]) * step * scale[j] + b[j]``. Widening each weight to float32
  instead leaves these products compute-bound; the rounding moves x by at most half a step, 1/65534 of its
  largest element, where the weights' own rounding is 1/254 of theirs (tests/test_model.py bounds what it
  does to the logits).
* 1 < M <= INT16_ROWS = SMALL_M (batched decode, prompt chunks beside it): the same integer products, each pair of
  rows of q read once for X_ROWS_PER_PASS rows of x at a time (``intdot.dot_x_rows_weight_pairs``); every row
  of x has its own step.
* M > INT16_ROWS (prompts, scoring): ``gemm.int8_gemm``, a GEMM of the same integers: x rounded per row as
  above, register tiles of vpmaddwd over packed int16 pairs of weights, the exact sums scaled by the same
  formula. So a row of x gets bit-identical outputs from every path, for any number of rows.

Measured against the float32 kernels on distilgpt2's shapes by ``benchmarks/quantized_matmul.py``, whose
docstring records the measurements behind these choices.
"""

import math

import numpy as np
from numba import prange

from .activations import gelu_in_place
from .intdot import (
    WEIGHT_STREAMS,
    X_ROWS_PER_PASS,
    dot_one_row,
    dot_weight_streams,
    dot_x_rows,
    dot_x_rows_weight_pairs,
    int16_row,
)
from .gemm import int8_gemm
from .jit import jit
from .matmul import SMALL_M
from .threads import apply_num_threads
from .tiles import NC as _NC
from .tiles import dot_row

# Products of up to INT16_ROWS rows of x (decode, batched decode, chunks of prompts beside them) take the integer
# dot products; more rows (prompts) the integer GEMM. Both give the same numbers, so this is a speed choice:
# SMALL_M, where the float32 kernels switch too.
INT16_ROWS = SMALL_M
_QMAX = 127  # symmetric range [-127, 127]: -128 is never produced, so -q never overflows


# --- quantization -----------------------------------------------------------------------------------------
# Compiled without fastmath: the peak search must keep NaN (a NaN weight has to be reported, not skipped).


@jit()
def _raise_peak(peak, value):
    """max(peak, |value|), where a NaN in either sticks (so a bad weight is never hidden)."""
    a = abs(value)
    return a if (a > peak or math.isnan(a)) else peak


@jit(parallel=True)
def _row_peaks(w):
    """max |w[i, :]| for every row of w [N, K]."""
    n, depth = w.shape
    peaks = np.zeros(n, np.float32)
    for i in prange(n):
        for k in range(depth):
            peaks[i] = _raise_peak(peaks[i], w[i, k])
    return peaks


@jit()
def _to_int8(value, scale):
    """round(value / scale) (half to even) clipped to [-127, 127]; the clip only catches a quotient that
    rounding pushed just past 127."""
    return np.int8(min(max(np.rint(value / scale), -_QMAX), _QMAX))


@jit(parallel=True)
def _quantize_by_row(w, scale, q):
    """q[i, k] = round(w[i, k] / scale[i]) for w [N, K]."""
    n, depth = w.shape
    for i in prange(n):
        for k in range(depth):
            q[i, k] = _to_int8(w[i, k], scale[i])


_PEAK_SLABS = 16  # column peaks: slabs of rows scanned in parallel, each keeping its own row of peaks
_TILE = 64  # quantize_columns: 64 x 64 tiles (16 KB of float32 read, a 4 KB int8 buffer written out)


@jit(parallel=True)
def _column_peaks(w):
    """max |w[:, j]| for every column of w [K, N]: each slab of rows finds its own peaks (reading rows in
    memory order), then the slabs' peaks are combined."""
    depth, n = w.shape
    slab = (depth + _PEAK_SLABS - 1) // _PEAK_SLABS
    slab_peaks = np.zeros((_PEAK_SLABS, n), np.float32)
    for t in prange(_PEAK_SLABS):
        peaks = slab_peaks[t]
        for k in range(t * slab, min(depth, (t + 1) * slab)):
            row = w[k]
            for j in range(n):
                peaks[j] = _raise_peak(peaks[j], row[j])
    peaks = slab_peaks[0]
    for t in range(1, _PEAK_SLABS):
        for j in range(n):
            peaks[j] = _raise_peak(peaks[j], slab_peaks[t, j])
    return peaks.copy()


@jit(parallel=True)
def _quantize_by_column(w, scale, q):
    """q[j, k] = round(w[k, j] / scale[j]) for w [K, N] and q [N, K], a 64 x 64 tile at a time: quantized
    along rows of w (unit stride: the divisions vectorise), then written transposed from a 4 KB buffer."""
    depth, n = w.shape
    for p in prange((n + _TILE - 1) // _TILE):
        j0 = p * _TILE
        width = min(n, j0 + _TILE) - j0
        scales = scale[j0 : j0 + width]
        tile = np.empty((_TILE, _TILE), np.int8)
        for k0 in range(0, depth, _TILE):
            height = min(depth, k0 + _TILE) - k0
            for r in range(height):
                row = w[k0 + r, j0 : j0 + width]
                out = tile[r]
                for c in range(width):
                    out[c] = _to_int8(row[c], scales[c])
            for c in range(width):
                for r in range(height):
                    q[j0 + c, k0 + r] = tile[r, c]


def _scales_from_peaks(peaks: np.ndarray, axis_name: str) -> np.ndarray:
    """scale = peak / 127, with 1 for an all-zero output; a non-finite peak means a NaN/inf weight."""
    bad = np.flatnonzero(~np.isfinite(peaks))
    if bad.size:
        raise ValueError(f"w has a NaN or infinite value in {axis_name} {bad[0]} (cannot be quantized)")
    scale = peaks / np.float32(_QMAX)
    scale[scale == 0] = 1.0
    return scale


def quantize_rows(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 quantization of a row-major [N, K] weight (e.g. the tied embedding used as the LM
    head), one scale per row, i.e. per output of ``x @ w.T``.

    w: float32 [N, K], C-contiguous. Returns q int8 [N, K] and scale float32 [N] with
    ``scale[i] = max|w[i, :]| / 127`` (1 for an all-zero row) and ``q = round(w / scale[:, None])`` clipped
    to [-127, 127]. A NaN or infinite weight raises ValueError naming its row.

    Checks no argument: a caller passing an array it did not build calls ``checks.quantize_rows`` first."""
    apply_num_threads()
    scale = _scales_from_peaks(_row_peaks(w), "row")
    q = np.empty(w.shape, np.int8)
    _quantize_by_row(w, scale, q)
    return q, scale


def quantize_columns(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 quantization of a [K, N] weight whose outputs are its columns (GPT-2's Conv1D layout,
    used as ``x @ w``), one scale per column, returned with outputs as rows, ready for ``linear_nt_int8``:
    the same q and scale as ``quantize_rows(w.T)``, without making a float32 transposed copy.

    w: float32 [K, N], C-contiguous. Returns q int8 [N, K] and scale float32 [N] with
    ``scale[j] = max|w[:, j]| / 127`` (1 for an all-zero column) and ``q[j, k] = round(w[k, j] / scale[j])``
    clipped to [-127, 127]. A NaN or infinite weight raises ValueError naming its column.

    Checks no argument: a caller passing an array it did not build calls ``checks.quantize_columns`` first."""
    apply_num_threads()
    scale = _scales_from_peaks(_column_peaks(w), "column")
    q = np.empty(w.shape[::-1], np.int8)
    _quantize_by_column(w, scale, q)
    return q, scale


# --- x @ (q * scale[:, None]).T + b -----------------------------------------------------------------------


# The int8 product kernels below and their inlined steps: only "contract". Their output arithmetic
# (_output_value, _finish_output) is inlined into each, where "reassoc" would let LLVM regroup it differently
# per kernel: a row's value would then depend on how many rows share the call. (Their sums are exact
# integers; nothing here needs reassociating.)
_ROW_EXACT = {"contract"}


# _output_value and _finish_output are inlined (Numba IR) into the decode kernels' loops, which call them once
# per output: as calls, they made those products slower (benchmarks/quantized_matmul.py's docstring).
@jit(fastmath=_ROW_EXACT, inline="always")
def _output_value(total, step, x, i, q, scale, j):
    """x[i] . q[j] * scale[j], from ``total``, the exact integer dot product of x[i]'s int16 steps with q[j]:
    scaled by step * scale[j] and rounded once. A row of x holding NaN or infinity (step NaN) cannot be
    rounded to integers: it takes a float32 dot product, so the NaN/inf reaches the output as in float32."""
    if math.isnan(step):
        return dot_row(x[i], q[j]) * scale[j]
    return _scaled(total, step, scale[j])


@jit(fastmath=_ROW_EXACT, inline="always")
def _scaled(total, step, scale):
    """The output of an exact integer dot product ``total`` of a row of x's int16 steps (of size ``step``) with
    a row of q (of scale ``scale``), rounded once: the formula of every int8 path (gemm.int8_gemm's too)."""
    return np.float32(np.float64(total) * (step * scale))


@jit(fastmath=_ROW_EXACT, inline="always")
def _finish_output(value, b, out, i, j, accumulate):
    """out[i, j] = [out[i, j] +] value + b[j] (no bias when b is None)."""
    if b is not None:
        value += b[j]
    out[i, j] = value + out[i, j] if accumulate else value


@jit(parallel=True, fastmath=_ROW_EXACT)
def _gemv_nt_int8(x, q, scale, b, out, accumulate, gelu, slabs):
    """out = [out +] x @ (q * scale[:, None]).T + b, GELU if asked, for one row of x and q [N, K]: one dot
    product per row of q. Each of the ``slabs`` tasks (one per thread) takes a contiguous slab of rows, cut
    into WEIGHT_STREAMS runs of consecutive rows read side by side (``dot_weight_streams``), then GELU over
    its slab's outputs. x is first rounded to int16 steps (``int16_row``)."""
    n = q.shape[0]
    x_int = np.empty((1, x.shape[1]), np.int16)
    step = int16_row(x[0], x_int[0])
    finite = not math.isnan(step)
    per_slab = (n + slabs - 1) // slabs
    for t in prange(slabs):
        j0 = min(n, t * per_slab)
        j1 = min(n, j0 + per_slab)
        per_stream = (j1 - j0) // WEIGHT_STREAMS  # rows per stream; the remainder rows come last, one at a time
        totals = np.empty(WEIGHT_STREAMS)
        for j in range(j0, j0 + per_stream):
            if finite:
                dot_weight_streams(x_int, 0, q, j, per_stream, totals)
            for w in range(WEIGHT_STREAMS):
                row = j + w * per_stream
                _finish_output(_output_value(totals[w], step, x, 0, q, scale, row), b, out, 0, row, accumulate)
        for row in range(j0 + WEIGHT_STREAMS * per_stream, j1):
            if finite:
                dot_one_row(x_int, 0, q, row, 0, totals)
            _finish_output(_output_value(totals[0], step, x, 0, q, scale, row), b, out, 0, row, accumulate)
        if gelu:
            gelu_in_place(out[0, j0:j1])


@jit(parallel=True, fastmath=_ROW_EXACT)
def _few_rows_int8(x, q, scale, b, out, accumulate, gelu):
    """``_gemv_nt_int8`` for a few rows of x (batched decode): every row rounded to int16 steps, then each
    pair of rows of q, read once, dotted exactly with X_ROWS_PER_PASS rows of x at a time
    (``dot_x_rows_weight_pairs``; a slab's odd last row of q alone, ``dot_x_rows``). A slab's integer sums
    are kept until all are made, then scaled row by row (a loop over outputs that vectorises)."""
    rows, depth = x.shape
    n = q.shape[0]
    padded_rows = (rows + X_ROWS_PER_PASS - 1) // X_ROWS_PER_PASS * X_ROWS_PER_PASS
    x_int = np.zeros((padded_rows, depth), np.int16)  # zero rows pad the last pass
    steps = np.empty(rows)
    for i in range(rows):
        steps[i] = int16_row(x[i], x_int[i])
    for p in prange((n + _NC - 1) // _NC):
        j0 = p * _NC
        j1 = min(n, j0 + _NC)
        totals = np.empty(2 * X_ROWS_PER_PASS)  # totals[w * X_ROWS_PER_PASS + r]: x row r, q row j + w
        sums = np.empty((padded_rows, j1 - j0))  # sums[i, j - j0] = x_int[i] . q[j], exact
        j = j0
        while j < j1:
            pair = j + 1 < j1
            for first in range(0, rows, X_ROWS_PER_PASS):
                if pair:
                    dot_x_rows_weight_pairs(x_int, first, q, j, 1, totals)
                else:
                    dot_x_rows(x_int, first, q, j, 0, totals)
                for w in range(2 if pair else 1):
                    for r in range(X_ROWS_PER_PASS):
                        sums[first + r, j - j0 + w] = totals[w * X_ROWS_PER_PASS + r]
            j += 2 if pair else 1
        for i in range(rows):
            step = steps[i]
            if math.isnan(step):  # the float32 products of _output_value, in a loop of their own
                for j in range(j0, j1):
                    _finish_output(_output_value(0.0, step, x, i, q, scale, j), b, out, i, j, accumulate)
            else:  # a loop without that branch, which vectorises
                for j in range(j0, j1):
                    _finish_output(_scaled(sums[i, j - j0], step, scale[j]), b, out, i, j, accumulate)
            if gelu:
                gelu_in_place(out[i, j0:j1])


@jit(parallel=True)
def _int16_rows(x):
    """Every row of x [M, K] rounded to int16 steps (``int16_row``), into [M, K rounded up to even] with a zero
    last column when K is odd (the GEMM multiplies pairs of elements); returns those and the steps [M]."""
    rows, depth = x.shape
    x_int = np.empty((rows, depth + depth % 2), np.int16)
    steps = np.empty(rows)
    for i in prange(rows):
        steps[i] = int16_row(x[i], x_int[i, :depth])
        x_int[i, depth:] = 0
    return x_int, steps


# --- the kernel -------------------------------------------------------------------------------------------


def linear_nt_int8(
    x: np.ndarray,
    q: np.ndarray,
    scale: np.ndarray,
    b: np.ndarray | None = None,
    out: np.ndarray | None = None,
    *,
    accumulate: bool = False,
    gelu: bool = False,
) -> np.ndarray:
    """Affine map with an int8 weight laid out [outputs, inputs], from ``quantize_rows``.

    x [M, K] float32, q [N, K] int8, scale [N] float32, b [N] float32 or None (no bias), all C-contiguous.
    out [M, N] float32: ``out = x @ (q * scale[:, None]).T + b``; ``gelu=True``: GELU of that;
    ``accumulate=True``: ``out += ...`` (out must then be given). gelu and accumulate together are an
    error. out=None allocates. Returns out. Each row of x is first rounded to int16 steps of max|row| / 32767
    (the product is then exact up to that rounding and the final float32 one). Rows are independent for any
    M: out[i] is bit-identical to the result for x[i:i+1] alone (same options), at any thread count.

    Checks none of this: a caller passing arrays it did not build calls ``checks.linear_nt_int8`` first."""
    slabs = apply_num_threads()
    rows = x.shape[0]
    if out is None:
        out = np.empty((rows, q.shape[0]), np.float32)
    if out.size == 0:
        return out
    if rows == 1:
        _gemv_nt_int8(x, q, scale, b, out, accumulate, gelu, slabs)
    elif rows <= INT16_ROWS:
        _few_rows_int8(x, q, scale, b, out, accumulate, gelu)
    else:
        x_int, steps = _int16_rows(x)
        int8_gemm(x_int, steps, q, scale, b, out, accumulate, gelu)
        for i in np.flatnonzero(np.isnan(steps)):  # rows holding NaN or infinity: in float32, as decode does
            _gemv_nt_int8(x[i : i + 1], q, scale, b, out[i : i + 1], accumulate, gelu, slabs)
    return out
