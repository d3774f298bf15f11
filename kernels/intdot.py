"""Integer dot products of int16 activations with int8 weights: the inner loop of the int8 decode kernels.

Widening every int8 weight to float32 before its multiply-add (vpmovsxbd, vcvtdq2ps, vfmadd on AVX2) left
the int8 one-token products compute-bound at ~28 GB/s of weights. Multiplying integers takes a third of the
instructions: activations rounded to int16 (``int16_row``), weights sign-extended to int16, and each pair of
adjacent products summed into an int32 lane, one instruction for 16 weights (vpmaddwd on AVX2). With the
weights prefetched ahead, and four rows of them read side by side (``int_dot_lanes``), distilgpt2's larger
one-token products read weights at 40-48 GB/s here, against 25-34 GB/s with one stream per core. Numba has
no vector types, and LLVM's vectoriser turns the scalar form of this loop into 8-lane (xmm) code, so
``_dots_of_rows`` emits the loop in LLVM IR on 16-lane vectors: plain IR (sign-extend, multiply, add the
even and odd lanes) that the x86 backend fuses into vpmaddwd and other targets lower to their own
instructions.

Exactness. |x q| <= 32767 * 127 and each int32 lane adds two products per madd, so a lane stays below
2**31 for at most 258 madds: the IR loop takes at most BLOCK = 4096 weights per call (128 madds into each
of its two accumulators per row) and returns the sums in int64. The integer dot product is exact; the only
rounding of the whole product is that of the activations to int16, at most half a step of max|x| / 32767
each.
"""

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from .jit import jit

INT16_MAX = 32767  # activations are rounded to [-32767, 32767] steps of max|x| / 32767
CHUNK = 32  # weights per pass of the IR loop: two 16-lane madds into two accumulators (hides their latency);
# one prefetch per pass. (64 per pass, one prefetch per cache line, measured 3-4 % slower one-token decode.)
PREFETCH_AHEAD = 1536  # bytes of weights requested this far ahead (measured: 30 -> 34 GB/s from DRAM on the
# LM head; the hardware prefetcher alone falls behind when every 768 bytes end a dot product)
BLOCK = 4096  # weights per call at most: keeps every int32 lane exact (see the module docstring)

