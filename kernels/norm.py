"""Layer normalisation over the last axis (as torch.nn.LayerNorm)."""

import math

import numpy as np
from numba import prange

from .jit import jit
from .threads import apply_num_threads, check_f32, check_shape, output_array


# reassoc lets LLVM vectorise the float64 sums; no other fastmath flag, so NaN/inf still propagate
@jit(fastmath={"reassoc", "contract"})
def _normalize_row(x, i, gamma, beta, eps, out):
    """out[i] = normalised x[i]: two passes for mean and variance, then the affine map."""
    width = x.shape[1]
    total = 0.0
    for j in range(width):
        total += np.float64(x[i, j])
    mean = total / width
    squares = 0.0  # second pass over (x - mean): no catastrophic cancellation, unlike E[x^2] - mean^2
    for j in range(width):
        d = np.float64(x[i, j]) - mean
        squares += d * d
    inv_std = 1.0 / math.sqrt(squares / width + eps)
    for j in range(width):
        out[i, j] = np.float32((np.float64(x[i, j]) - mean) * inv_std * gamma[j] + beta[j])


_SERIAL_ROWS = 4  # up to this many rows (decode) one thread is quicker than waking the others


@jit(parallel=True, fastmath={"reassoc", "contract"})
def _layer_norm_rows(x, gamma, beta, eps, out):
    """Normalise each row of x into out (may be x), rows in parallel unless there are only a few."""
    rows = x.shape[0]
    if rows <= _SERIAL_ROWS:
        for i in range(rows):
            _normalize_row(x, i, gamma, beta, eps, out)
        return
    for i in prange(rows):
        _normalize_row(x, i, gamma, beta, eps, out)


def layer_norm(
    x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float, out: np.ndarray | None = None
) -> np.ndarray:
    """out = (x - mean) / sqrt(var + eps) * gamma + beta, mean and biased variance over each row.

    x [M, C] float32; gamma, beta [C] float32; eps >= 0. out [M, C] float32, may be ``x`` itself
    (in place); None allocates. Statistics are accumulated in float64. Returns out."""
    check_f32("x", x, 2)
    width = x.shape[1]
    if width == 0:
        raise ValueError("x must have at least one column to normalise")
    check_shape("gamma", check_f32("gamma", gamma, 1), (width,))
    check_shape("beta", check_f32("beta", beta, 1), (width,))
    eps = float(eps)
    if not (math.isfinite(eps) and eps >= 0.0):
        raise ValueError(f"eps must be a finite number >= 0, got {eps}")
    out = x if out is x else output_array(out, x.shape, {"x": x, "gamma": gamma, "beta": beta})
    apply_num_threads()
    return layer_norm_unchecked(x, gamma, beta, eps, out)


def layer_norm_unchecked(
    x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float, out: np.ndarray | None = None
) -> np.ndarray:
    """:func:`layer_norm` without its argument checks, for a caller whose arrays are valid by construction
    (see ``matmul.linear_unchecked``)."""
    if out is None:
        out = np.empty(x.shape, np.float32)
    _layer_norm_rows(x, gamma, beta, eps, out)
    return out
