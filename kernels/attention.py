"""Causal multi-head attention of new queries over a key/value cache (with left padding)."""

import numpy as np
from numba import prange

from .activations import exp_f64
from .jit import jit
from .threads import apply_num_threads
from .tiles import (
    FAST as _FAST,  # vectorised dot products; exp_f64 keeps its own strict flags
)
from .tiles import LANES, NR, broadcast_chains, dot_3x4


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


# --- packed attention: many sequences in one array of tokens, each attending to its own -------------------


@jit(parallel=True, fastmath=_FAST)
def _packed_attention(qkv, offsets, scale, out):
    """One task per (head, segment). Tasks are numbered head by head, so the even split of a parallel loop
    gives each thread its share of the heads of every segment, however unequal the segments' lengths."""
    n_segments = offsets.shape[0] - 1
    heads, dim = qkv.shape[2], qkv.shape[3]
    for task in prange(heads * n_segments):
        h = task // n_segments
        s = task % n_segments
        first = offsets[s]
        count = offsets[s + 1] - first
        if count == 0:
            continue
        keys_t = _transposed(qkv[first : first + count, 1, h], 0, count)  # [D, count]
        values_t = _transposed(qkv[first : first + count, 2, h], 0, count)
        queries = np.ascontiguousarray(qkv[first : first + count, 0, h])  # [count, D]
        weights = np.empty((_QUERY_BLOCK, count), np.float32)
        block = np.empty((_QUERY_BLOCK, dim), np.float32)
        for t0 in range(0, count, _QUERY_BLOCK):
            n_rows = min(_QUERY_BLOCK, count - t0)
            _attend_block(queries, t0, n_rows, 0, keys_t, values_t, 0, scale, weights, block)
            out[first + t0 : first + t0 + n_rows, h * dim : (h + 1) * dim] = block[:n_rows]


def packed_attention(qkv: np.ndarray, offsets: np.ndarray, scale: float, out: np.ndarray | None = None) -> np.ndarray:
    """Causal multi-head attention within each of several sequences packed into one array of tokens.

    qkv [N, 3, H, D] float32: each token's query, key and value (one head per h). offsets [S + 1] int64,
    0 = offsets[0] <= offsets[1] <= ... <= offsets[S] = N: sequence s is tokens offsets[s] .. offsets[s+1]-1,
    and token t of it attends to the sequence's tokens 0..t with softmax(scale * q.k). out [N, H*D] float32
    (head h in columns h*D:(h+1)*D); None allocates. All arrays C-contiguous. A sequence's output is the same
    bits whatever is packed beside it, and for two tokens or more the bits ``attention`` gives it as a prompt
    alone (the same arithmetic, in the same order).
    Returns out.

    Checks none of this: a caller passing arrays it did not build calls ``checks.packed_attention`` first."""
    apply_num_threads()
    n_tokens, _, heads, dim = qkv.shape
    if out is None:
        out = np.empty((n_tokens, heads * dim), np.float32)
    if n_tokens:
        _packed_attention(qkv, offsets, np.float32(scale), out)
    return out


# --- paged attention: queries of any sequences over a pool of key/value blocks ----------------------------
#
# Batch invariance: each query's output must be the same bits whatever else shares the call, so its arithmetic
# is a fixed function of its own query, keys and values. Every sum runs in the order written (no `reassoc`:
# LLVM may otherwise reassociate two loops written alike in two different ways), and no sum runs across
# vector lanes: scores are chains over d, one lane per key (the pool stores keys transposed for this); the
# weighted values are chains over keys, one lane per d. Multiply-adds are still fused (`contract`): whether
# an accumulation step is a fused multiply-add depends only on the expression, so it is the same in a
# vectorised loop, its scalar remainder and every function below that writes the same step.
_EXACT = {"contract"}
_SHARED_QUERIES = 4  # queries of one sequence that share each load of a key or value


