"""Integer dot products of int16 activations with int8 weights: the inner loop of the int8 decode kernels.

Widening every int8 weight to float32 before its multiply-add (vpmovsxbd, vcvtdq2ps, vfmadd on AVX2) left
the int8 one-token products compute-bound. Multiplying integers takes a third of the instructions:
activations rounded to int16 (``int16_row``), weights sign-extended to int16, and each pair of adjacent
products summed into one int32 element, one instruction for VECTOR_WIDTH weights (vpmaddwd on AVX2,
vpdpwssd with AVX-512 VNNI). Weights are prefetched ahead, and decode reads WEIGHT_STREAMS rows of them side
by side: one sequential stream per core left the products short of what memory delivers. Numba has no
vector types, and LLVM's vectoriser turns the scalar form of this loop into 128-bit (xmm) code, so
:func:`int_dots` emits the loop in LLVM IR on VECTOR_WIDTH-element vectors: plain IR (sign-extend,
multiply, add the even and odd elements) that the x86 backend fuses into its multiply-add instruction and
other targets lower to their own. ``benchmarks/quantized_matmul.py`` measures the kernels built on it, and
its docstring records the measurements behind these choices.

Exactness. |x q| <= 32767 * 127 and each int32 element adds two products per multiply-add, so it stays below
2**31 for at most 258 multiply-adds: the IR loop takes at most WEIGHTS_PER_BLOCK = 4096 weights per call
(128 multiply-adds into each of its two accumulators per row) and returns the sums as float64, where every
integer below 2**53 is exact (any K up to 2**22): the integer dot product is exact; the only rounding of the
whole product is that of the activations to int16, at most half a step of max|x| / 32767 each.
"""

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from .jit import jit
from .llvm_loop import counted_loop

INT16_MAX = 32767  # activations are rounded to [-32767, 32767] steps of max|x| / 32767
VECTOR_WIDTH = 16  # weights per vector multiply-add: 16 int16 products summed in pairs into 8 int32 elements
WEIGHTS_PER_PASS = 32  # per pass of the IR loop: two vectors into two accumulators (hides their latency), one
# prefetch (one per cache line, 64 weights per pass, was slower)
PREFETCH_AHEAD_BYTES = 1536  # weights requested this far ahead: the hardware prefetcher alone falls behind
# when every 768 bytes end a dot product
WEIGHTS_PER_BLOCK = 4096  # per IR loop at most: keeps every int32 sum exact (see the module docstring)
X_ROWS_PER_PASS = 4  # batched decode: rows of x per pass over rows of weights
WEIGHT_PAIR_VECTORS = 1  # batched decode: each pass takes one vector of two rows of weights: 4 x 2 accumulators
# of AVX2's 16 registers, each weight vector loaded for four rows of x and each x vector for two rows of
# weights (two vectors per pass would need 16 accumulators)
WEIGHT_STREAMS = 4  # decode: rows of weights read side by side as sequential streams (8 accumulators too)

