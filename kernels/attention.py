"""Causal multi-head attention: ``attention`` over a contiguous key/value cache (with left padding),
``packed_attention`` within sequences packed into one array of tokens (scoring), ``paged_attention`` over a pool
of key/value blocks (the engine).

A prompt's queries take the same arithmetic on all three: each score is one chain of fused multiply-adds over
the head's dimensions, each weighted sum of values one chain over the keys, in position order, and the softmax
is ``_softmax_weights``. So a prompt's attention is the same bits whichever entry point computes it, and
whatever else shares the call. A single new query on a contiguous cache (``attention``'s decode) is the
exception: it sums with vectorised reductions (``_attend_one``) and differs in the last bits.
"""

import numpy as np
from numba import prange

from .activations import exp_f64
from .gemm import TILE_COLS, TILE_ROWS, broadcast_tile
from .jit import jit
from .threads import apply_num_threads
from .tiles import (
    FAST as _FAST,  # vectorised dot products; exp_f64 keeps its own strict flags
)
from .tiles import LANES, broadcast_chains


# --- decode on a contiguous cache: one query per row -------------------------------------------------------


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


# --- the exact chains: every prompt's arithmetic -----------------------------------------------------------
#
# Batch invariance: each query's output must be the same bits whatever else shares the call, so its arithmetic
# is a fixed function of its own query, keys and values. Every sum runs in the order written (no `reassoc`:
# LLVM may otherwise reassociate two loops written alike in two different ways), and no sum runs across
# vector lanes: scores are chains over d, one lane per key (keys are stored or copied transposed for this); the
# weighted values are chains over keys, one lane per d. Multiply-adds are still fused (`contract`): whether
# an accumulation step is a fused multiply-add depends only on the expression, so it is the same in a
# vectorised loop, its scalar remainder and every function below that writes the same step.
_EXACT = {"contract"}


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


@jit(fastmath=_EXACT)
def _finish(acc, total):
    """acc *= 1 / total, rounded to float32 once."""
    inv_total = np.float32(1.0 / total)
    for d in range(acc.shape[0]):
        acc[d] = acc[d] * inv_total


# Prompts on a contiguous cache, and packed sequences, run those chains as the GEMM's register tiles
# (gemm.broadcast_tile): 6 queries by 16 keys for the scores, 6 queries by 16 value dimensions for the weighted
# sums, each over a copy of the head's keys and values laid out as the tile reads its weights (16 lanes wide,
# k-major). Queries in a tile attend different numbers of keys: the tile takes the keys all six attend, and each
# query continues its own chains over the rest.


