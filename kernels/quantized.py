"""int8 weight-only quantization: weights stored as int8 with one float32 scale per output, activations float32.

Decode reads every weight once per token, so its speed is the weight bytes over memory bandwidth; int8
weights are a quarter of float32's bytes. ``quantize`` / ``quantize_rows`` make the int8 weights (symmetric,
per output channel); ``linear_int8`` / ``linear_nt_int8`` have the contracts of ``matmul.linear`` /
``matmul.linear_nt`` with the weight given as ``(q, scale)``. No kernel makes a float32 copy of a weight:

* ``linear_int8``, M <= SMALL_M (decode, batched decode): each thread streams its own slab of rows of q
  once, widening int8 -> float32 in registers (vpmovsxbd + vcvtdq2ps on AVX2) and applying each weight to
  every row of x; the k-sums are scaled once per output, after the slabs' partial sums are added:
  ``(sum_k x[k] q[k, j]) * scale[j]``.
* ``linear_int8``, M > SMALL_M (prefill): the float32 GEMM of ``matmul`` (its 3x4 micro-kernel and x
  blocking). Its packing step, which copies a 64-column panel of the weight into a K-contiguous buffer
  anyway, here dequantizes the int8 panel (``q * scale``) into it; the panel (192 KB) serves every row of x.
* ``linear_nt_int8``: M = 1 takes one dot product per row of q, widening in registers; larger M use the
  GEMM on dequantized panels of rows of q.

Measured against the float32 kernels on distilgpt2's shapes by ``benchmarks/quantized_matmul.py``.
"""

import math

import numpy as np
from numba import njit, prange

from .activations import gelu_f32
from .tiles import FAST as _FAST, KC as _KC, NC as _NC, panel_product, split_k, stream_rows
from .threads import apply_num_threads, check_f32, check_shape, get_num_threads, output_array

# Up to this many rows of x the int8 weights are streamed once, widened in registers. Higher than
# matmul.SMALL_M (16): dequantizing while transposing makes the GEMM's packing ~1.4x dearer per weight
# than float32's, and on the test machine the streaming kernel stays ahead of the GEMM up to M ~ 64.
SMALL_M = 48

_QMAX = 127  # symmetric range [-127, 127]: -128 is never produced, so -q never overflows
_PEAK_CHUNK = 256  # columns per task when finding column peaks of a [K, N] weight


# --- quantization -----------------------------------------------------------------------------------------
# Compiled without fastmath: the peak search must keep NaN (a NaN weight has to be reported, not skipped).


@njit(cache=True)
def _raise_peak(peak, value):
    """max(peak, |value|), where a NaN in either sticks (so a bad weight is never hidden)."""
    a = abs(value)
    return a if (a > peak or math.isnan(a)) else peak


