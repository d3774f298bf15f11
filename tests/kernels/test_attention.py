"""attention against a straightforward float64 NumPy masked-softmax reference; paged_attention against a
float64 reference gathered from its pool, and bit for bit against itself whatever else shares the call."""

import numpy as np
import pytest

from checked import checked
from tinygpt.kernels import checks
from tinygpt.kernels import threads
from tinygpt.kernels.attention import attention as attention_kernel
from tinygpt.kernels.attention import packed_attention as packed_attention_kernel
from tinygpt.kernels.attention import paged_attention as paged_attention_kernel

attention = checked(attention_kernel)
paged_attention = checked(paged_attention_kernel)

U = 2.0**-24  # float32 unit roundoff


def reference(q, k_cache, v_cache, n_past, kv_start, scale):
    """Float64 attention, plus the error bound of a float32 evaluation (see test_matches_reference)."""
    batch, steps, heads, dim = q.shape
    out = np.zeros((batch, steps, heads * dim))
    bound = np.zeros_like(out)
    for b in range(batch):
        for t in range(steps):
            keys = slice(kv_start[b], n_past + t + 1)
            for h in range(heads):
                k = k_cache[b, h, keys].astype(np.float64)
                v = v_cache[b, h, keys].astype(np.float64)
                if len(k) == 0:
                    continue  # query in the padding: zeros
                qh = q[b, t, h].astype(np.float64)
                scores = scale * (k @ qh)
                p = np.exp(scores - scores.max())
                p /= p.sum()
                cols = slice(h * dim, (h + 1) * dim)
                out[b, t, cols] = p @ v
                # A float32 dot of D terms is off by gamma_(D+1) * scale * sum|q k| (+1: the scale multiply);
                # an error d in the scores changes each softmax weight by a factor within exp(+-2d); the
                # weights are stored in float32 (u), the weighted sum of L values rounds like any L-term
                # sum (gamma_L), and the final 1/total and its multiply round once each.
                d = (dim + 1) * U * abs(scale) * (np.abs(k) @ np.abs(qh)).max()
                bound[b, t, cols] = (np.expm1(2 * d) + (len(k) + 3) * U) * (p @ np.abs(v))
    return out, bound


def make_inputs(rng, batch, steps, heads, dim, capacity, n_past, kv_start):
    """Random q/k/v; cache entries that must not be read (masked padding, unfilled tail) are NaN."""
    q = rng.standard_normal((batch, steps, heads, dim), dtype=np.float32)
    k_cache = np.full((batch, heads, capacity, dim), np.nan, np.float32)
    v_cache = np.full((batch, heads, capacity, dim), np.nan, np.float32)
    for b in range(batch):
        filled = slice(kv_start[b], n_past + steps)
        k_cache[b, :, filled] = rng.standard_normal(k_cache[b, :, filled].shape, dtype=np.float32)
        v_cache[b, :, filled] = rng.standard_normal(v_cache[b, :, filled].shape, dtype=np.float32)
    return q, k_cache, v_cache


CASES = [
    # batch, steps, heads, dim, capacity, n_past, kv_start
    (1, 1, 1, 1, 1, 0, [0]),  # a single key
    (2, 1, 3, 5, 12, 9, [0, 4]),  # decode, odd H and D, a left-padded row
    (2, 6, 3, 7, 16, 4, [0, 7]),  # T > 1 after a prefix; row 1's first 3 queries sit in the padding
    (3, 17, 2, 64, 20, 0, [0, 3, 16]),  # prefill; row 2 has a single valid key for its last query
    (1, 130, 1, 65, 130, 0, [0]),  # long prefill: many 4-key groups plus remainders
    (2, 3, 2, 4, 8, 2, [5, 5]),  # every query of every row in the padding: all zeros
]


