"""linear and linear_nt against float64 NumPy products, on the decode (M <= SMALL_M) and GEMM paths."""

import numpy as np
import pytest
from checked import checked
from rounding import gelu64, random, sum_error_bound
from independent_rows import assert_rows_independent, thread_count  # noqa: F401  (a fixture)
from target import target_has_fma
from tinygpt.kernels import checks, matmul
from tinygpt.kernels.matmul import SMALL_M

linear, linear_nt = checked(matmul.linear), checked(matmul.linear_nt)

# M covers the streaming path (1, 3, 17, SMALL_M) and the GEMM path (SMALL_M + 1, 65, 130) with ragged row
# tiles (3 rows in linear_nt's, 6 in linear's) and row blocks; N covers ragged tiles (4 columns, 16-column
# strips) and several 64-wide panels; K = 800 spans k-blocks of both GEMMs (768 and 256 deep), and K not a
# multiple of 4 exercises the streaming kernel's remainder; at M = 1, K = 803 gives each thread's slab 8
# streams of 50 rows and one or two rows left over.
SHAPES = [
    (1, 1, 1),
    (1, 17, 5),
    (1, 130, 65),
    (1, 803, 33),
    (3, 3, 17),
    (3, 65, 130),
    (17, 65, 33),
    (SMALL_M, 130, 17),
    (SMALL_M + 1, 17, 130),
    (65, 65, 65),
    (130, 130, 5),
    (65, 800, 130),
    (65, 1, 3),
]
# Products of more than SMALL_M rows go to BLAS or to our blocked GEMMs (gemm=): both are checked.
GEMMS = ["numba", "blas"]


@pytest.mark.parametrize("gemm", GEMMS)
@pytest.mark.parametrize("m, k, n", SHAPES)
def test_linear_matches_float64_product(m, k, n, gemm):
    rng = np.random.default_rng(m * 10007 + k * 101 + n)
    x, w, b = random(rng, m, k), random(rng, k, n), random(rng, n)
    got = linear(x, w, b, gemm=gemm)
    want = x.astype(np.float64) @ w + b
    bound = sum_error_bound(k + 1, np.abs(x).astype(np.float64) @ np.abs(w) + np.abs(b))
    assert got.dtype == np.float32 and got.shape == (m, n)
    assert np.all(np.abs(got - want) <= bound)


@pytest.mark.parametrize("gemm", GEMMS)
@pytest.mark.parametrize("m, k, n", SHAPES)
def test_linear_accumulate_adds_into_out(m, k, n, gemm):
    rng = np.random.default_rng(m + k + n)
    x, w, b, out = random(rng, m, k), random(rng, k, n), random(rng, n), random(rng, m, n)
    want = out.astype(np.float64) + x.astype(np.float64) @ w + b
    bound = sum_error_bound(k + 2, np.abs(x).astype(np.float64) @ np.abs(w) + np.abs(b) + np.abs(out))
    result = linear(x, w, b, out, accumulate=True, gemm=gemm)
    assert result is out
    assert np.all(np.abs(out - want) <= bound)


@pytest.mark.parametrize("gemm", GEMMS)
@pytest.mark.parametrize("m, k, n", SHAPES)
def test_linear_fused_gelu(m, k, n, gemm):
    rng = np.random.default_rng(3 * m + k + n)
    x, w, b = random(rng, m, k), random(rng, k, n), random(rng, n)
    y = x.astype(np.float64) @ w + b
    got = linear(x, w, b, gelu=True, gemm=gemm)
    # GELU's slope lies in [-0.17, 1.13], so the product's error carries over scaled by at most 1.13; then
    # GELU is evaluated in float64 and rounded once to float32 (half an ulp, covered by one spacing).
    bound = 1.13 * sum_error_bound(k + 1, np.abs(x).astype(np.float64) @ np.abs(w) + np.abs(b))
    want = gelu64(y)
    assert np.all(np.abs(got - want) <= bound + np.spacing(np.abs(want).astype(np.float32)).astype(np.float64))


