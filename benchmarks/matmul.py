"""Our Numba linear/linear_nt kernels against np.matmul on distilgpt2's weight shapes.

Run: python benchmarks/matmul.py [--repeats 7] [--threads N] [--rows 1 8 512]

For each weight shape and M in --rows (default 1, 8, 512) it prints the median time of both engines (same process, same
inputs), GFLOP/s, weight GB/s (weight bytes / time: what bounds decode) and the speed ratio. Each repeat
cycles through enough copies of the weight to overflow the last-level cache, so small-M timings see
DRAM bandwidth as they would in a real decode step. The machine's parallel read bandwidth (one and four
sequential streams per thread) is printed first for scale. Our ``linear`` also adds the bias; np.matmul
does not. "ours" is always our own Numba kernel (``gemm="numba"``), although the engine hands products of
M > SMALL_M rows to np.matmul by default (see tinygpt/kernels/matmul.py): this table is the gap that
decision rests on. Timings on a shared machine are noisy: compare the two engines within a run, not across
runs.

Measurements behind the float32 kernels' design (tinygpt/kernels/matmul.py, tiles.py, activations.py), from
paired runs on the 2-core AMD EPYC (Zen 3, AVX2 + FMA, 2 threads) the kernels were tuned on; this table
shows the first two on any CPU, the others need the named constant or loop changed and this benchmark rerun:
* Decode products (M = 1, 8) of both engines ran at DRAM bandwidth. At M = 512 the first GEMM, 3x4 tiles of
  dot products (now only linear_nt's), reached 0.7-0.8x OpenBLAS's speed (126 vs 179 GFLOP/s).
* linear's GEMM (kernels/gemm.py), 6x16 broadcast tiles, whose inner loop alone runs at ~100 GFLOP/s on one
  core (the FMA peak at ~3.1 GHz): packing a panel of w one k-block at a time left it at 0.8-0.9x OpenBLAS
  (the panel's outputs went out to L3 between k-blocks); packing the whole panel first and keeping a 96-row
  block of outputs in L2 across k-blocks, 0.95-1.0x in a prototype. Packing x as well changed nothing. In the
  kernel, slice assignments (Numba copies the source to a temporary first) cost 5-15 %, and LLVM rebuilding
  the six row addresses of x from one base inside the k loop (spilling) a few % more; with both fixed, bare
  products at M = 512 and 2048 ran 0.88-0.94x np.matmul (paired, 2 threads). A whole 512-token prefill with
  this GEMM for every product ran 1.08x faster than with BLAS plus its bias/GELU pass, and 1.77x faster in a
  process that imported torch and transformers first (their spinning pools): hence our GEMM by default.
* SMALL_M = 48: the M up to which streaming w (tiles.stream_rows) beat the GEMM, which packs w first.
* A 512-token prefill with BLAS for the large products was ~1.3x slower than all-Numba while both thread
  pools kept their idle threads spinning, and 1.1-1.4x faster once tinygpt/__init__.py shortened that
  (GOMP_SPINCOUNT, OPENBLAS_THREAD_TIMEOUT; benchmarks/engine.py times whole prefills).
* _gemv_nt reading the two halves of each thread's slab side by side: the LM head read 10-14 % faster than
  as one stream per thread, and than with the two halves' rows taken in turn. (It now reads four quarters,
  with tiles.lane_dots: the LM head at M = 1 ran 0.95-1.01x the two-halves kernel's time, paired.)
* tiles.stream_rows, one order for every M (so rows are independent; compiled without fastmath): first 8 rows
  of w per pass from 8 distant runs, summed as a fixed fmuladd tree, one row of x per pass: against the former
  per-M kernels (paired, 2 threads, shared noisy machine) M = 1 0.97-1.06x the time on the four Conv1D shapes,
  M = 8 0.96-1.17x, M = 48 1.07-1.48x (slowest: mlp.c_fc, 768 x 3072); in the engine's batch-8 decode the
  products took ~1.4x their former time. Now 4 rows of w per pass from 4 distant runs, two rows of x per pass
  (each weight load serves both), each sum a chain of fmuladds: M = 1, 8, 16 within noise of the former per-M
  kernels on all four shapes (three alternating rounds of both trees in separate processes).
* Row-independent linear_nt GEMM tile (tiles.dot_tile, explicit lanes in LLVM IR) against LLVM's
  vectorisation of a 3x4 tile of plain dot-product loops (the former dot_3x4): the same speed on a panel in L2 (1 thread), but the LM head at M = 16..48
  took 1.14-1.4x longer inside the parallel kernel (cause not found yet).
* GELU: math.exp / np.tanh compile to scalar libm calls (15-50 ns each); activations.exp_f64 vectorises to
  ~3 ns per GELU. GELU computed inside a loop over a 2-D array ran scalar, at twice the cost of the product
  it finished; gelu_in_place over whole rows vectorises.
"""

import argparse
import math
import time

import numpy as np
from numba import njit, prange

from tinygpt.kernels.matmul import linear, linear_nt
from tinygpt.kernels.threads import get_num_threads, set_num_threads

# (name, K, N, layout): "kn" weights are [K, N] (Conv1D, used by linear), "nk" are [N, K] (the tied LM head)
SHAPES = [
    ("attn.c_attn", 768, 2304, "kn"),
    ("attn.c_proj", 768, 768, "kn"),
    ("mlp.c_fc", 768, 3072, "kn"),
    ("mlp.c_proj", 3072, 768, "kn"),
    ("lm_head", 768, 50257, "nk"),
]
ROWS = (1, 8, 512)
CACHE_OVERFLOW_BYTES = 128 << 20  # 4x a 32 MB L3
PAUSE_S = 0.25  # lets the other engine's worker threads stop spinning before we time this one


