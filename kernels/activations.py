"""GPT-2's tanh-approximation GELU, and the vectorisable exp it is built on.

Without Intel SVML, Numba compiles ``math.exp``/``np.tanh`` to scalar libm calls, which would make GELU
cost as much as a matmul. ``exp_f64`` below is plain arithmetic that LLVM vectorises (AVX2: 4 doubles per
instruction), accurate to ~1e-10 relative. These functions are
compiled *without* fastmath on purpose: reassociation would cancel the round-to-integer trick in
``exp_f64``. Numba-level inlining would lower them with the caller's (fastmath) flags, so callers in
fastmath kernels must not request ``inline="always"``; LLVM still inlines them, keeping their own flags.
"""

import math

import numpy as np
from llvmlite import ir
from numba import prange, types
from numba.extending import intrinsic

from .jit import jit
from .threads import apply_num_threads


@intrinsic
def _float64_from_bits(typingctx, bits):
    """Reinterpret an int64's bits as a float64 (an LLVM bitcast, free and vectorisable)."""
    if not (isinstance(bits, types.Integer) and bits.bitwidth == 64):
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.DoubleType())

    return types.float64(bits), codegen


@intrinsic
def _float64_bits(typingctx, value):
    """Reinterpret a float64's bits as an int64 (an LLVM bitcast)."""
    if value != types.float64:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(64))

    return types.int64(value), codegen


_LOG2_E = 1.4426950408889634
_LN2_HI = 0.6931471803691238  # ln 2 split in two (Cody-Waite) so n * _LN2_HI is exact for |n| < 2**20
_LN2_LO = 1.9082149292705877e-10
_ROUNDER = 6755399441055744.0  # 1.5 * 2**52: x + _ROUNDER rounds x to an integer held in the low mantissa bits
_ROUNDER_BITS = 0x4338000000000000  # bit pattern of _ROUNDER
# exp(r) for |r| <= ln(2)/2 by its degree-8 Taylor polynomial: relative error < 3e-10
_C0, _C1, _C2, _C3, _C4, _C5, _C6, _C7, _C8 = (1.0 / math.factorial(k) for k in range(9))


@jit(error_model="numpy")
def exp_f64(x: float) -> float:
    """exp(x) for a float64 x, branch-free so loops calling it vectorise. Arguments outside
    [-708, 709] are clamped (the result stays finite: ~3e-308 .. ~8e307); NaN propagates."""
    x = min(max(x, -708.0), 709.0)
    shifted = x * _LOG2_E + _ROUNDER
    n = shifted - _ROUNDER  # round(x / ln 2)
    r = (x - n * _LN2_HI) - n * _LN2_LO  # x - n ln 2, in [-ln(2)/2, ln(2)/2]
    # The polynomial in pairs of terms combined by powers of r (Estrin's scheme), not Horner's rule: a chain of
    # 4 dependent steps instead of 9, so loops calling exp_f64 overlap more of its work (the same accuracy).
    r2 = r * r
    r4 = r2 * r2
    low = (_C0 + _C1 * r) + r2 * (_C2 + _C3 * r)
    high = (_C4 + _C5 * r) + r2 * (_C6 + _C7 * r)
    p = low + r4 * (high + r4 * _C8)
    two_to_n = _float64_from_bits((_float64_bits(shifted) - _ROUNDER_BITS + 1023) << 52)
    return p * two_to_n


_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


@jit(error_model="numpy")
def gelu_f32(x: np.float32) -> np.float32:
    """GELU (tanh approximation) of one float32, computed in float64 and rounded once.

    Uses 0.5 * (1 + tanh(u)) == 1 / (1 + exp(-2u)): no cancellation for negative x, no tanh call."""
    v = np.float64(x)
    u = _SQRT_2_OVER_PI * (v + 0.044715 * v * v * v)
    return np.float32(v / (1.0 + exp_f64(-2.0 * u)))


@jit(error_model="numpy")
def gelu_in_place(values):
    """values[j] = gelu_f32(values[j]) for a 1-D contiguous float32 array (e.g. one row of a product).

    The kernels that fuse GELU call this on whole rows: as a loop of its own it vectorises, while GELU
    computed inside a loop indexing a 2-D array ran scalar."""
    for j in range(values.size):
        values[j] = gelu_f32(values[j])


_CHUNK = 16384  # elements per parallel task: big enough to amortise a task, small enough to balance


@jit(parallel=True, error_model="numpy")
def _gelu_flat(x, out):
    """out[i] = gelu_f32(x[i]) for 1-D x and out (out may be x), in parallel chunks."""
    n = x.size
    for c in prange((n + _CHUNK - 1) // _CHUNK):
        for i in range(c * _CHUNK, min(n, (c + 1) * _CHUNK)):
            out[i] = gelu_f32(x[i])


def gelu_new(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """GPT-2's tanh GELU, 0.5*x*(1 + tanh(sqrt(2/pi)*(x + 0.044715*x**3))), elementwise.

    x: float32 C-contiguous array of any shape. out: same shape and dtype, may be ``x`` itself (in place);
    None allocates. Returns out. Accurate to ~0.5 ulp (float64 internally). Elementwise, so rows are
    independent: an element's result does not depend on the others.

    Checks none of this: a caller passing arrays it did not build calls ``checks.gelu_new`` first."""
    apply_num_threads()
    if out is None:
        out = np.empty(x.shape, np.float32)
    _gelu_flat(x.reshape(-1), out.reshape(-1))
    return out