@pytest.mark.parametrize("batch, steps, heads, dim, capacity, n_past, kv_start", CASES)
def test_matches_reference(batch, steps, heads, dim, capacity, n_past, kv_start):
    rng = np.random.default_rng(batch * 1000 + steps * 10 + dim)
    kv_start = np.array(kv_start, np.int64)
    q, k_cache, v_cache = make_inputs(rng, batch, steps, heads, dim, capacity, n_past, kv_start)
    scale = 1.0 / np.sqrt(dim)
    got = attention(q, k_cache, v_cache, n_past, kv_start, scale)
    want, bound = reference(q, k_cache, v_cache, n_past, kv_start, scale)
    assert got.dtype == np.float32 and got.shape == (batch, steps, heads * dim)
    assert np.all(np.abs(got - want) <= bound)


def test_large_scores_are_stable():
    """Scores in the thousands would overflow exp without subtracting the maximum."""
    rng = np.random.default_rng(7)
    kv_start = np.zeros(1, np.int64)
    q, k_cache, v_cache = make_inputs(rng, 1, 4, 2, 8, 4, 0, kv_start)
    got = attention(q, k_cache, v_cache, 0, kv_start, 500.0)
    want, bound = reference(q, k_cache, v_cache, 0, kv_start, 500.0)
    assert np.all(np.isfinite(got))
    assert np.all(np.abs(got - want) <= bound)


def test_writes_into_out():
    rng = np.random.default_rng(8)
    kv_start = np.array([0, 2], np.int64)
    q, k_cache, v_cache = make_inputs(rng, 2, 3, 2, 4, 6, 1, kv_start)
    out = np.full((2, 3, 8), np.nan, np.float32)
    assert attention(q, k_cache, v_cache, 1, kv_start, 0.5, out=out) is out
    want, bound = reference(q, k_cache, v_cache, 1, kv_start, 0.5)
    assert np.all(np.abs(out - want) <= bound)


def valid_args():
    return dict(
        q=np.zeros((2, 3, 4, 5), np.float32),
        k_cache=np.zeros((2, 4, 8, 5), np.float32),
        v_cache=np.zeros((2, 4, 8, 5), np.float32),
        n_past=2,
        kv_start=np.zeros(2, np.int64),
        scale=0.5,
    )


@pytest.mark.parametrize(
    "changes, match",
    [
        (dict(q=np.zeros((2, 3, 4, 5), np.float64)), "q must be float32"),
        (dict(q=np.zeros((2, 3, 20), np.float32)), "q must have 4 dimensions"),
        (dict(k_cache=np.zeros((2, 4, 8, 6), np.float32)), r"k_cache must have shape \(2, 4, S, 5\)"),
        (dict(k_cache=np.zeros((1, 4, 8, 5), np.float32)), r"k_cache must have shape \(2, 4, S, 5\)"),
        (dict(v_cache=np.zeros((2, 4, 9, 5), np.float32)), "v_cache must have the shape of k_cache"),
        (dict(v_cache=np.zeros((2, 4, 5, 8), np.float32).transpose(0, 1, 3, 2)), "v_cache must be C-contiguous"),
        (dict(n_past=6), "k_cache holds 8 positions, fewer than n_past"),
        (dict(n_past=-1), "n_past must be a non-negative integer"),
        (dict(n_past=1.0), "n_past must be a non-negative integer"),
        (dict(n_past=True), "n_past must be a non-negative integer"),
        (dict(n_past=np.uint8(254)), r"k_cache holds 8 positions, fewer than n_past \+ T = 257"),  # no uint8 wrap
        (dict(kv_start=np.zeros(2, np.int32)), "kv_start must be an int64"),
        (dict(kv_start=np.zeros(3, np.int64)), r"kv_start must be a contiguous array of shape \(2,\)"),
        (dict(kv_start=np.array([0, -1], np.int64)), "kv_start must be >= 0"),
        (dict(scale=float("inf")), "scale must be finite"),
        (dict(scale=10**400), "scale must be finite"),
        (dict(scale="0.5"), "scale must be finite"),
        (dict(out=np.zeros((2, 3, 4, 5), np.float32)), r"out must have shape \(2, 3, 20\)"),
    ],
)
def test_rejects_bad_arguments(changes, match):
    with pytest.raises(ValueError, match=match):
        checks.attention(**{**valid_args(), **changes})