@njit(parallel=True, fastmath=True, cache=True)
def _sum(a):
    total = 0.0
    for i in prange(a.size):
        total += a[i]
    return total


@njit(parallel=True, fastmath=True, cache=True)
def _sum_four_streams(a, slabs):
    """The sum of a, each of ``slabs`` tasks reading its contiguous slab as 4 quarters side by side."""
    per_slab = a.size // slabs
    quarter = per_slab // 4
    partials = np.zeros(slabs)
    for t in prange(slabs):
        base = t * per_slab
        # quarters as slices indexed from 0: the loop then vectorises (no negative-index wraparound checks)
        q0, q1 = a[base : base + quarter], a[base + quarter : base + 2 * quarter]
        q2, q3 = a[base + 2 * quarter : base + 3 * quarter], a[base + 3 * quarter : base + 4 * quarter]
        s0 = s1 = s2 = s3 = np.float32(0.0)
        for i in range(quarter):
            s0 += q0[i]
            s1 += q1[i]
            s2 += q2[i]
            s3 += q3[i]
        partials[t] = (s0 + s1) + (s2 + s3)
    return partials.sum()


def read_bandwidth(repeats: int) -> tuple[float, float]:
    """GB/s of a parallel sum over 256 MB, reading one sequential stream per thread, then four: decode's
    weight-streaming kernels read several streams per thread (see tinygpt/kernels/tiles.py), which this
    machine serves faster."""
    a = np.ones(64 << 20, np.float32)
    slabs = get_num_threads()
    one, four = (lambda: _sum(a)), (lambda: _sum_four_streams(a, slabs))
    one()
    four()
    return a.nbytes / median_seconds(one, repeats) / 1e9, a.nbytes / median_seconds(four, repeats) / 1e9


def median_seconds(run, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def paired_seconds(ours, theirs, weights, repeats: int) -> tuple[float, float, np.ndarray]:
    """Median seconds per call of each engine, and the per-repeat ratios theirs / ours: each repeat times one
    pass of ours then one of theirs (every weight copy once), so both see the same moment of a shared machine."""
    for call in (ours, theirs):
        call(weights[0])  # compile / warm up
    times = np.empty((repeats, 2))
    for r in range(repeats):
        for e, call in enumerate((ours, theirs)):
            time.sleep(PAUSE_S)
            start = time.perf_counter()
            for w in weights:
                call(w)
            times[r, e] = (time.perf_counter() - start) / len(weights)
    return float(np.median(times[:, 0])), float(np.median(times[:, 1])), times[:, 1] / times[:, 0]


def bench_shape(name, depth, width, layout, rows, repeats, rng) -> str:
    shape = (depth, width) if layout == "kn" else (width, depth)
    weight_bytes = depth * width * 4
    copies = math.ceil(CACHE_OVERFLOW_BYTES / weight_bytes) if rows <= 8 else 1
    weights = [rng.standard_normal(shape, dtype=np.float32) for _ in range(copies)]
    x = rng.standard_normal((rows, depth), dtype=np.float32)
    bias = rng.standard_normal(width, dtype=np.float32)
    out = np.empty((rows, width), np.float32)
    if layout == "kn":
        ours, theirs, ratios = paired_seconds(lambda w: linear(x, w, bias, out, gemm="numba"),
                                              lambda w: np.matmul(x, w, out=out), weights, repeats)
    else:
        ours, theirs, ratios = paired_seconds(lambda w: linear_nt(x, w, out, gemm="numba"),
                                              lambda w: np.matmul(x, w.T, out=out), weights, repeats)
    flops = 2.0 * rows * depth * width

    def cells(seconds):
        return f"{seconds * 1e3:9.3f} {flops / seconds / 1e9:7.1f} {weight_bytes / seconds / 1e9:6.1f}"

    return (f"{name:12s} {shape[0]:>5}x{shape[1]:<5} {rows:4d} | {cells(ours)} | {cells(theirs)} | "
            f"{np.median(ratios):5.2f} ({ratios.min():.2f}-{ratios.max():.2f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="timed repeats per measurement (median)")
    parser.add_argument("--threads", type=int, default=None, help="kernel threads (default: tinygpt's)")
    parser.add_argument("--rows", type=int, nargs="+", default=list(ROWS), help="values of M (rows of x) to time")
    args = parser.parse_args()
    if args.threads is not None:
        set_num_threads(args.threads)
    print(f"threads: {get_num_threads()} (np.matmul uses its BLAS's own pool)")
    one_stream, four_streams = read_bandwidth(args.repeats)
    print(f"parallel read bandwidth: {one_stream:.1f} GB/s reading one stream per thread, {four_streams:.1f} GB/s "
          "reading four")
    print(f"{'weight':12s} {'shape':>11s} {'M':>4s} | {'ours ms':>9s} {'GFLOP/s':>7s} {'GB/s':>6s} |"
          f" {'numpy ms':>9s} {'GFLOP/s':>7s} {'GB/s':>6s} | numpy time / ours, median of paired repeats (range)")
    rng = np.random.default_rng(0)
    for name, depth, width, layout in SHAPES:
        for rows in args.rows:
            print(bench_shape(name, depth, width, layout, rows, args.repeats, rng), flush=True)


if __name__ == "__main__":
    main()