@njit(cache=True, parallel=True)
def _column_peaks(w):
    """max |w[:, j]| for every column of w [K, N]; a task owns a strip of columns and walks all rows."""
    depth, n = w.shape
    peaks = np.zeros(n, np.float32)
    for c in prange((n + _PEAK_CHUNK - 1) // _PEAK_CHUNK):
        for k in range(depth):
            for j in range(c * _PEAK_CHUNK, min(n, (c + 1) * _PEAK_CHUNK)):
                peaks[j] = _raise_peak(peaks[j], w[k, j])
    return peaks


@njit(cache=True, parallel=True)
def _row_peaks(w):
    """max |w[i, :]| for every row of w [N, K]."""
    n, depth = w.shape
    peaks = np.zeros(n, np.float32)
    for i in prange(n):
        for k in range(depth):
            peaks[i] = _raise_peak(peaks[i], w[i, k])
    return peaks


@njit(cache=True)
def _to_int8(value, scale):
    """round(value / scale) (half to even) clipped to [-127, 127]; the clip only catches a quotient that
    rounding pushed just past 127."""
    return np.int8(min(max(np.rint(value / scale), -_QMAX), _QMAX))


@njit(cache=True, parallel=True)
def _quantize_by_column(w, scale, q):
    """q[k, j] = round(w[k, j] / scale[j]) for w [K, N]."""
    depth, n = w.shape
    for k in prange(depth):
        for j in range(n):
            q[k, j] = _to_int8(w[k, j], scale[j])


@njit(cache=True, parallel=True)
def _quantize_by_row(w, scale, q):
    """q[i, k] = round(w[i, k] / scale[i]) for w [N, K]."""
    n, depth = w.shape
    for i in prange(n):
        for k in range(depth):
            q[i, k] = _to_int8(w[i, k], scale[i])


def _scales_from_peaks(peaks: np.ndarray, axis_name: str) -> np.ndarray:
    """scale = peak / 127, with 1 for an all-zero output; a non-finite peak means a NaN/inf weight."""
    bad = np.flatnonzero(~np.isfinite(peaks))
    if bad.size:
        raise ValueError(f"w has a NaN or infinite value in {axis_name} {bad[0]} (cannot be quantized)")
    scale = peaks / np.float32(_QMAX)
    scale[scale == 0] = 1.0
    return scale


def quantize(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 quantization of a [K, N] weight (GPT-2 Conv1D [in, out] layout), one scale per column.

    w: float32 [K, N], C-contiguous (may be a np.memmap). Returns q int8 [K, N] and scale float32 [N] with
    ``scale[j] = max|w[:, j]| / 127`` (1 for an all-zero column) and ``q = round(w / scale)`` clipped to
    [-127, 127], so ``q * scale`` is within ``scale / 2`` of w. Extra memory is q itself plus O(N)."""
    check_f32("w", w, 2)
    apply_num_threads()
    scale = _scales_from_peaks(_column_peaks(w), "column")
    q = np.empty(w.shape, np.int8)
    _quantize_by_column(w, scale, q)
    return q, scale


def quantize_rows(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 quantization of a row-major [N, K] weight (e.g. the tied embedding used as the LM
    head), one scale per row, i.e. per output of ``x @ w.T``.

    w: float32 [N, K], C-contiguous. Returns q int8 [N, K] and scale float32 [N] with
    ``scale[i] = max|w[i, :]| / 127`` (1 for an all-zero row) and ``q = round(w / scale[:, None])`` clipped
    to [-127, 127]."""
    check_f32("w", w, 2)
    apply_num_threads()
    scale = _scales_from_peaks(_row_peaks(w), "row")
    q = np.empty(w.shape, np.int8)
    _quantize_by_row(w, scale, q)
    return q, scale


# --- small M: stream the int8 weights once ----------------------------------------------------------------
# From DRAM, one thread reading int8 rows one after another (a single sequential stream) got 1.2-2x the
# bandwidth of reading 2-8 rows side by side on the test machine (Zen 3), although the latter loads and
# stores the sums less often (and wins when the weight is in cache). So one row of x reads q row by row;
# two or more rows of x are compute-bound and read 4 rows of q side by side, each widened weight serving
# every row of x.


@njit(cache=True, fastmath=_FAST)
def _gemv_row_by_row(x_row, q, k0, k1, acc):
    """acc = x_row[k0:k1] @ q[k0:k1, :] (unscaled; acc [N] is overwritten), reading q row by row."""
    acc[:] = 0.0
    for k in range(k0, k1):
        a = x_row[k]
        q_row = q[k]
        for j in range(acc.size):
            acc[j] += a * np.float32(q_row[j])


@njit(cache=True, parallel=True, fastmath=_FAST)
def _linear_small_m_int8(x, q, scale, b, out, accumulate, gelu, slabs):
    """out = [out +] (x @ q) * scale + b, then GELU if asked; q is cut into ``slabs`` contiguous slabs of
    rows, one per thread."""
    rows, depth = x.shape
    n = q.shape[1]
    slab = (depth + slabs - 1) // slabs
    partials = np.empty((slabs, rows, n), np.float32)
    for t in prange(slabs):
        k0 = min(depth, t * slab)
        k1 = min(depth, (t + 1) * slab)
        if rows == 1:
            _gemv_row_by_row(x[0], q, k0, k1, partials[t, 0])
        else:
            stream_rows(x, q, k0, k1, partials[t])
    columns_per_task = 256
    for c in prange((n + columns_per_task - 1) // columns_per_task):
        j0 = c * columns_per_task
        j1 = min(n, j0 + columns_per_task)
        for i in range(rows):
            for j in range(j0, j1):
                total = partials[0, i, j]
                for t in range(1, slabs):
                    total += partials[t, i, j]
                total = total * scale[j] + b[j]
                if accumulate:
                    total += out[i, j]
                out[i, j] = gelu_f32(total) if gelu else total


# --- large M: float32 GEMM on panels dequantized while packing --------------------------------------------


@njit(cache=True, fastmath=_FAST)
def _pack_dequantized_columns(q, scale, k0, k1, j0, width, panel):
    """panel[c, k - k0] = q[k, j0 + c] * scale[j0 + c]: a dequantized, K-contiguous copy of a column panel
    of q [K, N]. Strips of 8 columns keep the 8 written panel rows in L1."""
    for c0 in range(0, width, 8):
        strip = min(8, width - c0)
        for k in range(k0, k1):
            row = q[k, j0 + c0 : j0 + c0 + strip]
            for c in range(strip):
                panel[c0 + c, k - k0] = np.float32(row[c]) * scale[j0 + c0 + c]


@njit(cache=True, fastmath=_FAST)
def _pack_dequantized_rows(q, scale, k0, k1, j0, width, panel):
    """panel[c, k - k0] = q[j0 + c, k] * scale[j0 + c]: a dequantized k-block of rows of q [N, K]."""
    for c in range(width):
        s = scale[j0 + c]
        src = q[j0 + c, k0:k1]
        dst = panel[c]
        for k in range(k1 - k0):  # zero-based, unit-stride: vectorises (vpmovsxbd, vcvtdq2ps, vmulps)
            dst[k] = np.float32(src[k]) * s


@njit(cache=True, parallel=True, fastmath=_FAST)
def _linear_gemm_int8(x_blocks, depth, q, scale, b, out, accumulate, gelu):
    """out = [out +] x @ (q * scale) + b, then GELU if asked; x given as split_k blocks; one column panel
    per task."""
    rows = out.shape[0]
    n = q.shape[1]
    for p in prange((n + _NC - 1) // _NC):
        j0 = p * _NC
        width = min(_NC, n - j0)
        for i in range(rows):
            for c in range(width):
                out[i, j0 + c] = b[j0 + c] + out[i, j0 + c] if accumulate else b[j0 + c]
        panel = np.empty((_NC, _KC), np.float32)
        for kb in range(x_blocks.shape[0]):
            k0 = kb * _KC
            k1 = min(depth, k0 + _KC)
            _pack_dequantized_columns(q, scale, k0, k1, j0, width, panel)
            panel_product(x_blocks[kb], k1 - k0, panel, 0, out, j0, width)
        if gelu:
            for i in range(rows):
                for c in range(width):
                    out[i, j0 + c] = gelu_f32(out[i, j0 + c])


# --- x @ (q * scale[:, None]).T ---------------------------------------------------------------------------


@njit(cache=True, fastmath=_FAST)
def _dot_int8(a, q_row):
    """a . q_row for float32 a [K] and int8 q_row [K] (widened in registers)."""
    total = np.float32(0.0)
    for k in range(a.size):
        total += a[k] * np.float32(q_row[k])
    return total


@njit(cache=True, parallel=True, fastmath=_FAST)
def _gemv_nt_int8(x_row, q, scale, out_row):
    """out_row = (q @ x_row) * scale for q [N, K]: one dot product per row of q, rows in memory order (a
    single sequential stream per thread: see the note on the small-M kernels)."""
    n = q.shape[0]
    for p in prange((n + _NC - 1) // _NC):
        for j in range(p * _NC, min(n, (p + 1) * _NC)):
            out_row[j] = _dot_int8(x_row, q[j]) * scale[j]


@njit(cache=True, parallel=True, fastmath=_FAST)
def _gemm_nt_int8(x_blocks, depth, q, scale, out):
    """out = x @ (q * scale[:, None]).T for q [N, K], x given as split_k blocks; one panel of rows of q
    per task, dequantized a k-block at a time."""
    n = q.shape[0]
    for p in prange((n + _NC - 1) // _NC):
        j0 = p * _NC
        width = min(_NC, n - j0)
        out[:, j0 : j0 + width] = 0.0
        panel = np.empty((_NC, _KC), np.float32)
        for kb in range(x_blocks.shape[0]):
            k0 = kb * _KC
            k1 = min(depth, k0 + _KC)
            _pack_dequantized_rows(q, scale, k0, k1, j0, width, panel)
            panel_product(x_blocks[kb], k1 - k0, panel, 0, out, j0, width)


# --- public wrappers --------------------------------------------------------------------------------------


def _check_int8(name: str, a: object) -> np.ndarray:
    """Return ``a`` if it is a 2-D C-contiguous int8 ndarray, else raise ValueError."""
    if not isinstance(a, np.ndarray):
        raise ValueError(f"{name} must be a numpy array, got {type(a).__name__}")
    if a.dtype != np.int8:
        raise ValueError(f"{name} must be int8 (from quantize / quantize_rows), got {a.dtype}")
    if a.ndim != 2:
        raise ValueError(f"{name} must have 2 dimensions, got shape {a.shape}")
    if not a.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous (use np.ascontiguousarray)")
    return a


def linear_int8(
    x: np.ndarray,
    q: np.ndarray,
    scale: np.ndarray,
    b: np.ndarray,
    out: np.ndarray | None = None,
    *,
    accumulate: bool = False,
    gelu: bool = False,
) -> np.ndarray:
    """Affine map with an int8 [K, N] weight from ``quantize``: ``matmul.linear`` with w = q * scale.

    x [M, K] float32, q [K, N] int8, scale [N] float32, b [N] float32, all C-contiguous. out [M, N] float32:
    ``out = x @ (q * scale) + b``; ``gelu=True``: GELU of that; ``accumulate=True``: ``out += ...`` (out
    must then be given). gelu and accumulate together are an error. out=None allocates. Returns out."""
    check_f32("x", x, 2)
    _check_int8("q", q)
    rows, depth = x.shape
    if q.shape[0] != depth:
        raise ValueError(f"q must have shape ({depth}, N) to match x {x.shape}, got {q.shape}")
    n = q.shape[1]
    check_f32("scale", scale, 1)
    check_shape("scale", scale, (n,))
    check_f32("b", b, 1)
    check_shape("b", b, (n,))
    if gelu and accumulate:
        raise ValueError("gelu and accumulate cannot be combined")
    if accumulate and out is None:
        raise ValueError("accumulate=True needs out (the array to add into)")
    out = output_array(out, (rows, n), {"x": x, "q": q, "scale": scale, "b": b})
    if out.size == 0:
        return out
    apply_num_threads()
    if rows <= SMALL_M:
        _linear_small_m_int8(x, q, scale, b, out, accumulate, gelu, get_num_threads())
    else:
        _linear_gemm_int8(split_k(x), depth, q, scale, b, out, accumulate, gelu)
    return out


def linear_nt_int8(x: np.ndarray, q: np.ndarray, scale: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Product with an int8 row-major [N, K] weight from ``quantize_rows`` (e.g. the tied LM head).

    x [M, K] float32, q [N, K] int8, scale [N] float32, all C-contiguous. out [M, N] float32 =
    ``x @ (q * scale[:, None]).T``; None allocates. Returns out."""
    check_f32("x", x, 2)
    _check_int8("q", q)
    rows, depth = x.shape
    if q.shape[1] != depth:
        raise ValueError(f"q must have shape (N, {depth}) to match x {x.shape}, got {q.shape}")
    check_f32("scale", scale, 1)
    check_shape("scale", scale, (q.shape[0],))
    out = output_array(out, (rows, q.shape[0]), {"x": x, "q": q, "scale": scale})
    if out.size == 0:
        return out
    apply_num_threads()
    if rows == 1:
        _gemv_nt_int8(x[0], q, scale, out[0])
    else:
        _gemm_nt_int8(split_k(x), depth, q, scale, out)
    return out