@jit(fastmath=_EXACT)
def _block_scores_1(query, keys_t, scale, scores):
    """scores[j] = scale * (query . keys_t[:, j]) for every slot j of one block; the dot product is the
    chain s = s + query[d] * key[d] over d = 0, 1, ..., four dimensions per pass over the slots."""
    dim, slots = keys_t.shape
    scores[:] = 0.0
    d = 0
    while d + 4 <= dim:
        a0, a1, a2, a3 = query[d], query[d + 1], query[d + 2], query[d + 3]
        k0, k1, k2, k3 = keys_t[d], keys_t[d + 1], keys_t[d + 2], keys_t[d + 3]
        for j in range(slots):
            scores[j] = scores[j] + a0 * k0[j] + a1 * k1[j] + a2 * k2[j] + a3 * k3[j]
        d += 4
    while d < dim:
        a0 = query[d]
        k0 = keys_t[d]
        for j in range(slots):
            scores[j] = scores[j] + a0 * k0[j]
        d += 1
    for j in range(slots):
        scores[j] = scores[j] * scale


@jit(fastmath=_EXACT)
def _block_scores_4(q0, q1, q2, q3, keys_t, scale, s0, s1, s2, s3):
    """``_block_scores_1`` for four queries at once (each key load serves all four): each query's scores are
    the same chains, in the same order, as ``_block_scores_1`` computes for it alone."""
    dim, slots = keys_t.shape
    s0[:] = 0.0
    s1[:] = 0.0
    s2[:] = 0.0
    s3[:] = 0.0
    d = 0
    while d + 4 <= dim:
        a0, a1, a2, a3 = q0[d], q0[d + 1], q0[d + 2], q0[d + 3]
        b0, b1, b2, b3 = q1[d], q1[d + 1], q1[d + 2], q1[d + 3]
        c0, c1, c2, c3 = q2[d], q2[d + 1], q2[d + 2], q2[d + 3]
        e0, e1, e2, e3 = q3[d], q3[d + 1], q3[d + 2], q3[d + 3]
        k0, k1, k2, k3 = keys_t[d], keys_t[d + 1], keys_t[d + 2], keys_t[d + 3]
        for j in range(slots):
            x0, x1, x2, x3 = k0[j], k1[j], k2[j], k3[j]
            s0[j] = s0[j] + a0 * x0 + a1 * x1 + a2 * x2 + a3 * x3
            s1[j] = s1[j] + b0 * x0 + b1 * x1 + b2 * x2 + b3 * x3
            s2[j] = s2[j] + c0 * x0 + c1 * x1 + c2 * x2 + c3 * x3
            s3[j] = s3[j] + e0 * x0 + e1 * x1 + e2 * x2 + e3 * x3
        d += 4
    while d < dim:
        a0, b0, c0, e0 = q0[d], q1[d], q2[d], q3[d]
        k0 = keys_t[d]
        for j in range(slots):
            x0 = k0[j]
            s0[j] = s0[j] + a0 * x0
            s1[j] = s1[j] + b0 * x0
            s2[j] = s2[j] + c0 * x0
            s3[j] = s3[j] + e0 * x0
        d += 1
    for j in range(slots):
        s0[j] = s0[j] * scale
        s1[j] = s1[j] * scale
        s2[j] = s2[j] * scale
        s3[j] = s3[j] * scale


@jit(fastmath=_EXACT)
def _softmax_weights(weights, count):
    """weights[:count] = float32(exp(s - max s)) for the scores s in weights[:count] (count >= 1); returns
    their sum in float64, added in a fixed order (four running sums, then the remainder)."""
    m0 = m1 = m2 = m3 = weights[0]  # the maximum is exact in any order; four chains only for speed
    j = 0
    while j + 4 <= count:
        m0 = max(m0, weights[j])
        m1 = max(m1, weights[j + 1])
        m2 = max(m2, weights[j + 2])
        m3 = max(m3, weights[j + 3])
        j += 4
    while j < count:
        m0 = max(m0, weights[j])
        j += 1
    top = np.float64(max(max(m0, m1), max(m2, m3)))
    for j in range(count):
        weights[j] = np.float32(exp_f64(np.float64(weights[j]) - top))
    p0 = p1 = p2 = p3 = 0.0
    j = 0
    while j + 4 <= count:
        p0 += np.float64(weights[j])
        p1 += np.float64(weights[j + 1])
        p2 += np.float64(weights[j + 2])
        p3 += np.float64(weights[j + 3])
        j += 4
    total = (p0 + p1) + (p2 + p3)
    while j < count:
        total += np.float64(weights[j])
        j += 1
    return total


