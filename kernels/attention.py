"""Causal multi-head attention of new queries over a key/value cache (with left padding)."""

import numpy as np
from numba import prange

from .activations import exp_f64
from .jit import jit
from .threads import apply_num_threads
from .tiles import (
    FAST as _FAST,  # vectorised dot products; exp_f64 keeps its own strict flags
)
from .tiles import NR, dot_3x4


@jit(fastmath=_FAST)
def _scores(query, keys, first, count, scale, scores):
    """scores[j] = scale * query . keys[first+j] for j < count; returns their max.
    Four keys per pass share each load of the query."""
    dim = query.shape[0]
    j = 0
    while j + 4 <= count:
        s0 = s1 = s2 = s3 = np.float32(0.0)
        for d in range(dim):
            x = query[d]
            s0 += x * keys[first + j, d]
            s1 += x * keys[first + j + 1, d]
            s2 += x * keys[first + j + 2, d]
            s3 += x * keys[first + j + 3, d]
        scores[j] = s0 * scale
        scores[j + 1] = s1 * scale
        scores[j + 2] = s2 * scale
        scores[j + 3] = s3 * scale
        j += 4
    while j < count:
        s = np.float32(0.0)
        for d in range(dim):
            s += query[d] * keys[first + j, d]
        scores[j] = s * scale
        j += 1
    return scores[:count].max()


@jit(fastmath=_FAST)
def _weighted_values(p, values, first, count, out_row):
    """out_row = sum_j p[j] * values[first+j] for j < count; four values per pass over out_row."""
    out_row[:] = 0.0
    j = 0
    while j + 4 <= count:
        p0 = p[j]
        p1 = p[j + 1]
        p2 = p[j + 2]
        p3 = p[j + 3]
        for d in range(out_row.shape[0]):
            out_row[d] += (p0 * values[first + j, d] + p1 * values[first + j + 1, d]) + (
                p2 * values[first + j + 2, d] + p3 * values[first + j + 3, d]
            )
        j += 4
    while j < count:
        for d in range(out_row.shape[0]):
            out_row[d] += p[j] * values[first + j, d]
        j += 1


@jit(fastmath=_FAST)
def _block_scores(queries, rows, keys_t, span, scale, scores):
    """scores[i, j] = scale * queries[rows[i]] . keys_t[:, j] for the four query rows ``rows``, j < span.

    keys_t is [D, keys], the keys transposed. Each pass streams four of its rows (four dimensions of
    every key) once through the four score rows, which stay in L1: 16 multiply-adds per 4 loads, no
    horizontal sums. (3x4 tiles of D-long dot products spent as long on their final sums as on the
    products: D is only 64.)"""
    dim = keys_t.shape[0]
    s0, s1, s2, s3 = scores[0, :span], scores[1, :span], scores[2, :span], scores[3, :span]
    q0, q1, q2, q3 = queries[rows[0]], queries[rows[1]], queries[rows[2]], queries[rows[3]]
    s0[:] = 0.0
    s1[:] = 0.0
    s2[:] = 0.0
    s3[:] = 0.0
    d = 0
    while d < dim:
        n = min(4, dim - d)  # 4 dimensions per pass; the tail (D % 4) repeats one with a zero weight
        k0, k1, k2, k3 = keys_t[d], keys_t[d + min(1, n - 1)], keys_t[d + min(2, n - 1)], keys_t[d + n - 1]
        a0, a1, a2, a3 = _pass_weights(q0, d, n)
        b0, b1, b2, b3 = _pass_weights(q1, d, n)
        c0, c1, c2, c3 = _pass_weights(q2, d, n)
        e0, e1, e2, e3 = _pass_weights(q3, d, n)
        for j in range(span):
            x0, x1, x2, x3 = k0[j], k1[j], k2[j], k3[j]
            s0[j] = s0[j] + a0 * x0 + a1 * x1 + a2 * x2 + a3 * x3  # a chain of 4 fused multiply-adds
            s1[j] = s1[j] + b0 * x0 + b1 * x1 + b2 * x2 + b3 * x3
            s2[j] = s2[j] + c0 * x0 + c1 * x1 + c2 * x2 + c3 * x3
            s3[j] = s3[j] + e0 * x0 + e1 * x1 + e2 * x2 + e3 * x3
        d += n
    for j in range(span):
        s0[j] *= scale
        s1[j] *= scale
        s2[j] *= scale
        s3[j] *= scale


# Inlined: called four times per pass of _block_scores, where a call costs more than the loads it makes.
@jit(inline="always")
def _pass_weights(query, d, n):
    """query[d : d+4], with zeros past the n (1..4) dimensions that remain."""
    zero = np.float32(0.0)
    return (query[d], query[d + 1] if n > 1 else zero, query[d + 2] if n > 2 else zero,
            query[d + 3] if n > 3 else zero)


@jit(fastmath=_FAST)
def _softmax_numerators(weights, count):
    """weights[:count] = exp(s - max s) for the scores s in weights[:count] (count >= 1); returns their sum
    (the softmax denominator)."""
    top = np.float64(weights[:count].max())
    total = 0.0
    for j in range(count):
        e = exp_f64(np.float64(weights[j]) - top)
        weights[j] = e
        total += e
    return total


@jit(fastmath=_FAST)
def _attend_one(query, keys, values, first, last, scale, weights, out_row):
    """out_row = softmax(scale * query . keys[first..last]) @ values[first..last] (inclusive, non-empty).
    query [D], keys/values [S, D]; weights: scratch of length >= last - first + 1."""
    count = last - first + 1
    _scores(query, keys, first, count, scale, weights)
    total = _softmax_numerators(weights, count)
    _weighted_values(weights, values, first, count, out_row)
    inv_total = np.float32(1.0 / total)
    for d in range(out_row.shape[0]):
        out_row[d] *= inv_total