@pytest.mark.parametrize("gemm", GEMMS)
@pytest.mark.parametrize("m, k, n", SHAPES)
def test_linear_nt_matches_float64_product(m, k, n, gemm):
    rng = np.random.default_rng(7 * m + k + n)
    x, w = random(rng, m, k), random(rng, n, k)
    got = linear_nt(x, w, gemm=gemm)
    want = x.astype(np.float64) @ w.T.astype(np.float64)
    bound = sum_error_bound(k, np.abs(x).astype(np.float64) @ np.abs(w.T))
    assert got.dtype == np.float32 and got.shape == (m, n)
    assert np.all(np.abs(got - want) <= bound)


@pytest.mark.parametrize("mode", ["c", "r"])
@pytest.mark.parametrize("m", [1, 8, 40])
def test_memmap_weights(tmp_path, m, mode):
    """Weights mapped from a file: copy-on-write as the model loader provides them, or read-only."""
    rng = np.random.default_rng(m)
    k, n = 96, 70
    w_file, wt_file = tmp_path / "w.bin", tmp_path / "wt.bin"
    random(rng, k, n).tofile(w_file)
    random(rng, n, k).tofile(wt_file)
    w = np.memmap(w_file, dtype=np.float32, mode=mode, shape=(k, n))
    wt = np.memmap(wt_file, dtype=np.float32, mode=mode, shape=(n, k))
    x, b = random(rng, m, k), random(rng, n)
    bound = sum_error_bound(k + 1, np.abs(x).astype(np.float64) @ np.abs(np.asarray(w)) + np.abs(b))
    assert np.all(np.abs(linear(x, w, b) - (x.astype(np.float64) @ w + b)) <= bound)
    bound_nt = sum_error_bound(k, np.abs(x).astype(np.float64) @ np.abs(np.asarray(wt)).T)
    assert np.all(np.abs(linear_nt(x, wt) - x.astype(np.float64) @ np.asarray(wt).T) <= bound_nt)


@pytest.mark.parametrize("gemm", GEMMS)
def test_empty_depth_gives_bias(gemm):
    """K = 0: the product is empty, so out is the bias (and GELU of it)."""
    rows = SMALL_M + 12
    x, w, b = np.zeros((rows, 0), np.float32), np.zeros((0, 6), np.float32), np.arange(6, dtype=np.float32)
    assert np.array_equal(linear(x, w, b, gemm=gemm), np.tile(b, (rows, 1)))
    assert np.array_equal(linear(x[:2], w, b), np.tile(b, (2, 1)))
    assert np.array_equal(linear_nt(x, np.zeros((6, 0), np.float32), gemm=gemm), np.zeros((rows, 6), np.float32))


@pytest.mark.parametrize("k, n", [(803, 33), (130, 65), (9, 7)])
def test_one_row_products_on_a_single_thread(k, n):
    """Decode products split their weight rows into one slab per thread, and each slab into streams of rows:
    with a single thread, one slab holds every row, and the streams and leftover rows must still cover them
    all."""
    from tinygpt.kernels import threads

    rng = np.random.default_rng(k + n)
    x, w, wt, b = random(rng, 1, k), random(rng, k, n), random(rng, n, k), random(rng, n)
    saved = threads._num_threads
    threads.set_num_threads(1)
    try:
        got, got_nt = linear(x, w, b), linear_nt(x, wt)
    finally:
        threads._num_threads = saved
    x64 = x.astype(np.float64)
    assert np.all(np.abs(got - (x64 @ w + b)) <= sum_error_bound(k + 1, np.abs(x64) @ np.abs(w) + np.abs(b)))
    assert np.all(np.abs(got_nt - x64 @ wt.T) <= sum_error_bound(k, np.abs(x64) @ np.abs(wt.T)))


