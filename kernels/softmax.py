"""Cross-entropy of rows of logits: the negative log-likelihood of one target per row."""

import math

import numpy as np
from numba import prange

from .activations import exp_f64
from .jit import jit
from .threads import apply_num_threads

_LANES = 4  # independent partial sums: the float64 adds of one chain would wait on each other


@jit()  # no fastmath: the sum runs in the written order, so a row's result never depends on the others
def _row_nll(row, target):
    """log(sum_j exp(row[j])) - row[target], the exponentials taken after subtracting the row's max and
    summed in float64 in _LANES interleaved partial sums."""
    top = np.float64(row.max())
    width = row.shape[0]
    s0 = s1 = s2 = s3 = 0.0
    j = 0
    while j + _LANES <= width:
        s0 += exp_f64(np.float64(row[j]) - top)
        s1 += exp_f64(np.float64(row[j + 1]) - top)
        s2 += exp_f64(np.float64(row[j + 2]) - top)
        s3 += exp_f64(np.float64(row[j + 3]) - top)
        j += _LANES
    while j < width:
        s0 += exp_f64(np.float64(row[j]) - top)
        j += 1
    return math.log((s0 + s1) + (s2 + s3)) + top - np.float64(row[target])


@jit(parallel=True)
def _cross_entropy(logits, targets, out):
    for i in prange(logits.shape[0]):
        out[i] = _row_nll(logits[i], targets[i])


def cross_entropy(logits: np.ndarray, targets: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """out[i] = -log softmax(logits[i])[targets[i]] = logsumexp(logits[i]) - logits[i, targets[i]].

    logits [M, V] float32 (V >= 1), targets [M] int64 in 0..V-1, out [M] float64 (None allocates); all
    C-contiguous. The log-sum-exp is taken in float64 after subtracting each row's max, so it neither
    overflows nor loses the small terms. A row holding NaN gives NaN; +inf gives NaN or inf. Rows are
    independent. Returns out.

    Checks none of this: a caller passing arrays it did not build calls ``checks.cross_entropy`` first."""
    apply_num_threads()
    if out is None:
        out = np.empty(logits.shape[0], np.float64)
    if logits.shape[0]:
        _cross_entropy(logits, targets, out)
    return out
