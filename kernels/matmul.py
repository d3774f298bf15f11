"""Matrix products of linear layers: ``x @ w + b`` with w [K, N] and ``x @ w.T`` with w [N, K].

The kernel is chosen by the number of rows M of x:

* ``linear``, M <= SMALL_M (decode, batched decode, short prompts): memory-bound at small M. Each thread
  streams its own contiguous slab of rows of w exactly once, applying every weight it loads to all M rows
  of x (``tiles.stream_rows``); a second pass sums the per-thread partials and applies bias, accumulate, GELU.
* ``linear``, M > SMALL_M (prefill): compute-bound. By default (see ``gemm_kernel``) np.matmul, i.e.
  NumPy's BLAS, then one pass for bias/accumulate/GELU. Our own GEMM stays available (``gemm="numba"``)
  and is used when the thread count is lowered: a blocked GEMM on a 3x4 register tile of dot products
  (``tiles.dot_3x4``: LLVM vectorises its k loop into 12 vector accumulators, ymm registers on AVX2). Each
  task transposes a 64-column panel of w into a K-contiguous buffer that stays in L2 while the rows of
  x stream past it, then applies bias/accumulate/GELU to its panel.
* ``linear_nt``: rows of w are already K-contiguous. M = 1 takes one dot product per row of w
  (``_gemv_nt``, two rows at a time from the two halves of each thread's slab); larger M the GEMM (BLAS
  or ours, as above; ours reads w in place).

All products accumulate in float32. On the 2-core test machine the decode kernels run at DRAM bandwidth,
like np.matmul. For M = 512 our GEMM reaches ~0.7-0.8x OpenBLAS's speed (126 vs 179 GFLOP/s, 2 threads),
so the engine hands large products to BLAS. Two thread pools then take turns on the same cores, which only
pays because ``tinygpt/__init__.py`` shortens how long each pool's idle threads spin (GOMP_SPINCOUNT,
OPENBLAS_THREAD_TIMEOUT): with spinning threads in the way, a 512-token prefill was ~1.3x *slower* with
BLAS than all-Numba; with them shortened, ~1.1-1.4x faster.
``benchmarks/matmul.py`` prints both GEMMs side by side.
"""

import numpy as np
from numba import prange

from .activations import gelu_in_place
from .jit import jit
from .threads import (
    apply_num_threads,
    check_f32,
    check_shape,
    get_num_threads,
    max_threads,
    output_array,
)
from .tiles import FAST as _FAST
from .tiles import KC as _KC
from .tiles import NC as _NC
from .tiles import dot_2rows, dot_row, panel_product, split_k, stream_rows

SMALL_M = 48  # up to here streaming w beats the GEMM, which must first transpose-pack it (measured crossover)


# --- small M: stream the weights once ---------------------------------------------------------------------


@jit(fastmath=_FAST)
def _finish_columns(partials, b, out, j0, j1, accumulate, gelu):
    """out[:, j0:j1] = [out +] b + the slabs' partial sums, then GELU if asked: whole-row passes over 1-D
    slices, so each loop vectorises (a loop over slabs inside the loop over columns did not)."""
    for i in range(out.shape[0]):
        row = out[i, j0:j1]
        if not accumulate:
            row[:] = 0.0
        row += b[j0:j1]
        for t in range(partials.shape[0]):
            row += partials[t, i, j0:j1]
        if gelu:
            gelu_in_place(row)


_SERIAL_FINISH = 4096  # outputs up to which the finishing pass runs on one thread: cheaper than a launch