# The multiply-add chains above, run as register tiles (tiles.broadcast_chains) where the shapes allow: scores
# over chunks of 16 slots of transposed keys (blocks whose size is a multiple of 16), weighted sums over chunks of
# 64 or 16 dimensions of the value rows. The chains are the same, each lane's in the same order, so a query's
# result is the same bits on either path; the tiles only run several chains side by side.
_CHUNK = 2 * LANES  # slots (or dimensions) per two-vector chunk
_WIDE = 8 * LANES  # dimensions of a value row in one eight-vector chunk
_scores_of_4_chunks = broadcast_chains(1, 4, 2)  # one query, four chunks of keys: 8 chains
_chains_2 = broadcast_chains(1, 1, 2)  # one query, one chunk of keys or of value dimensions
_values_wide = broadcast_chains(1, 1, 8)  # one query, 64 dimensions of the value rows: 8 chains
_chains_of_4_queries = broadcast_chains(4, 1, 2)  # four queries, one chunk: 8 chains


@jit(fastmath=_EXACT)
def _scores_1(q, t, head, k_pool, blocks, n_blocks, scale, scores):
    """scores[0, p] = scale * (q[t, head * D : (head + 1) * D] . key p) for every slot p of the blocks
    blocks[:n_blocks] (q [T, H * D], scores [1, >= n_blocks * BS]): the chains of ``_block_scores_1``."""
    slots = k_pool.shape[3]
    dim = k_pool.shape[2]
    if slots % _CHUNK:
        for i in range(n_blocks):
            _block_scores_1(q[t, head * dim : (head + 1) * dim], k_pool[blocks[i], head], scale,
                            scores[0, i * slots : (i + 1) * slots])
        return
    per_block = slots // _CHUNK
    n_chunks = n_blocks * per_block
    row = scores[0]
    for j in range(n_chunks * _CHUNK):
        row[j] = 0.0
    c = 0
    while c + 4 <= n_chunks:
        b0, b1, b2, b3 = c // per_block, (c + 1) // per_block, (c + 2) // per_block, (c + 3) // per_block
        _scores_of_4_chunks(
            q, (t,), head * dim, dim,
            (k_pool[blocks[b0], head], k_pool[blocks[b1], head], k_pool[blocks[b2], head], k_pool[blocks[b3], head]),
            ((c - b0 * per_block) * _CHUNK, (c + 1 - b1 * per_block) * _CHUNK, (c + 2 - b2 * per_block) * _CHUNK,
             (c + 3 - b3 * per_block) * _CHUNK),
            scores, (0,), (c * _CHUNK, (c + 1) * _CHUNK, (c + 2) * _CHUNK, (c + 3) * _CHUNK))
        c += 4
    while c < n_chunks:
        b = c // per_block
        _chains_2(q, (t,), head * dim, dim, (k_pool[blocks[b], head],), ((c - b * per_block) * _CHUNK,), scores,
                  (0,), (c * _CHUNK,))
        c += 1
    for j in range(n_chunks * _CHUNK):
        row[j] = row[j] * scale


@jit(fastmath=_EXACT)
def _scores_4(q, t0, head, k_pool, blocks, n_blocks, scale, scores):
    """``_scores_1`` for the four queries t0..t0+3 into scores[0..3], each key load serving all four."""
    slots = k_pool.shape[3]
    dim = k_pool.shape[2]
    if slots % _CHUNK:
        for i in range(n_blocks):
            cut = slice(i * slots, (i + 1) * slots)
            _block_scores_4(q[t0, head * dim : (head + 1) * dim], q[t0 + 1, head * dim : (head + 1) * dim],
                            q[t0 + 2, head * dim : (head + 1) * dim], q[t0 + 3, head * dim : (head + 1) * dim],
                            k_pool[blocks[i], head], scale, scores[0, cut], scores[1, cut], scores[2, cut],
                            scores[3, cut])
        return
    per_block = slots // _CHUNK
    end = n_blocks * slots
    for r in range(4):
        for j in range(end):
            scores[r, j] = 0.0
    for c in range(n_blocks * per_block):
        b = c // per_block
        _chains_of_4_queries(q, (t0, t0 + 1, t0 + 2, t0 + 3), head * dim, dim, (k_pool[blocks[b], head],),
                             ((c - b * per_block) * _CHUNK,), scores, (0, 1, 2, 3), (c * _CHUNK,))
    for r in range(4):
        for j in range(end):
            scores[r, j] = scores[r, j] * scale