def test_numpy_integer_n_past_acts_as_the_int_it_holds():
    """Unsigned NumPy ints too: in Numba, uint64 mixed with int64 index arithmetic would turn into float64."""
    rng = np.random.default_rng(9)
    kv_start = np.array([0, 3], np.int64)
    q, k_cache, v_cache = make_inputs(rng, 2, 1, 2, 4, 8, 5, kv_start)
    want = attention(q, k_cache, v_cache, 5, kv_start, 0.5)
    for n_past in (np.uint8(5), np.uint64(5), np.int32(5)):
        assert np.array_equal(attention(q, k_cache, v_cache, n_past, kv_start, 0.5), want)


# --- paged_attention --------------------------------------------------------------------------------------


class Pool:
    """Sequences of the given lengths written to a pool of blocks in shuffled, non-contiguous order (every
    other block id is left unused), plus the contiguous [S, H, L, D] caches holding the same keys and values.
    Unused blocks and unwritten slots hold NaN, table entries past a sequence's blocks -1: reading any of
    them would show in the results."""

    def __init__(self, rng, lengths, heads, dim, slots):
        self.heads, self.dim, self.slots = heads, dim, slots
        per_seq = [-(-n // slots) for n in lengths]
        n_blocks = 2 * sum(per_seq) + 1
        ids = rng.permutation(n_blocks)[: sum(per_seq)].astype(np.int32)
        self.tables = np.full((len(lengths), max(per_seq) + 1), -1, np.int32)
        self.k_pool = np.full((n_blocks, heads, dim, slots), np.nan, np.float32)
        self.v_pool = np.full((n_blocks, heads, slots, dim), np.nan, np.float32)
        longest = max(lengths)
        self.keys = np.full((len(lengths), heads, longest, dim), np.nan, np.float32)
        self.values = np.full((len(lengths), heads, longest, dim), np.nan, np.float32)
        used = 0
        for s, n in enumerate(lengths):
            self.tables[s, : per_seq[s]] = ids[used : used + per_seq[s]]
            used += per_seq[s]
            self.keys[s, :, :n] = rng.standard_normal((heads, n, dim), dtype=np.float32)
            self.values[s, :, :n] = rng.standard_normal((heads, n, dim), dtype=np.float32)
            for p in range(n):
                block, slot = self.tables[s, p // slots], p % slots
                self.k_pool[block, :, :, slot] = self.keys[s, :, p]
                self.v_pool[block, :, slot] = self.values[s, :, p]

    def attend(self, q, token_seq, token_pos, scale, out=None):
        token_seq = np.asarray(token_seq, np.int32)
        token_pos = np.asarray(token_pos, np.int32)
        return paged_attention(q, self.k_pool, self.v_pool, self.tables, token_seq, token_pos, scale, out)

    def reference(self, q, token_seq, token_pos, scale):
        """Float64 attention over the keys and values gathered back from the pool, and the error bound of a
        float32 evaluation (as in ``reference`` above)."""
        heads, dim = self.heads, self.dim
        out = np.zeros((len(token_seq), heads * dim))
        bound = np.zeros_like(out)
        for t, (s, pos) in enumerate(zip(token_seq, token_pos)):
            positions = np.arange(pos + 1)
            blocks, slots = self.tables[s, positions // self.slots], positions % self.slots
            for h in range(heads):
                k = self.k_pool[blocks, h, :, slots].astype(np.float64)  # [pos + 1, D]
                v = self.v_pool[blocks, h, slots, :].astype(np.float64)
                qh = q[t, h].astype(np.float64)
                scores = scale * (k @ qh)
                p = np.exp(scores - scores.max())
                p /= p.sum()
                cols = slice(h * dim, (h + 1) * dim)
                out[t, cols] = p @ v
                d = (dim + 1) * U * abs(scale) * (np.abs(k) @ np.abs(qh)).max()
                bound[t, cols] = (np.expm1(2 * d) + (len(k) + 3) * U) * (p @ np.abs(v))
        return out, bound


def queries(rng, n, heads, dim):
    return rng.standard_normal((n, heads, dim), dtype=np.float32)


def every_position(lengths, rng):
    """(token_seq, token_pos) of every position of every sequence, shuffled."""
    pairs = [(s, p) for s, n in enumerate(lengths) for p in range(n)]
    order = rng.permutation(len(pairs))
    return [pairs[i][0] for i in order], [pairs[i][1] for i in order]


@pytest.mark.parametrize("slots", [1, 16, 32])
@pytest.mark.parametrize("heads, dim", [(2, 64), (3, 7)])
def test_paged_matches_reference(slots, heads, dim):
    rng = np.random.default_rng(slots * 100 + dim)
    lengths = [1, 17, 2 * slots + 3, 40]
    pool = Pool(rng, lengths, heads, dim, slots)
    token_seq, token_pos = every_position(lengths, rng)
    q = queries(rng, len(token_seq), heads, dim)
    scale = 1.0 / np.sqrt(dim)
    got = pool.attend(q, token_seq, token_pos, scale)
    want, bound = pool.reference(q, token_seq, token_pos, scale)
    assert got.dtype == np.float32 and got.shape == (len(token_seq), heads * dim)
    assert np.all(np.abs(got - want) <= bound)


def test_paged_large_scores_are_stable():
    rng = np.random.default_rng(17)
    pool = Pool(rng, [9], 2, 8, 4)
    q = queries(rng, 9, 2, 8)
    got = pool.attend(q, [0] * 9, range(9), 500.0)
    want, bound = pool.reference(q, [0] * 9, range(9), 500.0)
    assert np.all(np.isfinite(got)) and np.all(np.abs(got - want) <= bound)


def alone(pool, q, token_seq, token_pos, scale):
    """Each query in a call of its own."""
    rows = [pool.attend(q[t : t + 1], token_seq[t : t + 1], token_pos[t : t + 1], scale)[0]
            for t in range(len(token_seq))]
    return np.stack(rows)


@pytest.mark.parametrize("slots", [1, 16, 32])
@pytest.mark.parametrize("dim", [64, 7])
def test_paged_query_alone_equals_it_among_other_sequences(slots, dim):
    """Decode-like mixes: positions 0, on both sides of block boundaries and inside blocks, of several
    sequences, in several orders: each query's row is bit-identical to the query alone."""
    rng = np.random.default_rng(slots + dim)
    heads = 3
    lengths = [70, 1, 2 * slots + 1, 33, slots + 1]
    pool = Pool(rng, lengths, heads, dim, slots)
    token_seq, token_pos = [], []
    for s, n in enumerate(lengths):
        for p in sorted({min(p, n - 1) for p in (0, slots - 1, slots, 2 * slots, n // 2, n - 1)}):
            token_seq.append(s)
            token_pos.append(p)
    q = queries(rng, len(token_seq), heads, dim)
    scale = 0.3
    want = alone(pool, q, token_seq, token_pos, scale)
    assert np.array_equal(pool.attend(q, token_seq, token_pos, scale), want)
    for _ in range(3):
        order = rng.permutation(len(token_seq))
        got = pool.attend(q[order], np.array(token_seq)[order], np.array(token_pos)[order], scale)
        assert np.array_equal(got, want[order])


@pytest.mark.parametrize("slots", [1, 16, 32])
def test_paged_query_alone_equals_it_in_chunks_of_its_sequence(slots):
    """Prefill chunks of any length and start, alone or beside other sequences' queries (before, after and
    between): each query's row is bit-identical to the query alone, wherever it sits in the chunk."""
    rng = np.random.default_rng(slots)
    heads, dim, length = 2, 64, 75
    pool = Pool(rng, [length, 20], heads, dim, slots)
    q = queries(rng, length, heads, dim)
    other_q = queries(rng, 3, heads, dim)
    scale = 0.125
    want = alone(pool, q, [0] * length, list(range(length)), scale)
    other_want = alone(pool, other_q, [1] * 3, [0, 10, 19], scale)
    for start, n in [(0, length), (0, 1), (0, 5), (3, 7), (slots - 1 if slots > 1 else 2, 9), (30, 45),
                     (61, 13), (74, 1), (10, 48)]:
        chunk = slice(start, start + n)
        positions = list(range(start, start + n))
        assert np.array_equal(pool.attend(q[chunk], [0] * n, positions, scale), want[chunk])
        # the chunk after, before and around other sequences' queries, and reversed
        mixed_q = np.concatenate([other_q[:1], q[chunk], other_q[1:]])
        got = pool.attend(mixed_q, [1] + [0] * n + [1, 1], [0] + positions + [10, 19], scale)
        assert np.array_equal(got[1 : n + 1], want[chunk])
        assert np.array_equal(got[[0, n + 1, n + 2]], other_want)
        half = n // 2
        mixed_q = np.concatenate([q[start : start + half], other_q, q[start + half : start + n]])
        got = pool.attend(mixed_q, [0] * half + [1] * 3 + [0] * (n - half), positions[:half] + [0, 10, 19]
                          + positions[half:], scale)
        assert np.array_equal(np.concatenate([got[:half], got[half + 3 :]]), want[chunk])
        got = pool.attend(q[chunk][::-1].copy(), [0] * n, positions[::-1], scale)
        assert np.array_equal(got, want[chunk][::-1])


@pytest.mark.skipif(threads.max_threads() < 2, reason="needs 2 cores to run on 1 and 2 threads")
def test_paged_results_do_not_depend_on_the_thread_count():
    rng = np.random.default_rng(23)
    lengths = [50, 3, 64]
    pool = Pool(rng, lengths, 3, 64, 16)
    token_seq, token_pos = every_position(lengths, rng)
    token_seq, token_pos = [0] * 50 + token_seq, list(range(50)) + token_pos  # a chunk too
    q = queries(rng, len(token_seq), 3, 64)
    saved = threads._num_threads
    try:
        results = []
        for n in range(1, threads.max_threads() + 1):
            threads.set_num_threads(n)
            results.append(pool.attend(q, token_seq, token_pos, 0.2))
    finally:
        threads._num_threads = saved
    for got in results[1:]:
        assert np.array_equal(got, results[0])


def test_paged_writes_into_out():
    rng = np.random.default_rng(29)
    pool = Pool(rng, [10, 6], 2, 4, 4)
    q = queries(rng, 5, 2, 4)
    token_seq, token_pos = [0, 1, 0, 0, 1], [9, 5, 0, 4, 2]
    out = np.full((5, 8), np.nan, np.float32)
    assert pool.attend(q, token_seq, token_pos, 0.5, out=out) is out
    want, bound = pool.reference(q, token_seq, token_pos, 0.5)
    assert np.all(np.abs(out - want) <= bound)


def test_paged_no_queries():
    rng = np.random.default_rng(31)
    pool = Pool(rng, [5], 2, 4, 4)
    got = pool.attend(np.zeros((0, 2, 4), np.float32), [], [], 0.5)
    assert got.shape == (0, 8) and got.dtype == np.float32
    out = np.zeros((0, 8), np.float32)
    assert pool.attend(np.zeros((0, 2, 4), np.float32), [], [], 0.5, out=out) is out


@pytest.mark.parametrize("slots", [1, 16])
def test_paged_matches_attention_on_a_contiguous_cache(slots):
    """The same keys and values as a contiguous cache: a prompt (every position) gets ``attention``'s bits (the
    same chains); a decode step agrees within float32 rounding (``attention`` sums it in another order)."""
    rng = np.random.default_rng(37 + slots)
    heads, dim, length = 2, 64, 40
    pool = Pool(rng, [length, length], heads, dim, slots)
    scale = 0.125
    kv_start = np.zeros(2, np.int64)
    prompt = queries(rng, 2 * length, heads, dim)
    got = pool.attend(prompt, [0] * length + [1] * length, list(range(length)) * 2, scale)
    want = attention(prompt.reshape(2, length, heads, dim), pool.keys, pool.values, 0, kv_start, scale)
    np.testing.assert_array_equal(got, want.reshape(2 * length, heads * dim))
    step = queries(rng, 2, heads, dim)
    got = pool.attend(step, [0, 1], [length - 1] * 2, scale)
    want = attention(step[:, None], pool.keys, pool.values, length - 1, kv_start, scale)
    np.testing.assert_allclose(got, want[:, 0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("n_past, steps, kv_start", [(0, 23, [0, 5]), (7, 9, [0, 3]), (4, 6, [6, 2]), (2, 13, [0, 12])])
def test_attention_prompt_equals_paged_with_a_prefix_and_left_padding(n_past, steps, kv_start):
    """``attention`` of T queries after n_past cached positions, rows left-padded up to kv_start: each query's
    output is the bits ``paged_attention`` gives it over the row's valid keys alone (queries in the padding:
    zeros), whatever the offset between its position and its first key."""
    rng = np.random.default_rng(41 + n_past + steps)
    heads, dim = 3, 20
    lengths = [max(n_past + steps - first, 1) for first in kv_start]
    pool = Pool(rng, lengths, heads, dim, 16)
    capacity = n_past + steps
    k_cache = np.full((2, heads, capacity, dim), np.nan, np.float32)
    v_cache = np.full((2, heads, capacity, dim), np.nan, np.float32)
    for b, first in enumerate(kv_start):
        k_cache[b, :, first:capacity] = pool.keys[b, :, : capacity - first]
        v_cache[b, :, first:capacity] = pool.values[b, :, : capacity - first]
    q = queries(rng, 2 * steps, heads, dim).reshape(2, steps, heads, dim)
    got = attention(q, k_cache, v_cache, n_past, np.array(kv_start, np.int64), 0.25)
    assert np.isfinite(got).all()  # equal NaNs would pass assert_array_equal: no padding or unfilled slot is read
    for b, first in enumerate(kv_start):
        for t in range(steps):
            position = n_past + t - first  # the query's last key, counted from the row's first
            if position < 0:
                assert not got[b, t].any()
            else:
                want = pool.attend(q[b, t][None], [b], [position], 0.25)
                np.testing.assert_array_equal(got[b, t], want[0])


def valid_paged_args():
    return dict(
        q=np.zeros((3, 2, 5), np.float32),
        k_pool=np.zeros((6, 2, 5, 4), np.float32),
        v_pool=np.zeros((6, 2, 4, 5), np.float32),
        tables=np.array([[0, 5, -1], [3, -1, -1]], np.int32),
        token_seq=np.array([0, 1, 0], np.int32),
        token_pos=np.array([7, 3, 0], np.int32),
        scale=0.5,
    )


@pytest.mark.parametrize(
    "changes, match",
    [
        (dict(q=np.zeros((3, 2, 5), np.float64)), "q must be float32"),
        (dict(q=np.zeros((3, 10), np.float32)), "q must have 3 dimensions"),
        (dict(k_pool=np.zeros((6, 2, 4, 4), np.float32)), r"k_pool must have shape \(n_blocks, 2, 5, BS\)"),
        (dict(k_pool=np.zeros((6, 2, 5, 0), np.float32)), "with BS >= 1"),
        (dict(v_pool=np.zeros((6, 2, 5, 4), np.float32)), r"v_pool must have shape \(6, 2, 4, 5\)"),
        (dict(v_pool=np.zeros((6, 2, 5, 4), np.float32).transpose(0, 1, 3, 2)), "v_pool must be C-contiguous"),
        (dict(tables=np.zeros((2, 3), np.int64)), "tables must be int32"),
        (dict(tables=np.zeros(3, np.int32)), "tables must have 2 dimensions"),
        (dict(token_seq=np.array([0, 1, 0], np.int64)), "token_seq must be int32"),
        (dict(token_seq=np.array([0, 1], np.int32)), r"token_seq must have shape \(3,\)"),
        (dict(token_seq=np.array([0, 2, 0], np.int32)), r"token_seq must be in 0 \.\. 1"),
        (dict(token_seq=np.array([0, -1, 0], np.int32)), r"token_seq must be in 0 \.\. 1"),
        (dict(token_pos=np.array([7, 3], np.int32)), r"token_pos must have shape \(3,\)"),
        (dict(token_pos=np.array([7, -1, 0], np.int32)), r"token_pos must be in 0 \.\. 11"),
        (dict(token_pos=np.array([12, 3, 0], np.int32)), r"token_pos must be in 0 \.\. 11"),
        (dict(token_pos=np.array([8, 3, 0], np.int32)), r"tables must hold block ids in 0 \.\. 5 .*\[-1\]"),
        (dict(tables=np.array([[0, 6, -1], [3, -1, -1]], np.int32)), r"tables must hold block ids .*\[6\]"),
        (dict(scale=float("nan")), "scale must be finite"),
        (dict(scale=None), "scale must be finite"),
        (dict(out=np.zeros((3, 2, 5), np.float32)), r"out must have shape \(3, 10\)"),
        (dict(out=np.zeros((3, 10), np.float64)), "out must be float32"),
    ],
)
def test_paged_rejects_bad_arguments(changes, match):
    with pytest.raises(ValueError, match=match):
        checks.paged_attention(**{**valid_paged_args(), **changes})


def test_paged_check_accepts_valid_arguments():
    checks.paged_attention(**valid_paged_args())
    args = valid_paged_args()
    out = np.zeros((3, 10), np.float32)
    checks.paged_attention(**args, out=out)
    with pytest.raises(ValueError, match="out must not overlap q"):
        checks.paged_attention(**{**args, "out": args["q"].reshape(3, 10)})


# --- packed_attention -------------------------------------------------------------------------------------

packed_attention = checked(packed_attention_kernel)


def pack(rng, lengths, heads, dim):
    """Random queries/keys/values of sequences of ``lengths`` tokens packed as [N, 3, H, D], and the offsets."""
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    qkv = rng.standard_normal((int(offsets[-1]), 3, heads, dim)).astype(np.float32)
    return qkv, offsets


def attention_alone(qkv, first, count, scale):
    """attention's output for tokens first .. first+count-1 as one prompt in a cache of their own."""
    segment = qkv[first:first + count]
    q = np.ascontiguousarray(segment[None, :, 0])  # [1, T, H, D]
    keys = np.ascontiguousarray(segment[:, 1].transpose(1, 0, 2)[None])  # [1, H, T, D]
    values = np.ascontiguousarray(segment[:, 2].transpose(1, 0, 2)[None])
    return attention(q, keys, values, 0, np.zeros(1, np.int64), scale)[0]


@pytest.mark.parametrize("lengths", [[1], [7], [2, 5, 1, 9], [30, 0, 3, 64, 4]])
@pytest.mark.parametrize("heads, dim", [(1, 4), (3, 5), (2, 64)])
def test_packed_matches_reference_and_attention_alone(lengths, heads, dim):
    rng = np.random.default_rng(sum(lengths) + heads * dim)
    qkv, offsets = pack(rng, lengths, heads, dim)
    out = packed_attention(qkv, offsets, 0.3)
    for s, length in enumerate(lengths):
        first = int(offsets[s])
        rows = out[first:first + length]
        segment = qkv[first:first + length]
        q = segment[None, :, 0]
        keys = segment[:, 1].transpose(1, 0, 2)[None]
        values = segment[:, 2].transpose(1, 0, 2)[None]
        want, bound = reference(q, keys, values, 0, np.zeros(1, np.int64), 0.3)
        assert np.all(np.abs(rows - want[0]) <= bound[0])
        if length > 1:  # a prompt of one token goes through attention's decode path instead
            np.testing.assert_array_equal(rows, attention_alone(qkv, first, length, 0.3))


@pytest.mark.parametrize("dim", [5, 64])
def test_packed_equals_paged(dim):
    """Packed sequences get, query by query, the bits ``paged_attention`` gives them from a pool of blocks."""
    rng = np.random.default_rng(29 + dim)
    lengths, heads = [33, 1, 7, 70], 2
    pool = Pool(rng, lengths, heads, dim, 16)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    qkv = np.empty((int(offsets[-1]), 3, heads, dim), np.float32)
    qkv[:, 0] = queries(rng, len(qkv), heads, dim)
    for s, length in enumerate(lengths):
        qkv[offsets[s]:offsets[s + 1], 1] = pool.keys[s, :, :length].transpose(1, 0, 2)
        qkv[offsets[s]:offsets[s + 1], 2] = pool.values[s, :, :length].transpose(1, 0, 2)
    token_seq = np.repeat(np.arange(len(lengths)), lengths)
    token_pos = np.concatenate([np.arange(n) for n in lengths])
    got = packed_attention(qkv, offsets, 0.3)
    assert np.isfinite(got).all()  # equal NaNs would pass assert_array_equal: no unused pool slot is read
    np.testing.assert_array_equal(got, pool.attend(np.ascontiguousarray(qkv[:, 0]), token_seq, token_pos, 0.3))


def test_packed_sequence_alone_equals_it_among_others_at_any_thread_count():
    rng = np.random.default_rng(21)
    qkv, offsets = pack(rng, [40, 3, 17, 90, 1], 4, 16)
    together = packed_attention(qkv, offsets, 0.2)
    for s in range(len(offsets) - 1):
        first, last = int(offsets[s]), int(offsets[s + 1])
        own = np.ascontiguousarray(qkv[first:last])
        np.testing.assert_array_equal(packed_attention(own, np.array([0, last - first], np.int64), 0.2),
                                      together[first:last])
    saved = threads._num_threads
    try:
        threads.set_num_threads(1)
        np.testing.assert_array_equal(packed_attention(qkv, offsets, 0.2), together)
    finally:
        threads._num_threads = saved


def test_packed_large_scores_are_stable():
    rng = np.random.default_rng(22)
    qkv, offsets = pack(rng, [12, 5], 2, 8)
    qkv *= 30.0  # scores in the thousands: exp would overflow without subtracting the max
    out = packed_attention(qkv, offsets, 1.0)
    assert np.isfinite(out).all()


def test_packed_writes_into_out_and_takes_no_tokens():
    rng = np.random.default_rng(23)
    qkv, offsets = pack(rng, [3, 4], 2, 4)
    out = np.full((7, 8), np.nan, np.float32)
    assert packed_attention(qkv, offsets, 0.5, out=out) is out
    np.testing.assert_array_equal(out, packed_attention(qkv, offsets, 0.5))
    empty = packed_attention(np.zeros((0, 3, 2, 4), np.float32), np.zeros(1, np.int64), 0.5)
    assert empty.shape == (0, 8)


def packed_args():
    return dict(qkv=np.zeros((6, 3, 2, 4), np.float32), offsets=np.array([0, 2, 6], np.int64), scale=0.5)


@pytest.mark.parametrize(
    "changes, match",
    [
        (dict(qkv=np.zeros((6, 3, 2, 4), np.float64)), "qkv must be float32"),
        (dict(qkv=np.zeros((6, 3, 8), np.float32)), "qkv must have 4 dimensions"),
        (dict(qkv=np.zeros((6, 2, 2, 4), np.float32)), r"qkv must have shape \(N, 3, H, D\)"),
        (dict(offsets=np.array([0, 2, 6], np.int32)), "offsets must be int64"),
        (dict(offsets=np.array([1, 2, 6], np.int64)), "offsets must rise from 0 to N = 6"),
        (dict(offsets=np.array([0, 2, 5], np.int64)), "offsets must rise from 0 to N = 6"),
        (dict(offsets=np.array([0, 4, 2, 6], np.int64)), "never falling"),
        (dict(offsets=np.zeros(0, np.int64)), "offsets must rise"),
        (dict(scale=float("nan")), "scale must be finite"),
        (dict(out=np.zeros((6, 4), np.float32)), r"out must have shape \(6, 8\)"),
    ],
)
def test_packed_rejects_bad_arguments(changes, match):
    with pytest.raises(ValueError, match=match):
        checks.packed_attention(**{**packed_args(), **changes})