@jit(fastmath=_FAST)
def _attend_block(queries, t0, n_rows, n_past, keys_t, values_t, first, scale, weights, out_rows):
    """Queries t0 .. t0+n_rows-1 (n_rows <= 4, at positions n_past + t) of one head at once.

    keys_t and values_t are the head's keys and values from position ``first`` on, transposed ([D, keys]).
    The four queries' scores fill the rows of ``weights`` (``_block_scores``); each becomes its query's
    softmax weights, zero past its own last key. The weighted sums of values are 3x4 tiles of dot products
    of three rows of ``values_t`` with the four rows of ``weights``: one load of a transposed value serves
    four queries. out_rows[r, :] gets query t0+r's output (zeros if it has no valid key)."""
    span = n_past + t0 + n_rows - first  # keys first .. the block's last query's own position
    dim = values_t.shape[0]
    last = t0 + n_rows - 1
    rows = (t0, min(t0 + 1, last), min(t0 + 2, last), min(t0 + 3, last))
    _block_scores(queries, rows, keys_t, span, scale, weights)
    for r in range(n_rows):
        count = n_past + t0 + r - first + 1
        if count < 1:  # the query sits in the left padding: no valid key, zero output
            weights[r, :span] = 0.0
        else:
            inv_total = np.float32(1.0 / _softmax_numerators(weights[r], count))
            for j in range(count):
                weights[r, j] *= inv_total
            weights[r, count:span] = 0.0
    weights[n_rows:, :span] = 0.0  # rows past the block's queries: their sums are computed, not kept
    for d in range(0, dim, 3):
        sums = dot_3x4(values_t, d, min(d + 1, dim - 1), min(d + 2, dim - 1), weights, 0, 1, 2, 3, span)
        for c in range(min(3, dim - d)):
            for r in range(n_rows):
                out_rows[r, d + c] = sums[c * NR + r]


@jit()
def _transposed(rows, first, count):
    """rows[first : first+count].T as a new C-contiguous [D, count] array, eight rows at a time (each pass then
    writes D runs of 8 neighbouring floats, not D scattered ones)."""
    dim = rows.shape[1]
    out = np.empty((dim, count), np.float32)
    for j0 in range(0, count, 8):
        for d in range(dim):
            for j in range(j0, min(count, j0 + 8)):
                out[d, j] = rows[first + j, d]
    return out


_QUERY_BLOCK = NR  # queries per block: the four columns of a value tile


@jit(parallel=True, fastmath=_FAST)
def _attention(q, k_cache, v_cache, n_past, kv_start, scale, out):
    """One task per (row, head), reusing that head's keys/values from cache. A single new query (decode)
    is scored and mixed alone; several (a prompt) go four at a time through ``_attend_block``."""
    batch, steps, heads, dim = q.shape
    for bh in prange(batch * heads):
        b = bh // heads
        h = bh % heads
        first = kv_start[b]
        keys = k_cache[b, h]
        values = v_cache[b, h]
        if steps == 1:
            out_row = out[b, 0, h * dim : (h + 1) * dim]
            if n_past < first:  # the query sits in the left padding: no valid key
                out_row[:] = 0.0
            else:
                weights = np.empty(n_past + 1 - first, np.float32)
                _attend_one(q[b, 0, h], keys, values, first, n_past, scale, weights, out_row)
            continue
        out_head = out[b, :, h * dim : (h + 1) * dim]  # [steps, dim]
        keys_seen = max(n_past + steps - first, 0)
        keys_t = _transposed(keys, first, keys_seen)
        values_t = _transposed(values, first, keys_seen)
        queries = np.ascontiguousarray(q[b, :, h])  # [steps, dim]
        weights = np.empty((_QUERY_BLOCK, keys_seen), np.float32)
        block = np.empty((_QUERY_BLOCK, dim), np.float32)
        for t0 in range(0, steps, _QUERY_BLOCK):
            n_rows = min(_QUERY_BLOCK, steps - t0)
            if n_past + t0 + n_rows - 1 < first:  # the whole block is left padding
                out_head[t0 : t0 + n_rows, :] = 0.0
                continue
            _attend_block(queries, t0, n_rows, n_past, keys_t, values_t, first, scale, weights, block)
            out_head[t0 : t0 + n_rows, :] = block[:n_rows]


def attention(
    q: np.ndarray,
    k_cache: np.ndarray,
    v_cache: np.ndarray,
    n_past: int,
    kv_start: np.ndarray,
    scale: float,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Causal multi-head attention of T new queries over a KV cache.

    q [B, T, H, D] float32: queries of the new tokens, at cache positions n_past .. n_past+T-1.
    k_cache, v_cache [B, H, S, D] float32 with S >= n_past + T; positions < n_past + T are filled.
    kv_start [B] int64 >= 0: first valid key position of each row (left padding before it is masked).
    Query t of row b attends keys kv_start[b] .. n_past+t inclusive with softmax(scale * q.k); a query
    with no valid key outputs zeros. out [B, T, H*D] float32 (head h in columns h*D:(h+1)*D); None
    allocates. All arrays C-contiguous. Returns out.

    Checks none of this: a caller passing arrays it did not build calls ``checks.attention`` first."""
    apply_num_threads()
    batch, steps, heads, dim = q.shape
    if out is None:
        out = np.empty((batch, steps, heads * dim), np.float32)
    if out.size == 0:
        return out
    # int(): a NumPy unsigned n_past would turn Numba's index arithmetic into float64
    _attention(q, k_cache, v_cache, int(n_past), kv_start, np.float32(scale), out)
    return out
