"""int8 weight-only kernels against our float32 kernels and np.matmul on distilgpt2's weight shapes.

Run: python benchmarks/quantized_matmul.py [--repeats 7] [--threads N] [--rows 1 8 512]

For each weight shape and M (default 1, 8, 512) it prints, for linear_nt_int8, our float32
linear / linear_nt and np.matmul (float32), the median time per call (same process, same inputs), GFLOP/s
and weight GB/s (each engine's own weight bytes / time: int8 bytes for the int8 kernel), then the float32
kernels' time over the int8 kernel's. Each repeat cycles through enough copies of the weight to overflow
the last-level cache, so small-M timings see DRAM bandwidth as a real decode step does. The machine's
parallel read bandwidth is printed first for scale, and the time to quantize the LM head last. The engines
take turns within each repeat; still, timings on a shared machine are noisy: compare engines within a
run, not across runs.

Measurements behind the int8 kernels' design (tinygpt/kernels/quantized.py, intdot.py), from paired runs on
the 2-core AMD EPYC (Zen 3, AVX2, 2 threads) the kernels were tuned on; the M = 1 and M = 8 rows of this
table show the products on any CPU, the rest need the named constant or loop changed and this rerun:
* Widening each int8 weight to float32 before a float multiply-add left the one-token products
  compute-bound at ~28 GB/s of weights; integer multiply-adds (intdot) with the weights prefetched and four
  rows read side by side reached 40-48 GB/s on distilgpt2's larger products, against 25-34 GB/s with one
  stream per core.
* WEIGHT_STREAMS: 2 streams per thread took 14-27 % less time on the LM head than 1, and 4 streams 6-10 %
  less than 2 on every shape (22-34 -> 31-40 GB/s).
* WEIGHTS_PER_PASS = 32: 64 per pass, one prefetch per cache line, made one-token decode 3-4 % slower.
* PREFETCH_AHEAD_BYTES = 1536: 30 -> 34 GB/s from DRAM on the LM head, against no software prefetch.
* One dot product per output over [outputs, inputs] weights, with one stream per thread, ran a layer's
  four one-token products ~1.2x faster than streaming [inputs, outputs] rows into partial sums.
* INT16_ROWS = 16: the integer path was faster up to 24-32 rows on distilgpt2's shapes. Raised to SMALL_M
  = 48 so that every row of an engine step is computed the same way (rows independent): paired against the
  dequantized float32 GEMM at 17..48 rows (2 threads, 2-core AMD EPYC Zen 3, AVX2 + FMA, a shared and noisy
  machine), the integer path took 0.67-0.99x the GEMM's time at M = 24 and 0.80-0.99x at M = 48 on
  distilgpt2's five shapes: no slower anywhere.
* Batched decode (1 < M <= INT16_ROWS) takes two rows of weights per pass (intdot.dot_x_rows_weight_pairs,
  one vector each, eight accumulators) instead of one row with two vectors: each x vector loaded then serves
  two rows of weights. At M = 16, 2 threads (2-core AMD EPYC Zen 3, AVX2), the integer dot products alone of
  the LM head took 5.2 ms against 6.1 (c_attn 0.24 against 0.28, c_fc 0.33 against 0.38); four rows of x by
  two of weights with one vector per pass, or eight rows of x by one, were the fastest of the shapes tried
  (2x4, 4x3 and 6x2 were slower). Keeping a slab's integer sums and scaling them afterwards, in a loop over
  outputs, took the whole LM head product from 6.3 to 5.8 ms.
* A 4x3 tile of integer dot products (each ending in horizontal sums) ran no faster than the float32 GEMM at
  M = 512 on Zen 3. The int8 GEMM of kernels/gemm.py, 6x16 broadcast tiles of vpmaddwd + vpaddd over int16
  pairs (12 of each per pair of k, no horizontal sums), ran its inner loop at ~1.55x the float32 tile's
  multiply-adds per second on one Zen 3 core (~77 G/s against ~50), and whole products at M = 512 1.43-1.57x
  faster than our float32 GEMM (2 threads, a machine shared with other work); a 512-token int8 prefill went
  from 0.92x to 1.36-1.41x the float32 one.
* INT16_ROWS stays at SMALL_M = 48 with that GEMM: the few-rows integer path took 0.24-0.33x the GEMM's time at
  M = 8, 0.58-0.72x at M = 24 and 0.82-0.92x at M = 48 on distilgpt2's five shapes (paired, median of 9,
  2 threads, Zen 3); both give the same bits, so the switch is a matter of speed alone.
* The integer dot products return float64 sums (intdot: each int32 lane converted and the lanes added in float64,
  exact), where they returned int64: AVX2 has no vector int64 -> float64 conversion, so the few-rows kernel's
  scaling loop ran one output at a time. Paired in one process against the int64 version (2 threads, 2-core AMD
  EPYC Zen 3, AVX2, 2026-12-03; same bits): M = 16 took 0.85-0.94x the time on the five shapes (the LM head
  5.83 against 6.44 ms), M = 1 0.98-1.00x.
* int16_row's peak found on the bit patterns (an integer max): a float max that keeps NaN, which does not
  vectorise, was 3x slower on a 3072-wide row.
* quantize_columns quantizing in tiles: a float32 transposed copy made first took more than half of an
  int8 model load.
* The decode kernels' per-output steps (quantized._output_value, _finish_output) inlined: as calls, they
  made the products slower, M = 1 by 1.1-1.5x and M = 8 by ~1.9x (paired runs, 1 thread, on a 2-core AMD
  EPYC Zen 4 with AVX-512); inlined, the kernels ran as fast as with the steps written out in each loop.
"""

