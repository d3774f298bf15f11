"""attention against a straightforward float64 NumPy masked-softmax reference."""

import numpy as np
import pytest

from checked import checked
from tinygpt.kernels import checks
from tinygpt.kernels.attention import attention as attention_kernel

attention = checked(attention_kernel)

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
