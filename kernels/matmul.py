"""Matrix products of linear layers: ``x @ w + b`` with w [K, N] and ``x @ w.T`` with w [N, K].

The kernel is chosen by the number of rows M of x:

* ``linear``, M <= SMALL_M (decode, batched decode, short prompts): memory-bound at small M. Each thread
  streams its own contiguous slab of rows of w exactly once, applying every weight it loads to all M rows
  of x (``tiles.stream_rows``); a second pass sums the per-thread partials and applies bias, accumulate, GELU.
* ``linear``, M > SMALL_M (prefill, scoring): compute-bound. Our GEMM (``gemm.broadcast_gemm``): each task
  packs a 64-column panel of w into 16-column strips that 6-row register tiles of x stream past, with the
  bias, accumulate and GELU applied while the panel's outputs are in L2. Close to OpenBLAS's speed on these
  shapes and with no second pass, it is as fast over a whole prefill, and does not share the cores with
  another thread pool, so it is the default; ``gemm="blas"`` takes np.matmul plus that pass.
* ``linear_nt``: rows of w are already K-contiguous. M = 1 takes one dot product per row of w
  (``_gemv_nt``, four rows at a time from the four quarters of each thread's slab); larger M a GEMM (BLAS or
  ours, see ``gemm_kernel``; ours, ``tiles.panel_gemm``, reads w in place when K fits one k-block).

Rows are independent up to SMALL_M rows: at a fixed thread count, out[i] is bit-identical whether x[i] is
computed alone or among up to SMALL_M rows, in any position. ``stream_rows`` sums each output in one order
for any M; ``_gemv_nt`` and the nt GEMM's tiles compute every dot product with ``tiles.lane_dots``, k-block
by k-block, in the same order. Products of more than SMALL_M rows on our GEMMs are row-independent among
themselves, and ``linear``'s at any thread count (see gemm.py); BLAS's order is its own.

All products accumulate in float32. The decode kernels run at the memory's bandwidth, like np.matmul. For
``linear_nt`` of many rows (the LM head over every position), OpenBLAS's GEMM is faster than ours, so it takes
those products when our kernels run on every core. Two thread pools then take turns on the same cores, which
only pays because ``tinygpt/__init__.py`` shortens how long each pool's idle threads spin; prefill, whose LM
head takes one row, never calls BLAS. ``benchmarks/matmul.py`` prints our GEMMs and np.matmul side by side,
and its docstring records the measurements behind these choices.
"""

import numpy as np
from numba import prange

from .activations import gelu_in_place
from .checks import check_gemm
from .gemm import broadcast_gemm, pack_strips
from .jit import jit, jit_step
from .threads import apply_num_threads, get_num_threads, max_threads
from .tiles import FAST as _FAST
from .tiles import KC as _KC
from .tiles import NC as _NC
from .tiles import dot_row_lanes, dot_row_streams, panel_gemm, panel_product, split_k, stream_rows

SMALL_M = 48  # up to here streaming w beats the GEMM, which must first transpose-pack it (the measured crossover)


# --- small M: stream the weights once ---------------------------------------------------------------------


@jit()  # no fastmath: the adds stay in the written order, whichever columns a call covers
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


# --- large M: the blocked GEMM of tiles.py ------------------------------------------------------------


@jit_step(fastmath=_FAST)
def _pack_rows(w, k0, k1, j0, width, panel):
    """panel[c, k - k0] = w[j0 + c, k]: a k-block of rows of w [N, K]."""
    for c in range(width):
        for k in range(k0, k1):
            panel[c, k - k0] = w[j0 + c, k]


_linear_gemm = broadcast_gemm(pack_strips)  # out = [out +] x @ w + b, then GELU if asked, for w [K, N]
_gemm_nt = panel_gemm(_pack_rows)  # out = x @ w.T for w [N, K] deeper than one k-block


