"""int8 quantization against its NumPy definition, and the int8 product against float64 NumPy products with
the dequantized weights ``q * scale``, on the one-row (decode) and GEMM paths."""

import tracemalloc

import numpy as np
import pytest
from checked import checked
from independent_rows import assert_rows_independent, thread_count  # noqa: F401  (a fixture)
from rounding import U, gelu64, random, sum_error_bound
from tinygpt.kernels import checks, quantized, threads
from tinygpt.kernels.matmul import SMALL_M
from tinygpt.kernels.quantized import INT16_ROWS

linear_nt_int8 = checked(quantized.linear_nt_int8)
quantize_rows, quantize_columns = checked(quantized.quantize_rows), checked(quantized.quantize_columns)


def quantized_rows(rng: np.random.Generator, n: int, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """q [N, K], scale [N] from quantizing a random weight, and the dequantized weight q * scale[:, None]
    (float32, computed by NumPy: the weight the int8 kernels are specified against)."""
    q, scale = quantize_rows(random(rng, n, k))
    return q, scale, q * scale[:, None]


# --- quantize_rows ----------------------------------------------------------------------------------------
# Outputs are the rows of w: one scale per row.


@pytest.mark.parametrize("shape", [(1, 1), (3, 17), (65, 130), (130, 5), (768, 64)])
def test_quantize_matches_its_definition(shape):
    """scale = max|w| / 127 per output and q = clip(round(w / scale)), exactly as NumPy evaluates them."""
    rng = np.random.default_rng(shape[0] * 1000 + shape[1])
    w = random(rng, *shape) * np.float32(3.0)
    q, scale = quantize_rows(w)
    assert q.dtype == np.int8 and q.shape == w.shape
    assert scale.dtype == np.float32 and scale.shape == (shape[0],)
    want_scale = np.abs(w).max(axis=1) / np.float32(127)
    assert np.array_equal(scale, want_scale)
    want_q = np.clip(np.rint(w / want_scale[:, None]), -127, 127)
    assert np.array_equal(q, want_q)
    assert np.all(np.abs(q.astype(np.int64)).max(axis=1) == 127)  # the largest weight of every output maps to +-127


def test_quantize_round_trip_error_is_half_a_step():
    """|q * scale - w| <= scale / 2, up to the rounding of w / scale: that float32 quotient is within
    127 * (1 + 3u) * u of the exact one (|w / scale| <= 127 up to scale's own rounding), hence the 128 * u."""
    rng = np.random.default_rng(11)
    w = random(rng, 300, 200) * np.exp(random(rng, 300, 200))  # heavy-ish tails, varied magnitudes
    q, scale = quantize_rows(w)
    step = scale.astype(np.float64)[:, None]
    assert np.all(np.abs(q * step - w.astype(np.float64)) <= step * (0.5 + 128 * U))


def test_quantize_is_exact_on_multiples_of_the_scale():
    """w = k * s with integers |k| <= 127 (127 reached in every output) and s of at most 17 significant bits,
    so every k * s and 127 * s is exact in float32: quantization must return k and s exactly."""
    rng = np.random.default_rng(12)
    outputs, inputs = 40, 33
    steps = (rng.integers(1, 2**16, outputs) * 2.0 ** rng.integers(-30, 10, outputs)).astype(np.float32)
    ints = rng.integers(-127, 128, (outputs, inputs))
    ints[np.arange(outputs), rng.integers(0, inputs, outputs)] = rng.choice([-127, 127], outputs)
    w = (ints * steps[:, None].astype(np.float64)).astype(np.float32)
    q, scale = quantize_rows(w)
    assert np.array_equal(scale, steps)
    assert np.array_equal(q, ints)


def test_quantize_rounds_halves_to_even():
    """Quotients exactly halfway between integers round to the even one, as np.round / np.rint do."""
    step = np.float32(0.25)
    halves = np.array([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 126.5, -126.5], np.float64)
    w = (np.append(halves, 127.0) * step).astype(np.float32)[None, :]  # 127 * step sets the scale to step
    q, scale = quantize_rows(w)
    assert scale[0] == step
    assert q[0].tolist() == [0, 2, 2, 0, -2, -2, 126, -126, 127]


def test_quantize_zero_outputs_get_scale_one():
    rng = np.random.default_rng(13)
    w = random(rng, 6, 9)
    w[[0, 4]] = 0.0
    q, scale = quantize_rows(w)
    assert scale[0] == scale[4] == 1.0
    assert not q[[0, 4]].any()
    assert np.all(scale[[1, 2, 3, 5]] != 1.0)
    q_all, scale_all = quantize_rows(np.zeros((5, 3), np.float32))
    assert np.all(scale_all == 1.0) and not q_all.any()


@pytest.mark.parametrize("quantize", [quantize_rows, quantize_columns])
def test_quantize_keeps_memory_to_the_result(quantize):
    """No float-sized temporaries (quantize_columns makes no transposed copy): NumPy-visible allocations stay
    at the int8 result plus O(outputs); the kernels' own scratch (quantize_columns: 16 rows of peaks and a
    4 KB tile per task) is allocated inside Numba."""
    w = np.ones((1024, 512), np.float32)
    quantize(w[:2])  # compile outside the measurement
    tracemalloc.start()
    try:
        q, scale = quantize(w)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak <= q.nbytes + 64 * 1024


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_quantize_rejects_non_finite_weights(bad):
    w = np.ones((4, 5), np.float32)
    w[2, 3] = bad
    with pytest.raises(ValueError, match="NaN or infinite value in row 2"):
        quantize_rows(w)


@pytest.mark.parametrize(
    "w, match",
    [
        (np.zeros((4, 3), np.float64), "w must be float32"),
        (np.zeros((4, 3), np.int8), "w must be float32"),
        (np.zeros(4, np.float32), "w must have 2 dimensions"),
        (np.zeros((2, 4, 3), np.float32), "w must have 2 dimensions"),
        (np.zeros((3, 4), np.float32).T, "w must be C-contiguous"),
        ([[0.0, 1.0]], "w must be a numpy array"),
    ],
)
@pytest.mark.parametrize("check", [checks.quantize_rows, checks.quantize_columns])
def test_quantize_rejects_bad_weights(check, w, match):
    with pytest.raises(ValueError, match=match):
        check(w)


# --- quantize_columns -------------------------------------------------------------------------------------
# Outputs are the columns of w ([in, out], GPT-2's Conv1D layout); the result has them as rows.


@pytest.mark.parametrize("shape", [(1, 1), (3, 17), (15, 2), (64, 64), (65, 130), (130, 5), (200, 67)])
def test_quantize_columns_is_quantize_rows_of_the_transpose(shape):
    """Bit for bit: shapes below, at and past the 64 x 64 tiles and the 16 row slabs of the peak search."""
    rng = np.random.default_rng(shape[0] * 1000 + shape[1] + 7)
    w = random(rng, *shape) * np.exp(random(rng, *shape))
    q, scale = quantize_columns(w)
    want_q, want_scale = quantize_rows(np.ascontiguousarray(w.T))
    assert q.dtype == np.int8 and q.shape == shape[::-1] and q.flags.c_contiguous
    assert np.array_equal(scale, want_scale)
    assert np.array_equal(q, want_q)


def test_quantize_columns_matches_its_definition():
    rng = np.random.default_rng(21)
    w = random(rng, 97, 70) * np.float32(3.0)
    q, scale = quantize_columns(w)
    want_scale = np.abs(w).max(axis=0) / np.float32(127)
    assert np.array_equal(scale, want_scale)
    assert np.array_equal(q, np.clip(np.rint(w / want_scale), -127, 127).T)


def test_quantize_columns_zero_outputs_get_scale_one():
    rng = np.random.default_rng(22)
    w = random(rng, 9, 6)
    w[:, [0, 4]] = 0.0
    q, scale = quantize_columns(w)
    assert scale[0] == scale[4] == 1.0
    assert not q[[0, 4]].any()
    assert np.all(scale[[1, 2, 3, 5]] != 1.0)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("row", [0, 20, 39])  # 40 rows in slabs of 3: the first, a middle and the last slab
def test_quantize_columns_rejects_non_finite_weights(bad, row):
    w = np.ones((40, 5), np.float32)
    w[row, 3] = bad
    with pytest.raises(ValueError, match="NaN or infinite value in column 3"):
        quantize_columns(w)


# --- linear_nt_int8 ---------------------------------------------------------------------------------------
# Tolerances: the reference is float64 x @ d.T (+ b) with d = q * scale[:, None] as NumPy makes it (float32).
# Every row of x is first rounded to int16 steps, step = max|row| / 32767: each x[k] moves by at most half a
# step, plus 2**-36 of a step for the float64 quotient x * (32767 / max|row|), whose two roundings are each
# within 2**-53 of a value below 32768 (activation_bound: (1/2 + 2**-36) * step * sum_k |d[j, k]|). The
# integer dot product is then exact, and the rest rounds a few times: scaling, d's own rounding in the
# reference (d = q * scale * (1 + delta)), the bias add, the add into out when accumulating. The bound counts
# those as terms of a float32 sum (sum_error_bound(K + 3, |x| @ |d.T| + |b|), +1 for accumulate), more than
# they need.


def activation_bound(x: np.ndarray, d: np.ndarray) -> np.ndarray:
    """How far rounding each row of x to int16 steps can move x @ d.T: [M, N]."""
    step = np.abs(x).max(axis=1, keepdims=True).astype(np.float64) / 32767  # [M, 1]
    return (0.5 + 2.0**-36) * step * np.abs(d).astype(np.float64).sum(axis=1)[None, :]


# M covers decode (1) and batched decode up to INT16_ROWS = SMALL_M (3, 5, 8, 17, SMALL_M: groups of 4 rows,
# full and ragged), then the GEMM from INT16_ROWS + 1 to prompts (65, 130) with ragged 6-row tiles; N covers
# ragged 16-column strips and several 64-wide panels; K = 800 spans two 512-deep k-blocks of the GEMM, and
# K = 801 leaves a tail after the decode path's 32-weight chunks and an odd element after the GEMM's pairs.
SHAPES = [
    (1, 1, 1),
    (1, 17, 5),
    (1, 130, 65),
    (1, 800, 130),
    (3, 3, 17),
    (3, 65, 130),
    (8, 130, 65),
    (5, 801, 70),
    (INT16_ROWS, 65, 70),
    (INT16_ROWS + 1, 65, 70),
    (SMALL_M, 130, 17),
    (SMALL_M + 1, 17, 130),
    (65, 65, 65),
    (130, 130, 5),
    (17, 800, 130),
    (65, 800, 130),
    (65, 801, 3),
    (65, 1, 3),
]


def magnitude(x: np.ndarray, d: np.ndarray) -> np.ndarray:
    """|x| @ |d.T| in float64, for d [N, K]."""
    return np.abs(x).astype(np.float64) @ np.abs(d).astype(np.float64).T


@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("m, k, n", SHAPES)
def test_linear_nt_int8_matches_dequantized_product(m, k, n, with_bias):
    rng = np.random.default_rng(m * 10007 + k * 101 + n)
    x, b = random(rng, m, k), random(rng, n)
    q, scale, d = quantized_rows(rng, n, k)
    got = linear_nt_int8(x, q, scale, b if with_bias else None)
    want = x.astype(np.float64) @ d.T.astype(np.float64) + (b if with_bias else 0.0)
    assert got.dtype == np.float32 and got.shape == (m, n)
    bound = sum_error_bound(k + 3, magnitude(x, d) + (np.abs(b) if with_bias else 0.0)) + activation_bound(x, d)
    assert np.all(np.abs(got - want) <= bound)


@pytest.mark.parametrize("m, k, n", SHAPES)
def test_linear_nt_int8_accumulate_adds_into_out(m, k, n):
    rng = np.random.default_rng(m + k + n)
    x, b, out = random(rng, m, k), random(rng, n), random(rng, m, n)
    q, scale, d = quantized_rows(rng, n, k)
    want = out.astype(np.float64) + x.astype(np.float64) @ d.T.astype(np.float64) + b
    bound = sum_error_bound(k + 4, magnitude(x, d) + np.abs(b) + np.abs(out)) + activation_bound(x, d)
    assert linear_nt_int8(x, q, scale, b, out, accumulate=True) is out
    assert np.all(np.abs(out - want) <= bound)


@pytest.mark.parametrize("m, k, n", SHAPES)
def test_linear_nt_int8_fused_gelu(m, k, n):
    rng = np.random.default_rng(3 * m + k + n)
    x, b = random(rng, m, k), random(rng, n)
    q, scale, d = quantized_rows(rng, n, k)
    want = gelu64(x.astype(np.float64) @ d.T.astype(np.float64) + b)
    got = linear_nt_int8(x, q, scale, b, gelu=True)
    # GELU's slope lies in [-0.17, 1.13], so the product's error carries over scaled by at most 1.13; GELU
    # itself is evaluated in float64 and rounded once to float32 (half an ulp, covered by one spacing).
    bound = 1.13 * (sum_error_bound(k + 3, magnitude(x, d) + np.abs(b)) + activation_bound(x, d))
    assert np.all(np.abs(got - want) <= bound + np.spacing(np.abs(want).astype(np.float32)))


@pytest.mark.parametrize("m", [1, 5, 40])
def test_single_thread_matches(m):
    rng = np.random.default_rng(m)
    x, b = random(rng, m, 90), random(rng, 70)
    q, scale, d = quantized_rows(rng, 70, 90)
    saved = threads._num_threads
    threads.set_num_threads(1)
    try:
        got = linear_nt_int8(x, q, scale, b)
    finally:
        threads._num_threads = saved
    want = x.astype(np.float64) @ d.T.astype(np.float64) + b
    assert np.all(np.abs(got - want) <= sum_error_bound(93, magnitude(x, d) + np.abs(b)) + activation_bound(x, d))


def test_int8_products_stay_close_to_float_weights():
    """End to end on a distilgpt2-sized layer: quantizing the weight changes outputs by about
    scale/sqrt(12) per weight, i.e. ~1% of the output spread for Gaussian weights, not more."""
    rng = np.random.default_rng(21)
    w, x = random(rng, 256, 768), random(rng, 4, 768)
    q, scale = quantize_rows(w)
    exact = x.astype(np.float64) @ w.T.astype(np.float64)
    assert np.std(linear_nt_int8(x, q, scale) - exact) < 0.01 * np.std(exact)
    assert np.std(linear_nt_int8(x[:1], q, scale) - exact[:1]) < 0.01 * np.std(exact)


def test_empty_depth_gives_bias():
    """K = 0: the product is empty, so out is the bias (zeros without one)."""
    b = np.arange(6, dtype=np.float32)
    q, scale = np.zeros((6, 0), np.int8), np.ones(6, np.float32)
    for m in (1, 2, SMALL_M + 1):
        x = np.zeros((m, 0), np.float32)
        assert np.array_equal(linear_nt_int8(x, q, scale, b), np.tile(b, (m, 1)))
        assert np.array_equal(linear_nt_int8(x, q, scale), np.zeros((m, 6), np.float32))


def test_out_is_written_in_place():
    rng = np.random.default_rng(5)
    x, b = random(rng, 4, 8), random(rng, 3)
    q, scale, _ = quantized_rows(rng, 3, 8)
    for rows in (1, 4):
        out = np.full((rows, 3), np.nan, np.float32)
        assert linear_nt_int8(x[:rows], q, scale, b, out) is out
        assert np.all(np.isfinite(out))


GOOD = dict(
    x=np.zeros((2, 4), np.float32),
    q=np.zeros((3, 4), np.int8),
    scale=np.ones(3, np.float32),
    b=np.zeros(3, np.float32),
)


@pytest.mark.parametrize(
    "changes, match",
    [
        (dict(x=np.zeros((2, 4), np.float64)), "x must be float32"),
        (dict(x=np.zeros(4, np.float32)), "x must have 2 dimensions"),
        (dict(x=np.zeros((4, 2), np.float32).T), "x must be C-contiguous"),
        (dict(q=np.zeros((3, 4), np.float32)), "q must be int8"),
        (dict(q=np.zeros((3, 4), np.uint8)), "q must be int8"),
        (dict(q=np.zeros((3, 5), np.int8)), r"q must have shape \(N, 4\)"),
        (dict(q=np.zeros(12, np.int8)), "q must have 2 dimensions"),
        (dict(q=np.zeros((4, 3), np.int8).T), "q must be C-contiguous"),
        (dict(q=[[0] * 4] * 3), "q must be a numpy array"),
        (dict(scale=np.ones(4, np.float32)), r"scale must have shape \(3,\)"),
        (dict(scale=np.ones(3, np.float64)), "scale must be float32"),
        (dict(scale=np.ones((1, 3), np.float32)), "scale must have 1 dimensions"),
        (dict(b=np.zeros(4, np.float32)), r"b must have shape \(3,\)"),
        (dict(b=np.zeros(3, np.int8)), "b must be float32"),
        (dict(out=np.zeros((2, 4), np.float32)), r"out must have shape \(2, 3\)"),
        (dict(out=np.zeros((2, 3), np.float64)), "out must be float32"),
        (dict(gelu=True, accumulate=True, out=np.zeros((2, 3), np.float32)), "gelu and accumulate"),
        (dict(accumulate=True), "accumulate=True needs out"),
    ],
)
def test_linear_nt_int8_rejects_bad_arguments(changes, match):
    with pytest.raises(ValueError, match=match):
        checks.linear_nt_int8(**{**GOOD, **changes})


def test_out_must_not_overlap_inputs():
    x = np.zeros((3, 3), np.float32)
    with pytest.raises(ValueError, match="out must not overlap x"):
        checks.linear_nt_int8(x, np.zeros((3, 3), np.int8), np.ones(3, np.float32), out=x)


# --- rows are independent (see independent_rows.py) ------------------------------------------------------
# distilgpt2's products as the engine stores them (quantize_columns of the Conv1D weights, with bias,
# accumulate or GELU; the LM head from quantize_rows), then K not a multiple of the 32-weight passes, N not a
# multiple of 64, and K > 4096 (several exact int32 blocks per dot product).
INT8_CASES = [
    (768, 2304, "columns", {}),
    (768, 768, "columns", {"accumulate": True}),
    (768, 3072, "columns", {"gelu": True}),
    (3072, 768, "columns", {"accumulate": True}),
    (768, 50257, "rows", {}),
    (803, 130, "columns", {"gelu": True}),
    (5000, 70, "rows", {"accumulate": True}),
    (13, 5, "rows", {}),
]


@pytest.mark.parametrize("k, n, layout, options", INT8_CASES)
def test_linear_nt_int8_rows_are_independent(k, n, layout, options, thread_count):
    rng = np.random.default_rng(k * 7 + n)
    if layout == "rows":
        q, scale = quantize_rows(random(rng, n, k))
        b = None
    else:
        q, scale = quantize_columns(random(rng, k, n))
        b = random(rng, n)
    x, base = random(rng, SMALL_M, k), random(rng, SMALL_M, n)

    def product(index):
        out = base[index].copy() if options.get("accumulate") else None
        return linear_nt_int8(x[index], q, scale, b, out, **options)

    assert_rows_independent(product, SMALL_M, rng)
