"""Layer normalisation over the last axis (as torch.nn.LayerNorm)."""

import math

import numpy as np
from numba import prange

from .jit import jit
from .threads import apply_num_threads


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

    x [M, C] float32 (C >= 1); gamma, beta [C] float32; eps a finite number >= 0. out [M, C] float32, may be
    ``x`` itself (in place); None allocates. Statistics are accumulated in float64. Returns out. Rows are
    independent: each is normalised by the same function, alone or among others.

    Checks none of this: a caller passing arrays it did not build calls ``checks.layer_norm`` first."""
    apply_num_threads()
    if out is None:
        out = np.empty(x.shape, np.float32)
    _layer_norm_rows(x, gamma, beta, eps, out)
    return out