@jit(parallel=True, fastmath=_FAST)
def _linear_small_m(x, w, b, out, accumulate, gelu, slabs):
    """out = [out +] x @ w + b, then GELU if asked; w is cut into ``slabs`` contiguous slabs of rows,
    one per thread (the caller passes the thread count: reading it here would defeat caching)."""
    rows, depth = x.shape
    n = w.shape[1]
    slab = (depth + slabs - 1) // slabs
    partials = np.empty((slabs, rows, n), np.float32)
    for t in prange(slabs):
        stream_rows(x, w, min(depth, t * slab), min(depth, (t + 1) * slab), partials[t])
    if rows * n <= _SERIAL_FINISH:  # decode: a few thousand additions, less than waking the threads again
        _finish_columns(partials, b, out, 0, n, accumulate, gelu)
        return
    columns_per_task = 256
    for c in prange((n + columns_per_task - 1) // columns_per_task):
        j0 = c * columns_per_task
        _finish_columns(partials, b, out, j0, min(n, j0 + columns_per_task), accumulate, gelu)


# --- large M: blocked GEMM on the 3x4 tile of tiles.py ----------------------------------------------


@jit(fastmath=_FAST)
def _pack_transposed(w, k0, k1, j0, width, panel):
    """panel[c, k - k0] = w[k, j0 + c]: a K-contiguous copy of a column panel of w [K, N].
    Strips of 8 columns keep the 8 written panel rows in L1 (3x faster than whole-panel rows)."""
    for c0 in range(0, width, 8):
        strip = min(8, width - c0)
        for k in range(k0, k1):
            row = w[k, j0 + c0 : j0 + c0 + strip]
            for c in range(strip):
                panel[c0 + c, k - k0] = row[c]


@jit(fastmath=_FAST)
def _pack_rows(w, k0, k1, j0, width, panel):
    """panel[c, k - k0] = w[j0 + c, k]: a k-block of rows of w [N, K]."""
    for c in range(width):
        for k in range(k0, k1):
            panel[c, k - k0] = w[j0 + c, k]


@jit(parallel=True, fastmath=_FAST)
def _linear_gemm(x_blocks, depth, w, b, out, accumulate, gelu):
    """out = [out +] x @ w + b, then GELU if asked; x given as split_k blocks; one column panel per task."""
    rows = out.shape[0]
    n = w.shape[1]
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
            _pack_transposed(w, k0, k1, j0, width, panel)
            panel_product(x_blocks[kb], k1 - k0, panel, 0, out, j0, width)
        if gelu:
            for i in range(rows):
                gelu_in_place(out[i, j0 : j0 + width])


@jit(parallel=True, fastmath=_FAST)
def _gemv_nt(x_row, w, out_row, slabs):
    """out_row = w @ x_row for w [N, K]: one dot product per row of w. Each thread takes one contiguous slab
    of rows and reads its two halves side by side, two sequential streams: the LM head read 10-14 % faster
    than as one stream per thread (rows in memory order), and than with the two halves' rows taken in turn,
    one dot product at a time."""
    n = w.shape[0]
    per_slab = (n + slabs - 1) // slabs
    for t in prange(slabs):
        j0 = min(n, t * per_slab)
        j1 = min(n, j0 + per_slab)
        half = (j1 - j0) // 2
        for j in range(j0, j0 + half):
            out_row[j], out_row[j + half] = dot_2rows(x_row, w[j], w[j + half])
        if (j1 - j0) % 2:
            out_row[j1 - 1] = dot_row(x_row, w[j1 - 1])


@jit(parallel=True, fastmath=_FAST)
def _gemm_nt(x_blocks, depth, w, out):
    """out = x @ w.T for w [N, K], x given as split_k blocks; one panel of rows of w per task.
    A single k-block reads w in place; deeper products copy each k-block of the panel first."""
    n = w.shape[0]
    for p in prange((n + _NC - 1) // _NC):
        j0 = p * _NC
        width = min(_NC, n - j0)
        out[:, j0 : j0 + width] = 0.0
        if x_blocks.shape[0] == 1:
            panel_product(x_blocks[0], depth, w, j0, out, j0, width)
            continue
        panel = np.empty((_NC, _KC), np.float32)
        for kb in range(x_blocks.shape[0]):
            k0 = kb * _KC
            k1 = min(depth, k0 + _KC)
            _pack_rows(w, k0, k1, j0, width, panel)
            panel_product(x_blocks[kb], k1 - k0, panel, 0, out, j0, width)


@jit(parallel=True, fastmath=_FAST)
def _add_bias(product, b, out, accumulate, gelu):
    """out = [out +] product + b, then GELU if asked (product may be out itself): the epilogue of a BLAS GEMM."""
    rows, n = out.shape
    for i in prange(rows):
        for j in range(n):
            total = product[i, j] + b[j]
            out[i, j] = total + out[i, j] if accumulate else total
        if gelu:
            gelu_in_place(out[i])


# --- public wrappers --------------------------------------------------------------------------------------


def linear(
    x: np.ndarray,
    w: np.ndarray,
    b: np.ndarray,
    out: np.ndarray | None = None,
    *,
    accumulate: bool = False,
    gelu: bool = False,
    gemm: str = "auto",
) -> np.ndarray:
    """Affine map with a [K, N] weight (GPT-2 Conv1D layout).

    x [M, K], w [K, N], b [N]: float32, C-contiguous (w may be a np.memmap view). out [M, N] float32:
    ``out = x @ w + b``; ``gelu=True``: ``out = gelu_new(x @ w + b)``; ``accumulate=True``:
    ``out += x @ w + b`` (out must then be given). gelu and accumulate together are an error.
    out=None allocates. ``gemm`` picks the kernel for M > SMALL_M (see :func:`gemm_kernel`). Returns out."""
    check_f32("x", x, 2)
    check_f32("w", w, 2)
    check_f32("b", b, 1)
    rows, depth = x.shape
    if w.shape[0] != depth:
        raise ValueError(f"w must have shape ({depth}, N) to match x {x.shape}, got {w.shape}")
    n = w.shape[1]
    check_shape("b", b, (n,))
    _check_gemm(gemm)
    if gelu and accumulate:
        raise ValueError("gelu and accumulate cannot be combined")
    if accumulate and out is None:
        raise ValueError("accumulate=True needs out (the array to add into)")
    out = output_array(out, (rows, n), {"x": x, "w": w, "b": b})
    apply_num_threads()
    return linear_unchecked(x, w, b, out, accumulate=accumulate, gelu=gelu, gemm=gemm)


def linear_unchecked(
    x: np.ndarray,
    w: np.ndarray,
    b: np.ndarray,
    out: np.ndarray | None = None,
    *,
    accumulate: bool = False,
    gelu: bool = False,
    gemm: str = "auto",
) -> np.ndarray:
    """:func:`linear` without its argument checks, for a caller whose arrays are valid by construction
    (tinygpt's forward pass: weights checked at load, activations it allocated itself) and which has called
    ``threads.apply_num_threads()`` in this Python thread. The checks and that call cost ~5 microseconds,
    0.2 ms of a decode step's 44 kernel calls; arrays that break linear's contract here give wrong results
    or crash."""
    rows, n = x.shape[0], w.shape[1]
    if out is None:
        out = np.empty((rows, n), np.float32)
    if out.size == 0:
        return out
    if rows <= SMALL_M:
        _linear_small_m(x, w, b, out, accumulate, gelu, get_num_threads())
    elif gemm_kernel(gemm) == "numba":
        _linear_gemm(split_k(x), x.shape[1], w, b, out, accumulate, gelu)
    else:
        product = np.matmul(x, w) if accumulate else np.matmul(x, w, out=out)
        _add_bias(product, b, out, accumulate, gelu)
    return out


def linear_nt(x: np.ndarray, w: np.ndarray, out: np.ndarray | None = None, *, gemm: str = "auto") -> np.ndarray:
    """Product with a row-major [N, K] weight (e.g. a tied embedding matrix used as the LM head).

    x [M, K], w [N, K]: float32, C-contiguous (w may be a np.memmap view). out [M, N] float32 =
    ``x @ w.T``; None allocates. ``gemm`` picks the kernel for M > SMALL_M (see :func:`gemm_kernel`).
    Returns out."""
    check_f32("x", x, 2)
    check_f32("w", w, 2)
    rows, depth = x.shape
    if w.shape[1] != depth:
        raise ValueError(f"w must have shape (N, {depth}) to match x {x.shape}, got {w.shape}")
    _check_gemm(gemm)
    out = output_array(out, (rows, w.shape[0]), {"x": x, "w": w})
    apply_num_threads()
    return linear_nt_unchecked(x, w, out, gemm=gemm)


def linear_nt_unchecked(x: np.ndarray, w: np.ndarray, out: np.ndarray | None = None, *,
                        gemm: str = "auto") -> np.ndarray:
    """:func:`linear_nt` without its argument checks (see :func:`linear_unchecked`)."""
    rows = x.shape[0]
    if out is None:
        out = np.empty((rows, w.shape[0]), np.float32)
    if out.size == 0:
        return out
    if rows == 1:
        _gemv_nt(x[0], w, out[0], get_num_threads())
    elif rows <= SMALL_M or gemm_kernel(gemm) == "numba":
        _gemm_nt(split_k(x), x.shape[1], w, out)
    else:
        np.matmul(x, w.T, out=out)
    return out


def gemm_kernel(choice: str = "auto") -> str:
    """Which GEMM computes products of more than SMALL_M rows: "numba" (our blocked kernel) or "blas"
    (np.matmul, i.e. NumPy's BLAS). "auto" takes BLAS when our kernels run on every available core, which
    is BLAS's own default; with fewer threads it takes ours, so that a thread limit set with
    ``set_num_threads`` holds for whole forward passes (NumPy's BLAS pool cannot be resized at run time)."""
    _check_gemm(choice)
    if choice == "auto":
        return "blas" if get_num_threads() == max_threads() else "numba"
    return choice


def _check_gemm(choice: object) -> None:
    """Checked on every call, whatever M: a wrong name must not pass just because this M needs no GEMM."""
    if choice not in ("auto", "numba", "blas"):
        raise ValueError(f'gemm must be "auto", "numba" or "blas", got {choice!r}')