def test_auto_gemm_follows_the_thread_count():
    """linear_nt's many-row products: BLAS runs on all cores; when our thread count is lowered, our own GEMM
    keeps products within it. (linear's take our GEMM either way.)"""
    from tinygpt.kernels import get_num_threads, set_num_threads
    from tinygpt.kernels.matmul import gemm_kernel
    from tinygpt.kernels.threads import max_threads

    before = get_num_threads()
    try:
        set_num_threads(max_threads())
        assert gemm_kernel() == "blas"
        if max_threads() > 1:
            set_num_threads(1)
            assert gemm_kernel() == "numba"
    finally:
        set_num_threads(before)
    assert gemm_kernel("numba") == "numba"
    for rows in (1, SMALL_M + 1):  # refused even where no GEMM runs
        with pytest.raises(ValueError, match='gemm must be "auto", "numba" or "blas", got \'fast\''):
            checks.linear(np.zeros((rows, 3), np.float32), np.zeros((3, 2), np.float32), np.zeros(2, np.float32),
                          gemm="fast")
        with pytest.raises(ValueError, match='gemm must be "auto", "numba" or "blas", got \'fast\''):
            checks.linear_nt(np.zeros((rows, 3), np.float32), np.zeros((2, 3), np.float32), gemm="fast")
    with pytest.raises(ValueError, match='gemm must be "auto", "numba" or "blas", got \'fast\''):
        gemm_kernel("fast")


def test_out_is_written_in_place():
    rng = np.random.default_rng(5)
    x, w, b = random(rng, 4, 8), random(rng, 8, 3), random(rng, 3)
    out = np.full((4, 3), np.nan, np.float32)
    assert linear(x, w, b, out) is out
    assert np.all(np.isfinite(out))
    out_nt = np.full((4, 3), np.nan, np.float32)
    assert linear_nt(x, np.ascontiguousarray(w.T), out_nt) is out_nt
    assert np.all(np.isfinite(out_nt))


GOOD = dict(x=np.zeros((2, 4), np.float32), w=np.zeros((4, 3), np.float32), b=np.zeros(3, np.float32))


@pytest.mark.parametrize(
    "changes, match",
    [
        (dict(x=np.zeros((2, 4), np.float64)), "x must be float32"),
        (dict(x=np.zeros(4, np.float32)), "x must have 2 dimensions"),
        (dict(x=np.zeros((4, 2), np.float32).T), "x must be C-contiguous"),
        (dict(x=[[0.0] * 4] * 2), "x must be a numpy array"),
        (dict(w=np.zeros((5, 3), np.float32)), r"w must have shape \(4, N\)"),
        (dict(w=np.zeros((4, 3), np.float16)), "w must be float32"),
        (dict(w=np.zeros((3, 4), np.float32).T), "w must be C-contiguous"),
        (dict(b=np.zeros(4, np.float32)), r"b must have shape \(3,\)"),
        (dict(b=np.zeros((1, 3), np.float32)), "b must have 1 dimensions"),
        (dict(out=np.zeros((2, 4), np.float32)), r"out must have shape \(2, 3\)"),
        (dict(out=np.zeros((2, 3), np.float64)), "out must be float32"),
        (dict(gelu=True, accumulate=True, out=np.zeros((2, 3), np.float32)), "gelu and accumulate"),
        (dict(accumulate=True), "accumulate=True needs out"),
    ],
)
def test_linear_rejects_bad_arguments(changes, match):
    args = {**GOOD, **changes}
    with pytest.raises(ValueError, match=match):
        checks.linear(**args)


def test_out_must_not_overlap_inputs():
    x = np.zeros((3, 3), np.float32)
    with pytest.raises(ValueError, match="out must not overlap x"):
        checks.linear(x, np.zeros((3, 3), np.float32), np.zeros(3, np.float32), out=x)
    with pytest.raises(ValueError, match="out must not overlap x"):
        checks.linear_nt(x, np.zeros((3, 3), np.float32), out=x)


def test_out_must_be_writable():
    out = np.zeros((2, 3), np.float32)
    out.flags.writeable = False
    with pytest.raises(ValueError, match="out must be writable"):
        checks.linear(GOOD["x"], GOOD["w"], GOOD["b"], out)


