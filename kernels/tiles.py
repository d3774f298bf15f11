"""Building blocks shared by the matrix kernels (float32 and int8) and attention: GEMM tiles, streams, dots.

A product ``a @ b.T`` of two K-contiguous operands is computed as a grid of 3x4 tiles of dot products
(``dot_tile``): 12 dot products in vector accumulators (ymm on AVX2), each tile reading 3 rows of ``a`` and 4
rows of ``b``. ``panel_product`` walks a panel of ``b`` (its rows stay in L1/L2) over every row of ``a``;
``panel_gemm`` builds a GEMM kernel around it from a way of packing the weights into such panels
(``linear_nt``'s, for weights deeper than one k-block; ``linear``'s products of many rows use gemm.py's
broadcast tiles instead). ``split_k`` cuts x into k-blocks. ``stream_rows`` is the other regime, a few rows of x
and float32 weights: it reads each weight once, in place. ``dot_row`` is one row's dot product, float32 or int8.

Rows are independent: the products of linear layers (``panel_product`` through ``dot_tile``, ``stream_rows``,
and the one-row dots ``dot_row_lanes`` / ``dot_row_streams``) sum every output in an order written out in their
own code (``lane_dots``, ``fmuladd``), never left to fastmath reassociation, which LLVM applies per loop: so a
row of x gets bit-identical numbers alone or beside other rows. ``dot_row`` keeps fastmath: it is one loop
whatever the number of rows.
"""

import numpy as np
from llvmlite import ir
from numba import prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from .activations import gelu_in_place
from .jit import jit
from .llvm_loop import counted_loop

FAST = {"reassoc", "contract"}  # lets LLVM vectorise float reductions and fuse multiply-adds; keeps NaN/inf

MR, NR = 3, 4  # register tile: 12 vector accumulators + 3 operands fit AVX2's 16 registers
KC = 768  # k-block: 3 rows of x plus 4 rows of w (21 KB) stay in L1 during one tile
MC = 66  # row block, a multiple of MR: 66 x 768 floats of x (200 KB) stay in L2 while a panel sweeps them
NC = 64  # panel width: the packed 64 x 768 panel of w (192 KB) shares L2 with the row block
STREAM_CHUNK = 512  # stream_rows: columns per pass (8 weight rows x 512 floats = 16 KB of L1)
WEIGHT_STREAMS = 4  # stream_rows: rows of w read side by side, from 4 distant runs


# Both operands are handed to the tile as 2-D arrays whose k index starts at 0 (x split into k-blocks, w
# panels packed), so the tile indexes ``a[row, k]`` with k from range(): LLVM then sees unit-stride,
# non-negative indices and vectorises without gathers or per-element wraparound checks.


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


# Only "contract": Numba's fastmath marks every float instruction of the function, the dot_tile intrinsic's
# inlined lane sums included, and "reassoc" there let LLVM regroup them (seen compiling for plain x86-64,
# where a row's product then depended on the tile it was computed in).
@jit(fastmath={"contract"})
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
                sums = dot_tile(xa, (i, min(i + 1, last_row), min(i + 2, last_row)), bt, (c, c1, c2, c3), 0, kc)
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