_I16, _I32, _I64 = ir.IntType(16), ir.IntType(32), ir.IntType(64)
_EVEN = ir.Constant(ir.VectorType(_I32, VECTOR_WIDTH // 2), list(range(0, VECTOR_WIDTH, 2)))
_ODD = ir.Constant(ir.VectorType(_I32, VECTOR_WIDTH // 2), list(range(1, VECTOR_WIDTH, 2)))
_QUARTER = ir.VectorType(ir.DoubleType(), VECTOR_WIDTH // 4)  # half an accumulator's lanes, as float64
_FIRST_TWO = ir.Constant(ir.VectorType(_I32, 2), [0, 1])
_LAST_TWO = ir.Constant(ir.VectorType(_I32, 2), [2, 3])


def int_dots(x_rows, weight_rows, weights_per_pass=WEIGHTS_PER_PASS):
    """``dots(x_int, first, q, row, stride, totals)``: totals[w * x_rows + r] = x_int[first + r] . q[row + w *
    stride] exactly (float64 totals, holding integers) for r < ``x_rows``, w < ``weight_rows``, x_int int16 [M, K]
    and q int8 [N, K], both C-contiguous (the rows must exist: not checked). Each VECTOR_WIDTH weights of q are
    loaded and widened once for all ``x_rows`` rows of x; each row of x once for all ``weight_rows`` rows of q,
    which are read side by side as that many sequential streams. The IR loop takes blocks of at most
    WEIGHTS_PER_BLOCK weights (exact int32 sums), ``weights_per_pass`` (a multiple of VECTOR_WIDTH) per pass, each
    vector of them into an accumulator of its own, then the tail past the last whole pass one weight at a time.

    Inlined into the kernels' loops (Numba IR inlining), which call it once per row of weights or two: as a
    call, its overhead shows in the decode products' time."""
    block_dots = _block_dots(x_rows, weight_rows, weights_per_pass)

    @jit(inline="always")
    def dots(x_int, first, q, row, stride, totals):
        depth = q.shape[1]
        totals[:] = 0
        k0 = 0
        vector_end = depth - depth % weights_per_pass
        while k0 < vector_end:
            n = min(WEIGHTS_PER_BLOCK, vector_end - k0)
            sums = block_dots(x_int, first, q, row, stride, k0, n)
            for i in range(x_rows * weight_rows):
                totals[i] += sums[i]
            k0 += n
        for k in range(k0, depth):
            for w in range(weight_rows):
                weight = np.float64(q[row + w * stride, k])
                for r in range(x_rows):
                    totals[w * x_rows + r] += np.float64(x_int[first + r, k]) * weight

    return dots


def _block_dots(x_rows, weight_rows, weights_per_pass):
    """The IR loop of :func:`int_dots`, an intrinsic ``block(x, first, q, row, stride, k0, n)``: the tuple of
    exact sums (float64) x[first + r, k0:k0+n] . q[row + w * stride, k0:k0+n] (w outer, r inner), n a multiple of
    ``weights_per_pass`` with 0 <= n <= WEIGHTS_PER_BLOCK."""

    @intrinsic
    def block(typingctx, x, first, q, row, stride, k0, n):
        if not (
            isinstance(x, types.Array) and x.dtype == types.int16 and x.ndim == 2 and x.layout == "C"
            and isinstance(q, types.Array) and q.dtype == types.int8 and q.ndim == 2 and q.layout == "C"
            and all(isinstance(t, types.Integer) for t in (first, row, stride, k0, n))
        ):
            return None
        return types.UniTuple(types.float64, x_rows * weight_rows)(x, first, q, row, stride, k0, n), _codegen

    def _codegen(context, builder, sig, args):
        x_type, q_type = sig.args[0], sig.args[2]
        first, row, stride, k0, n = (context.cast(builder, args[i], sig.args[i], types.int64) for i in (1, 3, 4, 5, 6))
        x_array = context.make_array(x_type)(context, builder, args[0])
        q_array = context.make_array(q_type)(context, builder, args[2])
        x_starts = [
            cgutils.get_item_pointer(context, builder, x_type, x_array, [builder.add(first, _i64(r)), k0])
            for r in range(x_rows)
        ]
        q_starts = [
            cgutils.get_item_pointer(
                context, builder, q_type, q_array, [builder.add(row, builder.mul(stride, _i64(w))), k0]
            )
            for w in range(weight_rows)
        ]
        x_vector = ir.VectorType(_I16, VECTOR_WIDTH).as_pointer()
        q_vector = ir.VectorType(ir.IntType(8), VECTOR_WIDTH).as_pointer()
        products_type = ir.VectorType(_I32, VECTOR_WIDTH)
        sums_type = ir.VectorType(_I32, VECTOR_WIDTH // 2)  # an accumulator: one int32 per pair of products
        zero = ir.Constant(sums_type, None)
        prefetch = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [q_starts[0].type, _I32, _I32, _I32]), "llvm.prefetch.p0i8"
        )
        vectors_per_pass = weights_per_pass // VECTOR_WIDTH
        accumulators = [(w, r, part) for w in range(weight_rows) for r in range(x_rows)
                        for part in range(vectors_per_pass)]

        def step(k, sums):
            for q_start in q_starts:
                ahead = builder.gep(q_start, [builder.add(k, _i64(PREFETCH_AHEAD_BYTES))])
                read, keep, data = ir.Constant(_I32, 0), ir.Constant(_I32, 3), ir.Constant(_I32, 1)
                builder.call(prefetch, [ahead, read, keep, data])
            updated = {}
            for part in range(vectors_per_pass):
                at = builder.add(k, _i64(part * VECTOR_WIDTH))
                xs = [
                    builder.sext(builder.load(builder.bitcast(builder.gep(x_starts[r], [at]), x_vector), align=2),
                                 products_type)
                    for r in range(x_rows)
                ]
                for w, q_start in enumerate(q_starts):
                    weights = builder.load(builder.bitcast(builder.gep(q_start, [at]), q_vector), align=1)
                    weights = builder.sext(weights, products_type)
                    for r in range(x_rows):
                        products = builder.mul(xs[r], weights)
                        pairs = builder.add(
                            builder.shuffle_vector(products, ir.Constant(products_type, None), _EVEN),
                            builder.shuffle_vector(products, ir.Constant(products_type, None), _ODD),
                        )
                        updated[w, r, part] = builder.add(sums[w, r, part], pairs)
            return updated

        finals = counted_loop(builder, _i64(0), n, _i64(weights_per_pass), dict.fromkeys(accumulators, zero), step,
                              "madd_loop")
        # Each int32 lane converted to float64 and the lanes added there: exact (every partial sum is an integer
        # below 2**53), so the order does not matter, and the caller gets a float64 it can scale at once.
        halves = [ir.Constant(ir.VectorType(_I32, VECTOR_WIDTH // 4), list(range(h, h + VECTOR_WIDTH // 4)))
                  for h in (0, VECTOR_WIDTH // 4)]
        results = []
        for w in range(weight_rows):
            for r in range(x_rows):
                total = None
                for part in range(vectors_per_pass):
                    lanes = finals[w, r, part]
                    for half in halves:
                        widened = builder.sitofp(builder.shuffle_vector(lanes, lanes, half), _QUARTER)
                        total = widened if total is None else builder.fadd(total, widened)
                low = builder.fadd(builder.shuffle_vector(total, total, _FIRST_TWO),
                                   builder.shuffle_vector(total, total, _LAST_TWO))
                results.append(builder.fadd(builder.extract_element(low, ir.Constant(_I32, 0)),
                                            builder.extract_element(low, ir.Constant(_I32, 1))))
        return context.make_tuple(builder, sig.return_type, results)

    return block


def _i64(value):
    return ir.Constant(_I64, value)


# The four shapes the int8 kernels take, all built by int_dots(x_rows, weight_rows[, weights_per_pass]):
dot_one_row = int_dots(1, 1)  # one row of x . one row of q
dot_x_rows = int_dots(X_ROWS_PER_PASS, 1)  # X_ROWS_PER_PASS rows of x . one row of q, read once for all of them
dot_x_rows_weight_pairs = int_dots(X_ROWS_PER_PASS, 2, WEIGHT_PAIR_VECTORS * VECTOR_WIDTH)  # ... . two rows of q
dot_weight_streams = int_dots(1, WEIGHT_STREAMS)  # one row of x . WEIGHT_STREAMS rows of q, read side by side

_ABS_MASK = np.int32(0x7FFFFFFF)  # a float32's bits without its sign
_INFINITY_BITS = np.int32(0x7F800000)  # bits of float32 infinity; NaNs lie above


@jit()
def int16_row(x_row, xq_row):
    """xq_row = round(x_row / step), step = max|x_row| / 32767; returns step (0.0 for an all-zero row).
    A NaN or infinity in x_row returns NaN and leaves xq_row unspecified: the caller must not use it."""
    # The largest |x| found on the bit patterns: with the sign bit cleared, a float32's bits order like its
    # magnitude, and infinity and NaN order above every finite value. An integer max vectorises; a float
    # max that must keep NaN does not.
    magnitude_bits = np.int32(0)
    for bits in x_row.view(np.int32):
        magnitude_bits = max(magnitude_bits, bits & _ABS_MASK)
    if magnitude_bits >= _INFINITY_BITS:
        return np.nan
    peak = np.full(1, magnitude_bits, np.int32).view(np.float32)[0]
    if peak == 0.0:
        xq_row[:] = 0
        return 0.0
    inverse = INT16_MAX / np.float64(peak)  # float64: finite even for a subnormal peak
    for k in range(x_row.size):
        xq_row[k] = np.int16(min(max(np.rint(np.float64(x_row[k]) * inverse), -INT16_MAX), INT16_MAX))
    return np.float64(peak) / INT16_MAX
