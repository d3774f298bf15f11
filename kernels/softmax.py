"""Cross-entropy of rows of logits: the negative log-likelihood of one target per row."""

import math

import numpy as np
from numba import prange

from .activations import exp_f64
from .jit import jit
from .threads import apply_num_threads

# reassoc lets LLVM vectorise the float64 sum (exp_f64 is branch-free for this): its order is then the
# compiled loop's, the same for every row, so rows stay independent. No other fastmath flag: NaN propagates.
@jit(fastmath={"reassoc", "contract"})
def _row_nll(row, target):
    """log(sum_j exp(row[j])) - row[target], the exponentials taken after subtracting the row's max and
    summed in float64."""
    top = np.float64(row.max())
    total = 0.0
    for j in range(row.shape[0]):
        total += exp_f64(np.float64(row[j]) - top)
    return math.log(total) + top - np.float64(row[target])


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