@pytest.mark.parametrize(
    "x, w, match",
    [
        (np.zeros((2, 4), np.float32), np.zeros((3, 5), np.float32), r"w must have shape \(N, 4\)"),
        (np.zeros((2, 4), np.int32), np.zeros((3, 4), np.float32), "x must be float32"),
        (np.zeros((2, 4), np.float32), np.zeros((4, 3), np.float32).T, "w must be C-contiguous"),
        (np.zeros((2, 4), np.float32), np.zeros((1, 3, 4), np.float32), "w must have 2 dimensions"),
    ],
)
def test_linear_nt_rejects_bad_arguments(x, w, match):
    with pytest.raises(ValueError, match=match):
        checks.linear_nt(x, w)


@pytest.mark.skipif(not target_has_fma(), reason="packed fused multiply-adds need an x86-64 target with FMA")
@pytest.mark.parametrize("kernel_name", ["tiles.dot_row", "tiles.dot_tile", "tiles.stream_rows"])
def test_inner_loops_compile_to_packed_fmas(kernel_name):
    """The hot loops must vectorise into packed (ymm/zmm) fused multiply-adds, not scalar code, on a target
    with FMA (the CPU Numba compiles for: NUMBA_CPU_NAME may name another than the host). Cached code
    cannot be inspected, so a fresh uncached copy of the kernel is compiled here, with its own flags
    (stream_rows is compiled without fastmath, dot_tile is LLVM IR called from a wrapper)."""
    import re

    from numba import njit
    from tinygpt.kernels import tiles

    module, name = kernel_name.split(".")
    a, b = np.ones((4, 64), np.float32), np.ones((8, 64), np.float32)
    if name == "dot_tile":
        fresh = njit(lambda a, b: tiles.dot_tile(a, (0, 1, 2), b, (0, 1, 2, 3), 0, 64))
        fresh(a, b)
    elif name == "stream_rows":
        fresh = njit(tiles.stream_rows.py_func)
        fresh(a, np.ones((64, 32), np.float32), 0, 64, np.zeros((4, 32), np.float32))
    else:
        fresh = njit(fastmath=tiles.FAST)(getattr({"matmul": matmul, "tiles": tiles}[module], name).py_func)
        fresh(a[0], b[0])
    assembly = fresh.inspect_asm(fresh.signatures[0])
    assert re.search(r"vfmadd\d+ps\s[^\n]*%[yz]mm", assembly)


# --- rows are independent -----------------------------------------------------------------------------------
# For up to SMALL_M rows, out[i] must be bit-identical whatever other rows share the call (see
# independent_rows.py), under 1 and 2 threads (the slabs of w follow the thread count).


# distilgpt2's products (attn.c_attn with bias, attn.c_proj and mlp.c_proj accumulating into the residual,
# mlp.c_fc with GELU), then awkward ones: K not a multiple of 4 or 8 (stream remainders, lane tails), N not a
# multiple of 64 or of 4, K smaller than the 8 weight streams.
LINEAR_CASES = [
    (768, 2304, {}),
    (768, 768, {"accumulate": True}),
    (768, 3072, {"gelu": True}),
    (3072, 768, {"accumulate": True}),
    (803, 130, {}),
    (37, 70, {"gelu": True}),
    (5, 3, {"accumulate": True}),
]


@pytest.mark.parametrize("k, n, options", LINEAR_CASES)
def test_linear_rows_are_independent(k, n, options, thread_count):
    rng = np.random.default_rng(k * 31 + n)
    x, w, b, base = random(rng, SMALL_M, k), random(rng, k, n), random(rng, n), random(rng, SMALL_M, n)

    def product(index):
        out = base[index].copy() if options.get("accumulate") else None
        return linear(x[index], w, b, out, **options)

    assert_rows_independent(product, SMALL_M, rng)


# the LM head (tied embedding, [50257, 768]); K not a multiple of 8 over two k-blocks; K > 4096 in 7 k-blocks
# with a tail; a tiny one
@pytest.mark.parametrize("n, k", [(50257, 768), (130, 803), (70, 5000), (5, 13)])
def test_linear_nt_rows_are_independent(n, k, thread_count):
    rng = np.random.default_rng(n + k)
    x, w = random(rng, SMALL_M, k), random(rng, n, k)
    assert_rows_independent(lambda index: linear_nt(x[index], w), SMALL_M, rng)