@jit(parallel=True, fastmath=_FAST)
def _gemm_nt_in_place(x_block, depth, w, out):
    """out = x @ w.T for w [N, K] with K <= KC, x_block the one split_k block of x: one panel of rows of w
    per task, read in place (its rows are already K-contiguous, and one k-block needs no copy to stay in L2)."""
    n = w.shape[0]
    for p in prange((n + _NC - 1) // _NC):
        j0 = p * _NC
        width = min(_NC, n - j0)
        out[:, j0 : j0 + width] = 0.0
        panel_product(x_block, depth, w, j0, out, j0, width)


@jit()
def _dots_by_blocks(x, w, j, stride, depth, count):
    """The ``count`` (1 or 4) dot products x[0] . w[j + s * stride] for s < count, each summed k-block by
    k-block (KC wide) into a total that starts at 0: the order in which the GEMM's tiles add their k-blocks
    into out, with each block's dot in the lanes' order (``tiles.lane_dots``)."""
    t0 = t1 = t2 = t3 = np.float32(0.0)
    for k0 in range(0, depth, _KC):
        kc = min(_KC, depth - k0)
        if count == 4:
            s0, s1, s2, s3 = dot_row_streams(x, (0,), w, (j, j + stride, j + 2 * stride, j + 3 * stride), k0, kc)
            t0, t1, t2, t3 = t0 + s0, t1 + s1, t2 + s2, t3 + s3
        else:
            t0 = t0 + dot_row_lanes(x, (0,), w, (j,), k0, kc)[0]
    return t0, t1, t2, t3


@jit(parallel=True)
def _gemv_nt(x, w, out, slabs):
    """out[0] = w @ x[0] for w [N, K]: one dot product per row of w, each summed in the same order as the
    GEMM's tiles sum it (so a row of x gets the same numbers alone as among others). Each thread takes one
    contiguous slab of rows of w and reads its four quarters side by side: several sequential streams per
    thread read faster than one."""
    n, depth = w.shape
    per_slab = (n + slabs - 1) // slabs
    for t in prange(slabs):
        j0 = min(n, t * per_slab)
        j1 = min(n, j0 + per_slab)
        quarter = (j1 - j0) // 4
        for j in range(j0, j0 + quarter):
            t0, t1, t2, t3 = _dots_by_blocks(x, w, j, quarter, depth, 4)
            out[0, j], out[0, j + quarter], out[0, j + 2 * quarter], out[0, j + 3 * quarter] = t0, t1, t2, t3
        for j in range(j0 + 4 * quarter, j1):
            out[0, j] = _dots_by_blocks(x, w, j, 0, depth, 1)[0]


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


# --- the kernels -----------------------------------------------------------------------------------------


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
    out=None allocates. ``gemm`` picks the kernel for M > SMALL_M: "auto" and "numba" our GEMM, "blas"
    np.matmul. Returns out. Rows are independent for M <= SMALL_M: out[i] is bit-identical to the result for x[i:i+1] alone (same
    thread count and options).

    Checks none of this: a caller passing arrays it did not build calls ``checks.linear`` first."""
    slabs = apply_num_threads()
    rows, n = x.shape[0], w.shape[1]
    if out is None:
        out = np.empty((rows, n), np.float32)
    if out.size == 0:
        return out
    if rows <= SMALL_M:
        _linear_small_m(x, w, b, out, accumulate, gelu, slabs)
    elif gemm != "blas":
        _linear_gemm(x, w, b, out, accumulate, gelu)
    else:
        product = np.matmul(x, w) if accumulate else np.matmul(x, w, out=out)
        _add_bias(product, b, out, accumulate, gelu)
    return out


def linear_nt(x: np.ndarray, w: np.ndarray, out: np.ndarray | None = None, *, gemm: str = "auto") -> np.ndarray:
    """Product with a row-major [N, K] weight (e.g. a tied embedding matrix used as the LM head).

    x [M, K], w [N, K]: float32, C-contiguous (w may be a np.memmap view). out [M, N] float32 =
    ``x @ w.T``; None allocates. ``gemm`` picks the kernel for M > SMALL_M (see :func:`gemm_kernel`).
    Returns out. Rows are independent for M <= SMALL_M: out[i] is bit-identical to the result for x[i:i+1]
    alone (same thread count).

    Checks none of this: a caller passing arrays it did not build calls ``checks.linear_nt`` first."""
    slabs = apply_num_threads()
    rows, depth = x.shape
    if out is None:
        out = np.empty((rows, w.shape[0]), np.float32)
    if out.size == 0:
        return out
    if rows == 1:
        _gemv_nt(x, w, out, slabs)
    elif rows <= SMALL_M or gemm_kernel(gemm) == "numba":
        x_blocks = split_k(x)
        if x_blocks.shape[0] == 1:
            _gemm_nt_in_place(x_blocks[0], depth, w, out)
        else:
            _gemm_nt(x_blocks, depth, w, None, out, False, False)
    else:
        np.matmul(x, w.T, out=out)
    return out


def gemm_kernel(choice: str = "auto") -> str:
    """Which GEMM computes ``linear_nt``'s products of more than SMALL_M rows: "numba" (our blocked kernel) or
    "blas" (np.matmul, i.e. NumPy's BLAS). "auto" takes BLAS when our kernels run on every available core, which
    is BLAS's own default; with fewer threads it takes ours, so that a thread limit set with
    ``set_num_threads`` holds for whole forward passes (NumPy's BLAS pool cannot be resized at run time)."""
    check_gemm(choice)
    if choice == "auto":
        return "blas" if get_num_threads() == max_threads() else "numba"
    return choice