import argparse
import math
import time

import numpy as np

from tinygpt.kernels.matmul import linear, linear_nt
from tinygpt.kernels.quantized import linear_nt_int8, quantize_rows
from tinygpt.kernels.threads import get_num_threads, set_num_threads

# The float32 benchmark next to this file: the same shapes, rows and bandwidth probe.
from matmul import CACHE_OVERFLOW_BYTES, PAUSE_S, ROWS, SHAPES, median_seconds, read_bandwidth

BUSTED_ROWS = 64  # up to this M the weight's memory traffic matters: time on cache-busting copies


def cache_busting_copies(weight: np.ndarray, rows: int) -> list[np.ndarray]:
    """``weight`` plus enough copies to overflow the last-level cache (one copy when M is GEMM-sized)."""
    count = math.ceil(CACHE_OVERFLOW_BYTES / weight.nbytes) if rows <= BUSTED_ROWS else 1
    return [weight] + [weight.copy() for _ in range(count - 1)]


def interleaved_seconds(engines: dict, repeats: int) -> dict:
    """Median seconds per call of each engine (name -> (call, weight copies)). The engines take turns within
    every repeat, so load from other processes falls on all of them alike; each repeat of an engine calls
    it once per weight copy, after a pause that lets the previous engine's worker threads go idle."""
    for call, weights in engines.values():
        call(weights[0])  # compile / warm up
    times = {name: [] for name in engines}
    for _ in range(repeats):
        for name, (call, weights) in engines.items():
            time.sleep(PAUSE_S)
            start = time.perf_counter()
            for w in weights:
                call(w)
            times[name].append((time.perf_counter() - start) / len(weights))
    return {name: float(np.median(seconds)) for name, seconds in times.items()}


def bench_shape(name: str, depth: int, width: int, layout: str, rows: int, repeats: int, rng) -> str:
    shape = (depth, width) if layout == "kn" else (width, depth)
    w = rng.standard_normal(shape, dtype=np.float32)
    # int8 weights are stored with outputs as rows whatever the float32 layout (as the model loader does).
    q, scale = quantize_rows(np.ascontiguousarray(w.T) if layout == "kn" else w)
    x = rng.standard_normal((rows, depth), dtype=np.float32)
    bias = rng.standard_normal(width, dtype=np.float32)
    out = np.empty((rows, width), np.float32)
    if layout == "kn":
        engines = {
            "int8": (lambda qc: linear_nt_int8(x, qc, scale, bias, out), cache_busting_copies(q, rows)),
            "float32": (lambda wc: linear(x, wc, bias, out, gemm="numba"), cache_busting_copies(w, rows)),
            "numpy": (lambda wc: np.matmul(x, wc, out=out), cache_busting_copies(w, rows)),
        }
    else:
        engines = {
            "int8": (lambda qc: linear_nt_int8(x, qc, scale, out=out), cache_busting_copies(q, rows)),
            "float32": (lambda wc: linear_nt(x, wc, out, gemm="numba"), cache_busting_copies(w, rows)),
            "numpy": (lambda wc: np.matmul(x, wc.T, out=out), cache_busting_copies(w, rows)),
        }
    seconds = interleaved_seconds(engines, repeats)
    int8, f32, ref = seconds["int8"], seconds["float32"], seconds["numpy"]
    flops = 2.0 * rows * depth * width

    def cells(seconds: float, weight_bytes: int) -> str:
        return f"{seconds * 1e3:8.3f} {flops / seconds / 1e9:6.1f} {weight_bytes / seconds / 1e9:5.1f}"

    return (
        f"{name:11s} {shape[0]:>5}x{shape[1]:<5} {rows:3d} | {cells(int8, q.nbytes)} | {cells(f32, w.nbytes)} |"
        f" {cells(ref, w.nbytes)} | {f32 / int8:5.2f} {ref / int8:5.2f}"
    )


def quantize_seconds(repeats: int, rng) -> float:
    """Median time of quantize_rows on a float32 LM-head-sized matrix (a load-time cost)."""
    wte = rng.standard_normal((50257, 768), dtype=np.float32)
    quantize_rows(wte)
    return median_seconds(lambda: quantize_rows(wte), repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="timed repeats per measurement (median)")
    parser.add_argument("--threads", type=int, default=None, help="kernel threads (default: tinygpt's)")
    parser.add_argument("--rows", type=int, nargs="+", default=ROWS, help="values of M (rows of x) to time")
    args = parser.parse_args()
    if args.threads is not None:
        set_num_threads(args.threads)
    print(f"threads: {get_num_threads()} (np.matmul uses its BLAS's own pool)")
    one_stream, four_streams = read_bandwidth(args.repeats)
    print(f"parallel read bandwidth: {one_stream:.1f} GB/s reading one stream per thread, {four_streams:.1f} GB/s "
          "reading four")
    engine = f"{'ms':>8s} {'GFLOP/s':>6s} {'GB/s':>5s}"
    columns = f"{'int8 (ours)':^20s} | {'float32 (ours)':^20s} | {'np.matmul float32':^20s}"
    print(f"{'':27s} | {columns} | f32 / int8 time")
    print(f"{'weight':11s} {'shape':>11s} {'M':>3s} | {engine} | {engine} | {engine} |  ours numpy")
    rng = np.random.default_rng(0)
    for name, depth, width, layout in SHAPES:
        for rows in args.rows:
            print(bench_shape(name, depth, width, layout, rows, args.repeats, rng), flush=True)
    print(f"quantize_rows 50257x768: {quantize_seconds(args.repeats, rng) * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