@jit(fastmath=_EXACT)
def _add_values(weights, r, j0, values, first, n, out, t, col0):
    """out[t, col0 + d] = fmuladd(weights[r, j0 + j], values[j, d], ...) chained over the value rows j = first ..
    first + n - 1 of one block (values [BS, D]; j0: the block's first slot in weights) for every d."""
    dim = values.shape[1]
    at = first * dim  # values[first, 0], as an offset from the block's start
    d = 0
    while d + _WIDE <= dim:
        _values_wide(weights, (r,), j0 + first, n, (values,), (at + d,), out, (t,), (col0 + d,))
        d += _WIDE
    while d + _CHUNK <= dim:
        _chains_2(weights, (r,), j0 + first, n, (values,), (at + d,), out, (t,), (col0 + d,))
        d += _CHUNK
    if d < dim:
        row = out[t]
        for j in range(first, first + n):
            w = weights[r, j0 + j]
            v = values[j]
            for e in range(d, dim):
                row[col0 + e] = row[col0 + e] + w * v[e]


@jit(fastmath=_EXACT)
def _add_values_4(weights, j0, n, values, out, t0, col0):
    """``_add_values`` (first 0) for the four queries t0..t0+3 (weights rows 0..3), each value load serving
    all four."""
    dim = values.shape[1]
    d = 0
    while d + _CHUNK <= dim:
        _chains_of_4_queries(weights, (0, 1, 2, 3), j0, n, (values,), (d,), out, (t0, t0 + 1, t0 + 2, t0 + 3),
                             (col0 + d,))
        d += _CHUNK
    if d < dim:
        for r in range(4):
            row = out[t0 + r]
            for j in range(n):
                w = weights[r, j0 + j]
                v = values[j]
                for e in range(d, dim):
                    row[col0 + e] = row[col0 + e] + w * v[e]


@jit(fastmath=_EXACT)
def _finish(acc, total):
    """acc *= 1 / total, rounded to float32 once."""
    inv_total = np.float32(1.0 / total)
    for d in range(acc.shape[0]):
        acc[d] = acc[d] * inv_total


@jit(fastmath=_EXACT)
def _paged_attend_1(q, t, k_pool, v_pool, blocks, pos, head, scale, scores, out):
    """out[t, head's columns] = softmax(scale * q . keys[0..pos]) @ values[0..pos] of one head for query t
    (q [T, H * D]), the keys and values of positions 0..pos in the pool blocks ``blocks`` (position p: slot
    p % BS of block blocks[p // BS]); scores is scratch [1, >= (pos // BS + 1) * BS]."""
    slots = k_pool.shape[3]
    dim = k_pool.shape[2]
    n_blocks = pos // slots + 1
    _scores_1(q, t, head, k_pool, blocks, n_blocks, scale, scores)
    count = pos + 1
    total = _softmax_weights(scores[0], count)
    row = out[t, head * dim : (head + 1) * dim]
    row[:] = 0.0
    for i in range(n_blocks):
        _add_values(scores, 0, i * slots, v_pool[blocks[i], head], 0, min(slots, count - i * slots), out, t,
                    head * dim)
    _finish(row, total)


@jit(fastmath=_EXACT)
def _paged_attend_4(q, t0, k_pool, v_pool, blocks, token_pos, head, scale, scores, out):
    """``_paged_attend_1`` for the four queries t0..t0+3 of one sequence (any positions), sharing each load
    of a key or value between them; scores is scratch [4, >= (max position // BS + 1) * BS]."""
    slots = k_pool.shape[3]
    dim = k_pool.shape[2]
    last = max(max(token_pos[t0], token_pos[t0 + 1]), max(token_pos[t0 + 2], token_pos[t0 + 3]))
    n_blocks = last // slots + 1
    _scores_4(q, t0, head, k_pool, blocks, n_blocks, scale, scores)
    col0 = head * dim
    counts = (token_pos[t0] + 1, token_pos[t0 + 1] + 1, token_pos[t0 + 2] + 1, token_pos[t0 + 3] + 1)
    totals = (_softmax_weights(scores[0], counts[0]), _softmax_weights(scores[1], counts[1]),
              _softmax_weights(scores[2], counts[2]), _softmax_weights(scores[3], counts[3]))
    for r in range(4):
        out[t0 + r, col0 : col0 + dim] = 0.0
    shared = min(min(counts[0], counts[1]), min(counts[2], counts[3]))  # keys every one of the four attends
    for i in range(n_blocks):
        values = v_pool[blocks[i], head]
        start = i * slots
        together = max(0, min(slots, shared - start))
        if together > 0:
            _add_values_4(scores, start, together, values, out, t0, col0)
        # the keys past the shared ones, query by query: the same chains, continued
        for r in range(4):
            rest = max(0, min(slots, counts[r] - start)) - together
            if rest > 0:
                _add_values(scores, r, start, values, together, rest, out, t0 + r, col0)
    for r in range(4):
        _finish(out[t0 + r, col0 : col0 + dim], totals[r])