@jit()
def _blocked_keys(keys, first, count):
    """keys[first : first+count] ([S, D], rows may be strided) as [ceil(count / 16), D * 16]: block b holds keys
    16b .. 16b+15 transposed, element d * 16 + c = key 16b + c's dimension d; zeros past count."""
    dim = keys.shape[1]
    out = np.zeros(((count + TILE_COLS - 1) // TILE_COLS, dim * TILE_COLS), np.float32)
    for j in range(count):
        key = keys[first + j]
        block = out[j // TILE_COLS]
        c = j % TILE_COLS
        for d in range(dim):
            block[d * TILE_COLS + c] = key[d]
    return out


@jit()
def _value_strips(values, first, count):
    """values[first : first+count] ([S, D]) as [ceil(D / 16), count * 16]: strip s holds dimensions 16s ..
    16s+15 of every value, element j * 16 + c = value j's dimension 16s + c; zeros past D."""
    dim = values.shape[1]
    out = np.zeros(((dim + TILE_COLS - 1) // TILE_COLS, count * TILE_COLS), np.float32)
    for j in range(count):
        value = values[first + j]
        for d in range(dim):
            out[d // TILE_COLS, j * TILE_COLS + d % TILE_COLS] = value[d]
    return out


@jit(fastmath=_EXACT)
def _attend_rows(queries, i, n_rows, offset, keys, strips, scale, scores, block):
    """block[r, :D] = softmax(scale * q . keys) @ values for the n_rows (1..6) queries i .. i+n_rows-1 of
    queries [T, D], query i + r attending keys 0 .. offset + i + r (none when that is negative: zeros).

    keys from ``_blocked_keys``, strips from ``_value_strips`` (covering every key the last query attends);
    scores [6, >= the keys rounded up to 16] and block [6, >= D rounded up to 16] are scratch."""
    dim = queries.shape[1]
    last = i + n_rows - 1
    tile = (0, 1, 2, 3, 4, 5)
    for r in range(TILE_ROWS):
        for d in range(strips.shape[0] * TILE_COLS):
            block[r, d] = 0.0
    span = offset + last + 1  # keys the last query attends
    if span <= 0:
        return
    n_chunks = (span + TILE_COLS - 1) // TILE_COLS
    for r in range(TILE_ROWS):
        for j in range(n_chunks * TILE_COLS):
            scores[r, j] = 0.0
    rows = (i, min(i + 1, last), min(i + 2, last), min(i + 3, last), min(i + 4, last), min(i + 5, last))
    for b in range(n_chunks):
        broadcast_tile(queries, rows, 0, dim, keys[b], scores, tile, b * TILE_COLS)
    totals = np.zeros(TILE_ROWS)
    for r in range(n_rows):
        count = offset + i + r + 1
        if count > 0:
            for j in range(count):
                scores[r, j] = scores[r, j] * scale
            totals[r] = _softmax_weights(scores[r], count)
    shared = max(offset + i + 1, 0)  # keys every query of the tile attends
    if shared > 0:
        weight_rows = (0, min(1, n_rows - 1), min(2, n_rows - 1), min(3, n_rows - 1), min(4, n_rows - 1),
                       min(5, n_rows - 1))
        for s in range(strips.shape[0]):
            broadcast_tile(scores, weight_rows, 0, shared, strips[s], block, tile, s * TILE_COLS)
    for r in range(n_rows):  # each query's chains over its keys past the shared ones
        for j in range(shared, offset + i + r + 1):
            w = scores[r, j]
            for s in range(strips.shape[0]):
                strip = strips[s]
                for c in range(TILE_COLS):
                    block[r, s * TILE_COLS + c] = block[r, s * TILE_COLS + c] + w * strip[j * TILE_COLS + c]
        if offset + i + r >= 0:
            _finish(block[r, :dim], totals[r])


@jit(parallel=True, fastmath=_FAST)
def _attention(q, k_cache, v_cache, n_past, kv_start, scale, out):
    """One task per (row, head), reusing that head's keys/values from cache. A single new query (decode)
    is scored and mixed alone; several (a prompt) go six at a time through ``_attend_rows``."""
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
        keys_seen = max(n_past + steps - first, 0)
        blocked = _blocked_keys(keys, first, keys_seen)
        strips = _value_strips(values, first, keys_seen)
        queries = np.ascontiguousarray(q[b, :, h])  # [steps, dim]
        scores = np.empty((TILE_ROWS, blocked.shape[0] * TILE_COLS), np.float32)
        block = np.empty((TILE_ROWS, strips.shape[0] * TILE_COLS), np.float32)
        for t0 in range(0, steps, TILE_ROWS):
            n_rows = min(TILE_ROWS, steps - t0)
            # query t attends cache positions first .. n_past + t: keys 0 .. n_past - first + t of the copies
            _attend_rows(queries, t0, n_rows, n_past - first, blocked, strips, scale, scores, block)
            for r in range(n_rows):
                for d in range(dim):
                    out[b, t0 + r, h * dim + d] = block[r, d]


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
        segment = qkv[first : first + count]
        blocked = _blocked_keys(segment[:, 1, h], 0, count)
        strips = _value_strips(segment[:, 2, h], 0, count)
        queries = np.ascontiguousarray(segment[:, 0, h])  # [count, D]
        scores = np.empty((TILE_ROWS, blocked.shape[0] * TILE_COLS), np.float32)
        block = np.empty((TILE_ROWS, strips.shape[0] * TILE_COLS), np.float32)
        for t0 in range(0, count, TILE_ROWS):
            n_rows = min(TILE_ROWS, count - t0)
            _attend_rows(queries, t0, n_rows, 0, blocked, strips, scale, scores, block)
            for r in range(n_rows):
                for d in range(dim):
                    out[first + t0 + r, h * dim + d] = block[r, d]


def packed_attention(qkv: np.ndarray, offsets: np.ndarray, scale: float, out: np.ndarray | None = None) -> np.ndarray:
    """Causal multi-head attention within each of several sequences packed into one array of tokens.

    qkv [N, 3, H, D] float32: each token's query, key and value (one head per h). offsets [S + 1] int64,
    0 = offsets[0] <= offsets[1] <= ... <= offsets[S] = N: sequence s is tokens offsets[s] .. offsets[s+1]-1,
    and token t of it attends to the sequence's tokens 0..t with softmax(scale * q.k). out [N, H*D] float32
    (head h in columns h*D:(h+1)*D); None allocates. All arrays C-contiguous. A sequence's output is the same
    bits whatever is packed beside it: the bits ``paged_attention`` gives its queries, and for two tokens or
    more those ``attention`` gives it as a prompt alone (the same chains, in the same order).
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


# The paged chains (``_block_scores_1`` and the weighted sums), run as register tiles (tiles.broadcast_chains) where the shapes allow: scores
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