_I16, _I32, _I64 = ir.IntType(16), ir.IntType(32), ir.IntType(64)
_LANES = 16
_EVEN = ir.Constant(ir.VectorType(_I32, _LANES // 2), list(range(0, _LANES, 2)))
_ODD = ir.Constant(ir.VectorType(_I32, _LANES // 2), list(range(1, _LANES, 2)))


def _dots_of_rows(rows, weight_rows=1):
    """An intrinsic ``dots(x, first, q, row, stride, k0, n)``: the tuple of int64 dot products
    x[first + r, k0:k0+n] . q[row + w * stride, k0:k0+n] for w < ``weight_rows``, r < ``rows`` (in that
    order: w outer), for x int16 [M, K] and q int8 [N, K], both C-contiguous; n a multiple of CHUNK with
    0 <= n <= BLOCK, and every row named must exist (not checked). Each 16 weights of q are loaded and widened
    once for all ``rows`` rows of x; each row of x once for all ``weight_rows`` rows of q, which are read
    side by side as that many sequential streams."""

    @intrinsic
    def dots(typingctx, x, first, q, row, stride, k0, n):
        if not (
            isinstance(x, types.Array) and x.dtype == types.int16 and x.ndim == 2 and x.layout == "C"
            and isinstance(q, types.Array) and q.dtype == types.int8 and q.ndim == 2 and q.layout == "C"
            and all(isinstance(t, types.Integer) for t in (first, row, stride, k0, n))
        ):
            return None
        return types.UniTuple(types.int64, rows * weight_rows)(x, first, q, row, stride, k0, n), _codegen

    def _codegen(context, builder, sig, args):
        x_type, q_type = sig.args[0], sig.args[2]
        first, row, stride, k0, n = (context.cast(builder, args[i], sig.args[i], types.int64) for i in (1, 3, 4, 5, 6))
        x_array = context.make_array(x_type)(context, builder, args[0])
        q_array = context.make_array(q_type)(context, builder, args[2])
        x_starts = [
            cgutils.get_item_pointer(context, builder, x_type, x_array, [builder.add(first, _i64(r)), k0])
            for r in range(rows)
        ]
        q_starts = [
            cgutils.get_item_pointer(
                context, builder, q_type, q_array, [builder.add(row, builder.mul(stride, _i64(w))), k0]
            )
            for w in range(weight_rows)
        ]
        x_vector = ir.VectorType(_I16, _LANES).as_pointer()
        q_vector = ir.VectorType(ir.IntType(8), _LANES).as_pointer()
        wide = ir.VectorType(_I32, _LANES)
        lanes = ir.VectorType(_I32, _LANES // 2)
        zero = ir.Constant(lanes, None)
        prefetch = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [q_starts[0].type, _I32, _I32, _I32]), "llvm.prefetch.p0i8"
        )
        entry = builder.block
        loop = builder.append_basic_block("madd_loop")
        done = builder.append_basic_block("madd_done")
        builder.cbranch(builder.icmp_signed(">", n, _i64(0)), loop, done)

        builder.position_at_end(loop)
        k = builder.phi(_I64)
        parts = CHUNK // _LANES
        pairs_of_rows = [(w, r) for w in range(weight_rows) for r in range(rows)]
        sums = {pair: [builder.phi(lanes) for _ in range(parts)] for pair in pairs_of_rows}
        for q_start in q_starts:
            ahead = builder.gep(q_start, [builder.add(k, _i64(PREFETCH_AHEAD))])
            read, keep, data = ir.Constant(_I32, 0), ir.Constant(_I32, 3), ir.Constant(_I32, 1)
            builder.call(prefetch, [ahead, read, keep, data])
        updated = {pair: [None] * parts for pair in pairs_of_rows}
        for part in range(parts):
            at = builder.add(k, _i64(part * _LANES))
            xs = [
                builder.sext(builder.load(builder.bitcast(builder.gep(x_starts[r], [at]), x_vector), align=2), wide)
                for r in range(rows)
            ]
            for w, q_start in enumerate(q_starts):
                weights = builder.load(builder.bitcast(builder.gep(q_start, [at]), q_vector), align=1)
                weights = builder.sext(weights, wide)
                for r in range(rows):
                    products = builder.mul(xs[r], weights)
                    pairs = builder.add(
                        builder.shuffle_vector(products, ir.Constant(wide, None), _EVEN),
                        builder.shuffle_vector(products, ir.Constant(wide, None), _ODD),
                    )
                    updated[w, r][part] = builder.add(sums[w, r][part], pairs)
        k_next = builder.add(k, _i64(CHUNK))
        k.add_incoming(_i64(0), entry)
        k.add_incoming(k_next, loop)
        for pair in pairs_of_rows:
            for part in range(parts):
                sums[pair][part].add_incoming(zero, entry)
                sums[pair][part].add_incoming(updated[pair][part], loop)
        builder.cbranch(builder.icmp_signed("<", k_next, n), loop, done)

        builder.position_at_end(done)
        finals = {pair: [builder.phi(lanes) for _ in range(parts)] for pair in pairs_of_rows}
        wide64 = ir.VectorType(_I64, _LANES // 2)
        reduce_add = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(_I64, [wide64]), "llvm.vector.reduce.add.v8i64"
        )
        results = []
        for pair in pairs_of_rows:
            total = ir.Constant(wide64, None)
            for part in range(parts):
                finals[pair][part].add_incoming(zero, entry)
                finals[pair][part].add_incoming(updated[pair][part], loop)
                total = builder.add(total, builder.sext(finals[pair][part], wide64))  # lanes summed in int64
            results.append(builder.call(reduce_add, [total]))
        return context.make_tuple(builder, sig.return_type, results)

    return dots


def _i64(value):
    return ir.Constant(_I64, value)


_ABS_MASK = np.int32(0x7FFFFFFF)  # a float32's bits without its sign
_INFINITY_BITS = np.int32(0x7F800000)  # bits of float32 infinity; NaNs lie above

GROUP = 4  # rows of x per pass over a row of weights in ``int_dots``: 8 accumulators of AVX2's 16 registers
# Rows of weights read side by side by ``int_dot_lanes`` (8 accumulators too). One sequential stream per
# thread left a one-token product short of what memory delivers: on distilgpt2's shapes, 2 streams took
# 14-27 % less time on the LM head than 1, and 4 streams 6-10 % less than 2 on every shape, from 22-34 to
# 31-40 GB/s (paired runs on this machine).
LANES = 4
_dot_1 = _dots_of_rows(1)


@jit()
def int16_row(x_row, xq_row):
    """xq_row = round(x_row / step), step = max|x_row| / 32767; returns step (0.0 for an all-zero row).
    A NaN or infinity in x_row returns NaN and leaves xq_row unspecified: the caller must not use it."""
    # The largest |x| found on the bit patterns: with the sign bit cleared, a float32's bits order like its
    # magnitude, and infinity and NaN order above every finite value. An integer max vectorises; a float
    # max that must keep NaN does not (3x slower on a 3072-wide row).
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


# int_dot, int_dots and int_dot_lanes are inlined into the kernels' loops (Numba IR inlining). As calls, each
# cost ~30 ns: a one-token decode of distilgpt2's shape ran 3-5 % slower and a batch of 8 ~10 % (paired runs
# on this machine).
@jit(inline="always")
def int_dot(x_int, q, row):
    """The exact integer dot product x_int[0] . q[row] (int64) for x_int int16 [1, K], q int8 [N, K]."""
    depth = q.shape[1]
    total = np.int64(0)
    k0 = 0
    vector_end = depth - depth % CHUNK
    while k0 < vector_end:
        n = min(BLOCK, vector_end - k0)
        total += _dot_1(x_int, 0, q, row, 0, k0, n)[0]
        k0 += n
    for k in range(k0, depth):
        total += np.int64(x_int[0, k]) * np.int64(q[row, k])
    return total


def _blocked_dots(rows, weight_rows):
    """``dots(x_int, first, q, row, stride, totals)``: totals[w * rows + r] = x_int[first + r] . q[row + w *
    stride] exactly (int64) for r < ``rows``, w < ``weight_rows``, x_int int16 [M, K] and q int8 [N, K] (the
    rows must exist), in IR loops of at most BLOCK weights (exact int32 lanes), then the tail past the last
    CHUNK one weight at a time."""
    block_dots = _dots_of_rows(rows, weight_rows)

    @jit(inline="always")
    def dots(x_int, first, q, row, stride, totals):
        depth = q.shape[1]
        totals[:] = 0
        k0 = 0
        vector_end = depth - depth % CHUNK
        while k0 < vector_end:
            n = min(BLOCK, vector_end - k0)
            sums = block_dots(x_int, first, q, row, stride, k0, n)
            for i in range(rows * weight_rows):
                totals[i] += sums[i]
            k0 += n
        for k in range(k0, depth):
            for w in range(weight_rows):
                weight = np.int64(q[row + w * stride, k])
                for r in range(rows):
                    totals[w * rows + r] += np.int64(x_int[first + r, k]) * weight

    return dots


# GROUP rows of x_int (first .. first+GROUP-1) against one row of q, which is read once: int_dots(x_int, first,
# q, row, 0, totals).
int_dots = _blocked_dots(GROUP, 1)
# One row of x_int against LANES distant rows of q (row + w * stride), read side by side, each as its own
# stream: int_dot_lanes(x_int, 0, q, row, stride, totals).
int_dot_lanes = _blocked_dots(1, LANES)