@jit()
def _query_groups(token_seq):
    """Starts of the runs of up to four consecutive queries of one sequence, plus len(token_seq) at the end."""
    n_tokens = token_seq.shape[0]
    starts = np.empty(n_tokens + 1, np.int64)
    n_groups = 0
    t = 0
    while t < n_tokens:
        starts[n_groups] = t
        n_groups += 1
        end = t + 1
        while end < n_tokens and end - t < _SHARED_QUERIES and token_seq[end] == token_seq[t]:
            end += 1
        t = end
    starts[n_groups] = n_tokens
    return starts[: n_groups + 1]


@jit(parallel=True, fastmath=_EXACT)
def _paged_attention(q, k_pool, v_pool, tables, token_seq, token_pos, scale, n_workers, out):
    """Tasks are (head, group of queries) pairs, head-major (the queries of one sequence and head, which read
    the same keys and values, run close together in time); worker w takes tasks w, w + n_workers, ..., so
    both workers get early and late (cheap and costly) queries of a prompt alike."""
    n_tokens, heads, dim = q.shape
    slots = k_pool.shape[3]
    rows = q.reshape((n_tokens, heads * dim))
    starts = _query_groups(token_seq)
    n_groups = starts.shape[0] - 1
    n_tasks = heads * n_groups
    for w in prange(n_workers):
        for task in range(w, n_tasks, n_workers):
            head = task // n_groups
            g = task % n_groups
            t0 = starts[g]
            size = starts[g + 1] - t0
            blocks = tables[token_seq[t0]]
            if size == _SHARED_QUERIES:
                last = max(max(token_pos[t0], token_pos[t0 + 1]), max(token_pos[t0 + 2], token_pos[t0 + 3]))
                scores = np.empty((_SHARED_QUERIES, (last // slots + 1) * slots), np.float32)
                _paged_attend_4(rows, t0, k_pool, v_pool, blocks, token_pos, head, scale, scores, out)
            else:
                for t in range(t0, t0 + size):
                    pos = token_pos[t]
                    scores = np.empty((1, (pos // slots + 1) * slots), np.float32)
                    _paged_attend_1(rows, t, k_pool, v_pool, blocks, pos, head, scale, scores, out)


def paged_attention(
    q: np.ndarray,
    k_pool: np.ndarray,
    v_pool: np.ndarray,
    tables: np.ndarray,
    token_seq: np.ndarray,
    token_pos: np.ndarray,
    scale: float,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Causal multi-head attention of T queries, of any sequences in any order, over a pool of key/value
    blocks; each query's output is the same bits whatever other queries share the call and however many
    threads run it.

    q [T, H, D] float32: the queries.
    k_pool [n_blocks, H, D, BS] float32: keys, transposed within each block (k_pool[b, h, :, s] is the key
    in slot s of block b). v_pool [n_blocks, H, BS, D] float32: values, one row per slot.
    tables [S, max_blocks] int32: the block ids of each sequence in position order; position p of sequence
    s is slot p % BS of block tables[s, p // BS].
    token_seq [T] int32: each query's sequence (row of tables); token_pos [T] int32: its position. Query t
    attends positions 0 .. token_pos[t] of its sequence inclusive (all written to the pool) with
    softmax(scale * q.k). out [T, H*D] float32 (head h in columns h*D:(h+1)*D); None allocates. All arrays
    C-contiguous. Returns out.

    Checks none of this: a caller passing arrays it did not build calls ``checks.paged_attention`` first."""
    n_workers = apply_num_threads()
    n_tokens, heads, dim = q.shape
    if out is None:
        out = np.empty((n_tokens, heads * dim), np.float32)
    if out.size == 0:
        return out
    _paged_attention(q, k_pool, v_pool, tables, token_seq, token_pos, np.float32(scale), n_workers, out)
    return out
