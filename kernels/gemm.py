"""The GEMM of products with many rows (prompts, scoring): out [M, N] = [out +] x [M, K] @ W + b, GELU if asked.

``broadcast_gemm(pack)`` builds it around a packing step that reads W as it is stored (float32 [K, N] in
matmul.py, int8 [N, K] with scales in quantized.py). The work is cut three ways:

* Register tile (``broadcast_tile``): TILE_ROWS x TILE_COLS = 6 rows of x by 16 outputs, in 12 vector
  accumulators of 8 floats. For each k it loads the 16 weights of the tile's outputs (two vectors), broadcasts
  each of its 6 rows' x[i, k] and does 12 fused multiply-adds, an outer product: 15 of AVX2's 16 vector
  registers, and no horizontal sums at the end.
* Packing: W is copied into strips of TILE_COLS outputs, k-major (strip[k * 16 + c] = W[k, j + c]), so the
  tile reads its weights as one stream; x is read in place, its 6 rows side by side.
* Blocking: one task per panel of PANEL_COLS outputs (the threads share the panels). A task packs its whole
  panel (every k-block) first, then walks x BLOCK_ROWS rows at a time: that block of outputs (96 x 64 floats)
  stays in L2 while each k-block adds into it, and a strip of a k-block (KC x 16 floats, 16 KB) stays in L1
  while every tile of the row block uses it. Keeping the outputs in L2 across k-blocks is what brought this
  kernel close to OpenBLAS (``benchmarks/matmul.py``'s docstring has the measurements).

Rows are independent, and so are thread counts: each output is one chain of fused multiply-adds
(``llvm.fmuladd``, one rounding where the CPU has FMA), starting from its bias (plus out's old value when
accumulating) and taking k = 0, 1, ..., K - 1 in order, whichever tile, row block, panel or thread computes it.
So out[i] is bit-identical whatever other rows share the product, in any position, at any thread count.
"""

import numpy as np
from llvmlite import ir
from numba import prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from .activations import gelu_in_place
from .jit import jit, jit_step
from .llvm_loop import counted_loop

TILE_ROWS, TILE_COLS = 6, 16  # 12 accumulators + 2 weight vectors + 1 broadcast: 15 of AVX2's 16 ymm registers
KC = 256  # k-block: a strip of KC x 16 weights (16 KB) stays in L1 while a row block's tiles stream past it
BLOCK_ROWS = 96  # a multiple of TILE_ROWS: the 96 x PANEL_COLS outputs (24 KB) stay in L2 across k-blocks
PANEL_COLS = 64  # a multiple of TILE_COLS: outputs per task; a 768-output product makes 12 tasks to share

_LANES = 8  # floats per vector: one AVX2 ymm register (two SSE registers on CPUs without AVX)
_VECTORS = TILE_COLS // _LANES
_F32 = ir.FloatType()
_VECTOR = ir.VectorType(_F32, _LANES)
_I64 = ir.IntType(64)


def _i64(value):
    return ir.Constant(_I64, value)


@intrinsic
def broadcast_tile(typingctx, a, a_rows, k0, kc, strip, c, c_rows, c0):
    """c[c_rows[r], c0:c0+16] = fmuladd chains of a[a_rows[r], k0 + k] * strip[k * 16 : k * 16 + 16] over
    k = 0..kc-1, starting from c's values, for the 6 rows r. a and c are float32 C-contiguous 2-D arrays, strip
    a float32 contiguous 1-D array of at least kc * 16, a_rows and c_rows tuples of 6 row indices; every index
    must be valid (not checked)."""

    def is_matrix(t):
        return isinstance(t, types.Array) and t.dtype == types.float32 and t.ndim == 2 and t.layout == "C"

    def is_rows(t):
        return isinstance(t, types.UniTuple) and t.count == TILE_ROWS and isinstance(t.dtype, types.Integer)

    if not (is_matrix(a) and is_matrix(c) and is_rows(a_rows) and is_rows(c_rows)
            and isinstance(strip, types.Array) and strip.dtype == types.float32 and strip.ndim == 1
            and strip.layout == "C" and all(isinstance(t, types.Integer) for t in (k0, kc, c0))):
        return None
    return types.void(a, a_rows, k0, kc, strip, c, c_rows, c0), _broadcast_tile_codegen


def _opaque(builder, pointer):
    """pointer, through an empty inline-asm statement: LLVM then cannot see that the tile's rows of x lie a
    fixed stride apart, and keeps one base register per row instead of rebuilding the addresses from one
    base and the stride inside the k loop (which spilled registers there)."""
    barrier = ir.InlineAsm(ir.FunctionType(pointer.type, [pointer.type]), "", "=r,0")
    return builder.call(barrier, [pointer])