@jit()
def stream_rows(x, w, k0, k1, acc):
    """acc[i, :] = x[i, k0:k1] @ w[k0:k1, :] for every row i of x (acc is overwritten).

    The rows k0..k1 of w are cut into WEIGHT_STREAMS runs of consecutive rows, and each pass takes the next
    row of every run: WEIGHT_STREAMS sequential streams through memory, each running through a whole run
    (neighbouring rows per pass would make short runs that restart the hardware prefetcher); the rows left
    over come last, one per pass. Each pass reads a 512-column chunk of its rows (8 KB, stays in L1 while
    every row of x uses it), two rows of x at a time. Every element of acc is summed in one order: a chain of
    fused multiply-adds (``fmuladd``), one per weight row, in the order above (compiled without fastmath, so
    LLVM keeps it). The pair loop and the odd row's loop write the same chain, so a row's sums depend only on
    its own row of x, not on which or how many rows share the call."""
    rows, n = acc.shape
    acc[:, :] = 0.0
    per_stream = (k1 - k0) // WEIGHT_STREAMS
    for r in range(per_stream):
        k = k0 + r
        k_1, k_2, k_3 = k + per_stream, k + 2 * per_stream, k + 3 * per_stream
        for j0 in range(0, n, STREAM_CHUNK):
            j1 = min(n, j0 + STREAM_CHUNK)
            w0, w1, w2, w3 = w[k, j0:j1], w[k_1, j0:j1], w[k_2, j0:j1], w[k_3, j0:j1]
            i = 0
            while i + 2 <= rows:  # two rows of x per pass: each weight load serves both
                a0, a1, a2, a3 = x[i, k], x[i, k_1], x[i, k_2], x[i, k_3]
                b0, b1, b2, b3 = x[i + 1, k], x[i + 1, k_1], x[i + 1, k_2], x[i + 1, k_3]
                sums_a, sums_b = acc[i, j0:j1], acc[i + 1, j0:j1]
                for j in range(j1 - j0):
                    v0, v1, v2, v3 = w0[j], w1[j], w2[j], w3[j]
                    sums_a[j] = fmuladd(a3, v3, fmuladd(a2, v2, fmuladd(a1, v1, fmuladd(a0, v0, sums_a[j]))))
                    sums_b[j] = fmuladd(b3, v3, fmuladd(b2, v2, fmuladd(b1, v1, fmuladd(b0, v0, sums_b[j]))))
                i += 2
            if i < rows:  # the last row of an odd count: the same chain of multiply-adds, alone
                a0, a1, a2, a3 = x[i, k], x[i, k_1], x[i, k_2], x[i, k_3]
                sums_a = acc[i, j0:j1]
                for j in range(j1 - j0):
                    sums_a[j] = fmuladd(a3, w3[j], fmuladd(a2, w2[j], fmuladd(a1, w1[j], fmuladd(a0, w0[j], sums_a[j]))))
    for k in range(k0 + WEIGHT_STREAMS * per_stream, k1):
        w_row = w[k]
        for i in range(rows):
            a = x[i, k]
            sums = acc[i]
            for j in range(n):
                sums[j] = fmuladd(a, w_row[j], sums[j])


@jit(fastmath=FAST)
def dot_row(a, row):
    """a . row for float32 a [K] and a float32 or int8 row [K] (int8 widened to float32 in registers)."""
    total = np.float32(0.0)
    for k in range(a.size):
        total += a[k] * np.float32(row[k])
    return total


# --- row-invariant float32 arithmetic: the order of every sum is written out, not left to LLVM ----------------
# Under fastmath "reassoc" LLVM picks a summation order per loop (vector width, interleaving, horizontal
# reduction), so two loops computing the same dot product (one row of x, or a tile of several) may round
# differently. The products below fix the order in their own code instead: a float32 result depends only on
# its own row of x and row or column of w, never on which other rows share the call.

LANES = 8  # lane_dots: lane l of a dot product sums the k = l (mod LANES) terms (one AVX2 ymm register)

_F32 = ir.FloatType()
_LANE_VECTOR = ir.VectorType(_F32, LANES)


def _fmuladd_function(builder, value_type):
    """llvm.fmuladd: a*b + c, fused into one rounding where the target has FMA (a per-target decision, the same
    in every loop, unlike ``contract``, which lets LLVM fuse or not fuse each multiply-add by context)."""
    name = "llvm.fmuladd." + ("v%df32" % LANES if value_type is _LANE_VECTOR else "f32")
    return cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(value_type, [value_type] * 3), name
    )


@intrinsic
def fmuladd(typingctx, a, b, c):
    """a * b + c for float32 values, rounded once where the target has FMA, else twice: the same in every loop
    that calls it (see _fmuladd_function). LLVM vectorises loops of it over unit-stride arrays."""
    if not (a == types.float32 and b == types.float32 and c == types.float32):
        return None

    def codegen(context, builder, signature, args):
        return builder.call(_fmuladd_function(builder, _F32), list(args))

    return types.float32(a, b, c), codegen


def lane_dots(a_rows, b_rows):
    """``dots(a, ra, b, rb, k0, kc)``: the tuple of the a_rows * b_rows float32 dot products
    a[ra[r], k0:k0+kc] . b[rb[c], k0:k0+kc] (r outer, c inner), for a and b float32 C-contiguous 2-D arrays and
    ra, rb tuples of row indices (the rows must exist: not checked). Every dot product is summed in one order,
    whichever tile it is computed in: LANES lane sums (lane l takes k = l, l + LANES, ... by fused
    multiply-adds), added as ((l0 + l4) + (l2 + l6)) + ((l1 + l5) + (l3 + l7)), then the last kc % LANES terms
    one at a time. Each LANES-wide load of a serves every row of b, and each of b every row of a."""

    @intrinsic
    def dots(typingctx, a, ra, b, rb, k0, kc):
        def is_matrix(t):
            return isinstance(t, types.Array) and t.dtype == types.float32 and t.ndim == 2 and t.layout == "C"

        def is_rows(t, count):
            return isinstance(t, types.UniTuple) and t.count == count and isinstance(t.dtype, types.Integer)

        if not (is_matrix(a) and is_matrix(b) and is_rows(ra, a_rows) and is_rows(rb, b_rows)
                and isinstance(k0, types.Integer) and isinstance(kc, types.Integer)):
            return None
        return types.UniTuple(types.float32, a_rows * b_rows)(a, ra, b, rb, k0, kc), _codegen

    def _codegen(context, builder, sig, args):
        a_type, ra_type, b_type, rb_type = sig.args[:4]
        k0 = context.cast(builder, args[4], sig.args[4], types.int64)
        kc = context.cast(builder, args[5], sig.args[5], types.int64)
        a_array = context.make_array(a_type)(context, builder, args[0])
        b_array = context.make_array(b_type)(context, builder, args[2])

        def row_starts(array_type, array, rows, rows_type, count):
            starts = []
            for r in range(count):
                index = context.cast(builder, builder.extract_value(rows, r), rows_type.dtype, types.int64)
                starts.append(cgutils.get_item_pointer(context, builder, array_type, array, [index, k0]))
            return starts

        a_starts = row_starts(a_type, a_array, args[1], ra_type, a_rows)
        b_starts = row_starts(b_type, b_array, args[3], rb_type, b_rows)
        pairs = [(r, c) for r in range(a_rows) for c in range(b_rows)]
        vector_fma = _fmuladd_function(builder, _LANE_VECTOR)
        scalar_fma = _fmuladd_function(builder, _F32)
        vector_end = builder.and_(kc, _i64(-LANES))  # kc rounded down to a multiple of LANES (kc >= 0)
        zero = ir.Constant(_LANE_VECTOR, None)

        # the lanes: acc[r, c] = fmuladd(a[r, k:k+LANES], b[c, k:k+LANES], acc[r, c]) for k = 0, LANES, ...
        def lanes_step(k, acc):
            def load_lanes(start):
                return builder.load(builder.bitcast(builder.gep(start, [k]), _LANE_VECTOR.as_pointer()), align=4)

            # each row of b loaded just before its multiply-adds: with a 3x4 tile, 12 accumulators + 3 rows of a
            # + 1 of b fill AVX2's 16 registers (all 4 rows of b loaded first spilled an accumulator every pass)
            a_lanes = [load_lanes(start) for start in a_starts]
            updated = {}
            for c, start in enumerate(b_starts):
                b_lanes = load_lanes(start)
                for r in range(a_rows):
                    updated[r, c] = builder.call(vector_fma, [a_lanes[r], b_lanes, acc[r, c]])
            return updated

        final_lanes = counted_loop(builder, _i64(0), vector_end, _i64(LANES), dict.fromkeys(pairs, zero),
                                   lanes_step, "lanes_loop")

        # the fixed reduction of each accumulator's lanes: halves added, then halves of that, then the pair
        totals = {}
        for pair in pairs:
            lanes = final_lanes[pair]
            half = LANES
            while half > 1:
                half //= 2
                low = builder.shuffle_vector(lanes, lanes, ir.Constant(ir.VectorType(ir.IntType(32), half),
                                                                       list(range(half))))
                high = builder.shuffle_vector(lanes, lanes, ir.Constant(ir.VectorType(ir.IntType(32), half),
                                                                        list(range(half, 2 * half))))
                lanes = builder.fadd(low, high)
            totals[pair] = builder.extract_element(lanes, ir.Constant(ir.IntType(32), 0))

        # the tail: the last kc % LANES terms, one fused multiply-add each, in order
        def tail_step(kt, running):
            a_terms = [builder.load(builder.gep(start, [kt])) for start in a_starts]
            b_terms = [builder.load(builder.gep(start, [kt])) for start in b_starts]
            return {(r, c): builder.call(scalar_fma, [a_terms[r], b_terms[c], running[r, c]]) for r, c in pairs}

        results = counted_loop(builder, vector_end, kc, _i64(1), totals, tail_step, "tail_loop")
        results = [results[pair] for pair in pairs]
        return context.make_tuple(builder, sig.return_type, results)

    return dots


def _i64(value):
    return ir.Constant(ir.IntType(64), value)


dot_tile = lane_dots(MR, NR)  # the GEMM's 3x4 register tile (12 lane accumulators + 3 + 1 operands: 16 ymm)
dot_row_lanes = lane_dots(1, 1)  # one dot product, in the same order as every dot of dot_tile
dot_row_streams = lane_dots(1, 4)  # one row of x . 4 rows of w read side by side (decode's LM head)