def _row_starts(context, builder, array_type, array_value, rows, rows_type, column):
    """Pointers to array[rows[r], column] for each of the tile's rows (a 2-D C-contiguous array)."""
    array = context.make_array(array_type)(context, builder, array_value)
    starts = []
    for r in range(TILE_ROWS):
        index = context.cast(builder, builder.extract_value(rows, r), rows_type.dtype, types.int64)
        starts.append(cgutils.get_item_pointer(context, builder, array_type, array, [index, column]))
    return starts


def _broadcast_tile_codegen(context, builder, signature, args):
    a_type, a_rows_type, k0_type, kc_type, strip_type, c_type, c_rows_type, c0_type = signature.args
    a_value, a_rows, k0, kc, strip_value, c_value, c_rows, c0 = args
    k0 = context.cast(builder, k0, k0_type, types.int64)
    kc = context.cast(builder, kc, kc_type, types.int64)
    c0 = context.cast(builder, c0, c0_type, types.int64)
    strip_array = context.make_array(strip_type)(context, builder, strip_value)
    a_starts = [_opaque(builder, start) for start in _row_starts(context, builder, a_type, a_value, a_rows, a_rows_type, k0)]
    c_starts = _row_starts(context, builder, c_type, c_value, c_rows, c_rows_type, c0)
    weights = cgutils.get_item_pointer(context, builder, strip_type, strip_array, [_i64(0)])
    fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_VECTOR, [_VECTOR] * 3),
                                         "llvm.fmuladd.v%df32" % _LANES)

    def vector_at(start, offset):
        return builder.bitcast(builder.gep(start, [offset]), _VECTOR.as_pointer())

    tile = [(r, v) for r in range(TILE_ROWS) for v in range(_VECTORS)]
    initial = {(r, v): builder.load(vector_at(c_starts[r], _i64(v * _LANES)), align=4) for r, v in tile}
    undefined = ir.Constant(_VECTOR, ir.Undefined)
    splat = ir.Constant(ir.VectorType(ir.IntType(32), _LANES), [0] * _LANES)

    def step(k, acc):
        row_of_strip = builder.mul(k, _i64(TILE_COLS))
        w = [builder.load(vector_at(weights, builder.add(row_of_strip, _i64(v * _LANES))), align=4)
             for v in range(_VECTORS)]
        updated = {}
        for r in range(TILE_ROWS):
            x = builder.load(builder.gep(a_starts[r], [k]), align=4)
            broadcast = builder.shuffle_vector(builder.insert_element(undefined, x, ir.Constant(ir.IntType(32), 0)),
                                               undefined, splat)
            for v in range(_VECTORS):
                updated[r, v] = builder.call(fma, [broadcast, w[v], acc[r, v]])
        return updated

    final = counted_loop(builder, _i64(0), kc, _i64(1), initial, step, "tile_k")
    for r, v in tile:
        builder.store(final[r, v], vector_at(c_starts[r], _i64(v * _LANES)), align=4)
    return context.get_dummy_value()


@jit()
def _edge_tile(x, i, i_end, k0, kc, strip, out, j, cols, edge):
    """The tile of out's rows i..i+5 and columns j..j+cols-1 where the product's edge cuts it (fewer than 6 rows
    before i_end, or cols < 16): computed on a copy in ``edge`` [6, 16], its missing rows of x repeating the
    last real one; its real outputs follow the same chains as in a whole tile."""
    last = i_end - 1
    count = min(TILE_ROWS, i_end - i)
    for r in range(count):
        for c in range(cols):
            edge[r, c] = out[i + r, j + c]
    rows = (i, min(i + 1, last), min(i + 2, last), min(i + 3, last), min(i + 4, last), min(i + 5, last))
    broadcast_tile(x, rows, k0, kc, strip, edge, (0, 1, 2, 3, 4, 5), 0)
    for r in range(count):
        for c in range(cols):
            out[i + r, j + c] = edge[r, c]


@jit()
def _start_row(out_row, b, j0, accumulate):
    """out_row (a row's slice of a panel, starting at column j0) = [out_row +] b's slice: the start of every
    output's chain (0 without a bias). Element loops: a slice assigned from another array is copied through a
    temporary first (Numba cannot rule out overlap), an allocation per row."""
    if b is None:
        if not accumulate:
            for c in range(out_row.size):
                out_row[c] = 0.0
    elif accumulate:
        for c in range(out_row.size):
            out_row[c] += b[j0 + c]
    else:
        for c in range(out_row.size):
            out_row[c] = b[j0 + c]


def broadcast_gemm(pack):
    """A GEMM kernel ``gemm(x, weights, b, out, accumulate, gelu)``: out [M, N] = [out +] x [M, K] @ W + b (no
    bias when b is None), then GELU if asked; x float32 C-contiguous, K > 0.

    ``pack(weights, k0, k1, j0, width, panel)`` writes panel[s, (k - k0) * 16 + c] = W[k, j0 + 16 s + c] for
    k0 <= k < k1 and 16 s + c < width, and 0 for the columns past width, reading the weights as they are
    stored: a ``jit_step`` function (see ``jit.jit_step``). panel is [ceil(width / 16), KC * 16]."""

    @jit(parallel=True)
    def gemm(x, weights, b, out, accumulate, gelu):
        rows, depth = x.shape
        n = out.shape[1]
        k_blocks = (depth + KC - 1) // KC
        for p in prange((n + PANEL_COLS - 1) // PANEL_COLS):
            j0 = p * PANEL_COLS
            width = min(PANEL_COLS, n - j0)
            strips = (width + TILE_COLS - 1) // TILE_COLS
            panel = np.empty((k_blocks, strips, KC * TILE_COLS), np.float32)
            for kb in range(k_blocks):
                pack(weights, kb * KC, min(depth, kb * KC + KC), j0, width, panel[kb])
            edge = np.empty((TILE_ROWS, TILE_COLS), np.float32)
            for i0 in range(0, rows, BLOCK_ROWS):
                i1 = min(rows, i0 + BLOCK_ROWS)
                for i in range(i0, i1):
                    _start_row(out[i, j0 : j0 + width], b, j0, accumulate)
                for kb in range(k_blocks):
                    k0 = kb * KC
                    kc = min(KC, depth - k0)
                    for s in range(strips):
                        j = j0 + s * TILE_COLS
                        cols = min(TILE_COLS, j0 + width - j)
                        strip = panel[kb, s]
                        whole_rows = i0 + (i1 - i0) // TILE_ROWS * TILE_ROWS if cols == TILE_COLS else i0
                        for i in range(i0, whole_rows, TILE_ROWS):
                            rows_i = (i, i + 1, i + 2, i + 3, i + 4, i + 5)
                            broadcast_tile(x, rows_i, k0, kc, strip, out, rows_i, j)
                        for i in range(whole_rows, i1, TILE_ROWS):
                            _edge_tile(x, i, i1, k0, kc, strip, out, j, cols, edge)
                if gelu:  # while the block's outputs are still in L2
                    for i in range(i0, i1):
                        gelu_in_place(out[i, j0 : j0 + width])

    return gemm


@jit_step(fastmath=False)
def pack_strips(w, k0, k1, j0, width, panel):
    """broadcast_gemm's packing step for float32 w [K, N], read in place: runs of 16 weights copied whole."""
    for s in range(panel.shape[0]):
        j = j0 + s * TILE_COLS
        cols = min(TILE_COLS, j0 + width - j)
        strip = panel[s]
        for k in range(k1 - k0):  # element loops: see _start_row
            source = w[k0 + k]
            for c in range(cols):
                strip[k * TILE_COLS + c] = source[j + c]
            for c in range(cols, TILE_COLS):
                strip[k * TILE_COLS + c] = 0.0


# --- int8 weights: exact integer products ----------------------------------------------------------------------
# The same blocking on integers: x rounded to int16 steps per row (intdot.int16_row), the weights sign-extended
# to int16 pairs, and each tile multiplies a pair of x's elements by a pair of weights and adds both products
# into one int32 element (vpmaddwd on AVX2, vpdpwssd with AVX-512 VNNI: twice the multiply-adds of an FMA per
# instruction). An int32 element stays exact for INT_KC elements of k: |x q| <= 32767 * 127, so 512 of them sum
# below 2**31 (tests/kernels/test_gemm.py checks the extreme case). Each k-block's exact sums are added into
# float64, exact again (below 2**53 for any K up to 2**22), so every output is the exact integer dot product,
# scaled and rounded once: the same value decode's integer kernels give the row (quantized.py), whatever the
# number of rows.

INT_KC = 512  # k elements per block: 256 pair multiply-adds into each int32 element (258 would still be exact)
_I16, _I32 = ir.IntType(16), ir.IntType(32)
_PAIRS = ir.VectorType(_I16, 2 * _LANES)  # 8 pairs of int16 (one ymm)
_PRODUCTS = ir.VectorType(_I32, 2 * _LANES)
_SUMS = ir.VectorType(_I32, _LANES)
_F64 = ir.DoubleType()
_HALF = ir.VectorType(_F64, _LANES // 2)


@intrinsic
def int16_tile(typingctx, x_int, x_rows, p0, pairs, strip, sums, sum_rows, c0):
    """sums[sum_rows[r], c0:c0+16] += the exact integer products of x_int[x_rows[r], 2 p0 : 2 (p0 + pairs)] with
    the strip's pairs of weights (strip[(p * 16 + c) * 2 + h] = W[2 p + h, c]), for the 6 rows r. x_int int16 and
    sums float64 are C-contiguous 2-D arrays, strip int16 1-D of at least pairs * 32; pairs <= INT_KC / 2;
    every index valid (not checked)."""

    def is_matrix(t, dtype):
        return isinstance(t, types.Array) and t.dtype == dtype and t.ndim == 2 and t.layout == "C"

    def is_rows(t):
        return isinstance(t, types.UniTuple) and t.count == TILE_ROWS and isinstance(t.dtype, types.Integer)

    if not (is_matrix(x_int, types.int16) and is_matrix(sums, types.float64) and is_rows(x_rows)
            and is_rows(sum_rows) and isinstance(strip, types.Array) and strip.dtype == types.int16
            and strip.ndim == 1 and strip.layout == "C" and all(isinstance(t, types.Integer) for t in (p0, pairs, c0))):
        return None
    return types.void(x_int, x_rows, p0, pairs, strip, sums, sum_rows, c0), _int16_tile_codegen


def _int16_tile_codegen(context, builder, signature, args):
    x_type, x_rows_type, p0_type, pairs_type, strip_type, sums_type, sum_rows_type, c0_type = signature.args
    x_value, x_rows, p0, pairs, strip_value, sums_value, sum_rows, c0 = args
    p0 = context.cast(builder, p0, p0_type, types.int64)
    pairs = context.cast(builder, pairs, pairs_type, types.int64)
    c0 = context.cast(builder, c0, c0_type, types.int64)
    strip_array = context.make_array(strip_type)(context, builder, strip_value)
    # each row of x as int32 words: one word holds a pair of int16 elements
    x_starts = [builder.bitcast(start, _I32.as_pointer())
                for start in _row_starts(context, builder, x_type, x_value, x_rows, x_rows_type, builder.mul(p0, _i64(2)))]
    sum_starts = _row_starts(context, builder, sums_type, sums_value, sum_rows, sum_rows_type, c0)
    weights = cgutils.get_item_pointer(context, builder, strip_type, strip_array, [_i64(0)])

    def vector_at(start, offset, vector_type):
        return builder.bitcast(builder.gep(start, [offset]), vector_type.as_pointer())

    tile = [(r, v) for r in range(TILE_ROWS) for v in range(_VECTORS)]
    undefined = ir.Constant(_SUMS, ir.Undefined)
    splat = ir.Constant(ir.VectorType(_I32, _LANES), [0] * _LANES)
    even = ir.Constant(ir.VectorType(_I32, _LANES), list(range(0, 2 * _LANES, 2)))
    odd = ir.Constant(ir.VectorType(_I32, _LANES), list(range(1, 2 * _LANES, 2)))

    def step(p, acc):
        pair_row = builder.mul(p, _i64(2 * TILE_COLS))
        w = [builder.sext(builder.load(vector_at(weights, builder.add(pair_row, _i64(v * 2 * _LANES)), _PAIRS),
                                       align=2), _PRODUCTS) for v in range(_VECTORS)]
        updated = {}
        for r in range(TILE_ROWS):
            word = builder.load(builder.gep(x_starts[r], [p]), align=2)
            words = builder.shuffle_vector(builder.insert_element(undefined, word, ir.Constant(_I32, 0)), undefined,
                                           splat)
            x_pairs = builder.sext(builder.bitcast(words, _PAIRS), _PRODUCTS)
            for v in range(_VECTORS):
                # sign-extend, multiply, add the even and odd products: the form LLVM turns into vpmaddwd
                # (vpdpwssd with the accumulating add where the CPU has VNNI)
                products = builder.mul(x_pairs, w[v])
                pair_sums = builder.add(builder.shuffle_vector(products, products, even),
                                        builder.shuffle_vector(products, products, odd))
                updated[r, v] = builder.add(acc[r, v], pair_sums)
        return updated

    final = counted_loop(builder, _i64(0), pairs, _i64(1), dict.fromkeys(tile, ir.Constant(_SUMS, None)), step,
                         "int_tile_k")
    low = ir.Constant(ir.VectorType(_I32, _LANES // 2), list(range(_LANES // 2)))
    high = ir.Constant(ir.VectorType(_I32, _LANES // 2), list(range(_LANES // 2, _LANES)))
    for (r, v), exact in final.items():
        for h, half in enumerate((low, high)):
            place = vector_at(sum_starts[r], _i64(v * _LANES + h * (_LANES // 2)), _HALF)
            part = builder.sitofp(builder.shuffle_vector(exact, exact, half), _HALF)
            builder.store(builder.fadd(builder.load(place, align=8), part), place, align=8)
    return context.get_dummy_value()


@jit()
def _pack_int16_strips(q, k0, k1, j0, width, panel):
    """panel[s, ((k - k0) // 2 * 16 + c) * 2 + (k - k0) % 2] = q[j0 + 16 s + c, k] for q [N, K] int8, k0 <= k < k1:
    pairs of weights along k for each of a strip's 16 outputs, zero in the outputs past width and in the
    partner of the last k when k1 - k0 is odd. Past the block's last pair nothing is written: no tile reads
    there."""
    depth = k1 - k0
    used = (depth + 1) // 2 * TILE_COLS * 2  # elements of a strip the block's pairs fill
    for s in range(panel.shape[0]):
        j = j0 + s * TILE_COLS
        cols = min(TILE_COLS, j0 + width - j)
        strip = panel[s]
        if cols < TILE_COLS or depth % 2:
            strip[:used] = 0
        for c in range(cols):
            source = q[j + c, k0:k1]
            for k in range(depth):
                strip[((k >> 1) * TILE_COLS + c) * 2 + (k & 1)] = source[k]


@jit(parallel=True)
def int8_gemm(x_int, steps, q, scale, b, out, accumulate, gelu):
    """out [M, N] = [out +] (x_int @ q.T) * steps[:, None] * scale + b (no bias when b is None), GELU if asked:
    x_int [M, K'] int16 (K' = K rounded up to even, the last column 0 if K is odd), steps [M] float64, q [N, K]
    int8, scale [N] float32. Each output is float32(float64(exact sum) * (step * scale[j])), then + b[j], then
    + out when accumulating: decode's formula. Rows whose step is NaN (x held NaN or infinity) are left as
    they are, for the caller to compute in float32."""
    rows, n = out.shape
    depth = q.shape[1]
    k_blocks = (depth + INT_KC - 1) // INT_KC
    for p in prange((n + PANEL_COLS - 1) // PANEL_COLS):
        j0 = p * PANEL_COLS
        width = min(PANEL_COLS, n - j0)
        strips = (width + TILE_COLS - 1) // TILE_COLS
        panel = np.empty((k_blocks, strips, INT_KC * TILE_COLS), np.int16)
        for kb in range(k_blocks):
            _pack_int16_strips(q, kb * INT_KC, min(depth, kb * INT_KC + INT_KC), j0, width, panel[kb])
        sums = np.empty((BLOCK_ROWS, strips * TILE_COLS), np.float64)
        for i0 in range(0, rows, BLOCK_ROWS):
            i1 = min(rows, i0 + BLOCK_ROWS)
            last = i1 - 1
            sums[:] = 0.0
            for kb in range(k_blocks):
                p0 = kb * INT_KC // 2
                pairs = (min(depth, kb * INT_KC + INT_KC) - kb * INT_KC + 1) // 2
                for s in range(strips):
                    for i in range(i0, i1, TILE_ROWS):
                        r = i - i0
                        x_rows = (i, min(i + 1, last), min(i + 2, last), min(i + 3, last), min(i + 4, last),
                                  min(i + 5, last))
                        int16_tile(x_int, x_rows, p0, pairs, panel[kb, s], sums,
                                   (r, r + 1, r + 2, r + 3, r + 4, r + 5), s * TILE_COLS)
            for i in range(i0, i1):
                step = steps[i]
                if np.isnan(step):
                    continue
                row = out[i]
                for c in range(width):
                    j = j0 + c
                    value = np.float32(sums[i - i0, c] * (step * scale[j]))
                    if b is not None:
                        value += b[j]
                    row[j] = value + row[j] if accumulate else value
                if gelu:
                    gelu_in_place(row[j0 : j0 + width])