def broadcast_chains(a_rows, chunks, vectors):
    """``chains(a, ra, a0, n, mats, at, out, rows, out_cols)``: for each of the ``a_rows`` rows r (ra[r] of a,
    rows[r] of out) and ``chunks`` matrices c, the ``vectors`` x LANES lanes l out[rows[r], out_cols[c] + l] =
    fmuladd(a[ra[r], a0 + k], m[at[c] + k * width + l], ...) chained over k = 0 .. n-1 in order, starting from out's
    value, where m is mats[c] read flat (at[c] an offset in its elements: a row and column, row * width + column)
    and width its row length: axpy chains, one lane per output, no sum across lanes (attention's scores over a block
    of transposed keys, and its weighted sums of value rows). a, out and each of mats are float32 C-contiguous 2-D
    arrays, ra, rows, at and out_cols tuples of indices; every element read or written must exist (not checked).
    Each element of a is broadcast once for all the chunks' lanes, and each vector of a matrix loaded once for all
    the rows: a_rows * chunks * vectors accumulators (at most 12 of AVX2's 16 registers) run side by side, enough
    independent chains to hide the multiply-add's latency."""

    @intrinsic
    def chains(typingctx, a, ra, a0, n, mats, at, out, rows, out_cols):
        def is_matrix(t):
            return isinstance(t, types.Array) and t.dtype == types.float32 and t.ndim == 2 and t.layout == "C"

        def is_indices(t, count):
            return isinstance(t, types.UniTuple) and t.count == count and isinstance(t.dtype, types.Integer)

        if not (is_matrix(a) and is_matrix(out) and isinstance(mats, types.UniTuple) and mats.count == chunks
                and is_matrix(mats.dtype) and is_indices(ra, a_rows) and is_indices(rows, a_rows)
                and is_indices(at, chunks) and is_indices(out_cols, chunks)
                and isinstance(a0, types.Integer) and isinstance(n, types.Integer)):
            return None
        return types.void(a, ra, a0, n, mats, at, out, rows, out_cols), _codegen

    def _codegen(context, builder, sig, args):
        a_type, ra_type, a0_type, n_type, mats_type, at_type, out_type, rows_type, out_cols_type = sig.args
        a_value, ra, a0, n, mats, at, out_value, rows, out_cols = args
        a0 = context.cast(builder, a0, a0_type, types.int64)
        n = context.cast(builder, n, n_type, types.int64)

        def index(tuple_value, tuple_type, i):
            return context.cast(builder, builder.extract_value(tuple_value, i), tuple_type.dtype, types.int64)

        def item_pointer(array_type, array_value, row, column):
            array = context.make_array(array_type)(context, builder, array_value)
            return cgutils.get_item_pointer(context, builder, array_type, array, [row, column])

        a_starts = [item_pointer(a_type, a_value, index(ra, ra_type, r), a0) for r in range(a_rows)]
        out_starts = {(r, c): item_pointer(out_type, out_value, index(rows, rows_type, r),
                                           index(out_cols, out_cols_type, c))
                      for r in range(a_rows) for c in range(chunks)}
        mat_arrays = [context.make_array(mats_type.dtype)(context, builder, builder.extract_value(mats, c))
                      for c in range(chunks)]
        mat_starts = [builder.gep(mat_arrays[c].data, [index(at, at_type, c)]) for c in range(chunks)]
        mat_strides = [builder.extract_value(mat_arrays[c].shape, 1) for c in range(chunks)]  # elements per row
        fma = _fmuladd_function(builder, _LANE_VECTOR)

        def lanes_at(start, offset):
            return builder.bitcast(builder.gep(start, [offset]), _LANE_VECTOR.as_pointer())

        accumulators = [(r, c, v) for r in range(a_rows) for c in range(chunks) for v in range(vectors)]
        initial = {(r, c, v): builder.load(lanes_at(out_starts[r, c], _i64(v * LANES)), align=4)
                   for r, c, v in accumulators}
        undefined = ir.Constant(_LANE_VECTOR, ir.Undefined)
        splat = ir.Constant(ir.VectorType(ir.IntType(32), LANES), [0] * LANES)

        def step(k, acc):
            broadcasts = []
            for r in range(a_rows):
                element = builder.load(builder.gep(a_starts[r], [k]), align=4)
                broadcasts.append(builder.shuffle_vector(
                    builder.insert_element(undefined, element, ir.Constant(ir.IntType(32), 0)), undefined, splat))
            updated = {}
            for c in range(chunks):
                row_start = builder.mul(k, mat_strides[c])
                for v in range(vectors):
                    lanes = builder.load(lanes_at(mat_starts[c], builder.add(row_start, _i64(v * LANES))), align=4)
                    for r in range(a_rows):
                        updated[r, c, v] = builder.call(fma, [broadcasts[r], lanes, acc[r, c, v]])
            return updated

        final = counted_loop(builder, _i64(0), n, _i64(1), initial, step, "chains_k")
        for r, c, v in accumulators:
            builder.store(final[r, c, v], lanes_at(out_starts[r, c], _i64(v * LANES)), align=4)
        return context.get_dummy_value()

    return chains
