"""What does the block pool cost? paged_attention against attention on the same keys and values.

    python benchmarks/paged_attention.py [--threads N ...] [--block-size 16] [--rounds 3]

distilgpt2's attention shape (H=12, D=64, 512 positions). The same random keys and values are stored twice:
as attention's contiguous [S, H, 512, D] cache and as a pool of blocks of --block-size slots in shuffled
block order (a pool that has served many requests). Three workloads:

  decode 16x512   16 sequences of 512 positions, one query each (attention's one-query path)
  chunk 48@464    one sequence, 48 queries at positions 464..511 (a prefill chunk after 464 cached positions)
  prompt 512      one sequence, all 512 queries in one call (attention's prompt path)

For each thread count it alternates the two kernels, best-of timings paired round by round, and prints the
best time of each and the ratio paged / contiguous of every round: on a shared machine compare the ratios.

First measurement (2-core AMD EPYC, AVX2 + FMA, shared with another job: load average ~2.3, so 2 threads ran
no faster than 1), paged / contiguous, 1 thread, median of 3 paired rounds:

  block size 16   decode 16x512 1.6 (8.6 vs 5.3 ms)   chunk 48@464 1.9 (5.4 vs 2.8 ms)   prompt 512 ~2.5-3 (37 vs 13.5 ms)
  block size 32   decode ~1.3 (6.5 vs 5.7 ms)         chunk ~1.25 (3.8 vs 3.1 ms)         prompt 1.7 (21.7 vs 12.7 ms)

Where paged_attention lost: its loops ran over one block's 16 or 32 slots at a time, each score a chain of
fused multiply-adds stored and reloaded every four dimensions, so each chain waited on its last step (and LLVM
guarded each short loop with run-time overlap checks). Since 2026-12-03 the chains run on register tiles
(``tiles.broadcast_chains``: 4 chunks of 16 keys of one query, or 16 keys of 4 queries, or 64 dimensions of
the value rows: 8 independent chains each), the same chains in the same order, so the same bits. Paired
against the code before, two runs each taking turns (2 threads, 2-core AMD EPYC Zen 3, AVX2 + FMA, block
size 16), paged / contiguous per round:

  before   decode 16x512 1.42-2.21 (4.3-4.8 ms)   chunk 48@464 1.71-2.04 (3.5-3.7 ms)   prompt 512 1.81-2.18 (20-24 ms)
  after    decode 16x512 0.79-0.99 (2.9 ms)       chunk 48@464 0.65-0.69 (1.3-1.4 ms)   prompt 512 0.79-0.85 (8-10 ms)

The same tile on the contiguous prompt path (scores down the columns of the whole transposed key matrix) was
slower there (and left out), 1.15x at 512 positions and 1.29x at 1,024: the 64 dimensions of a chunk of 16 keys
lie one row of that matrix apart (4 KB apart at 1,024 positions), where a pool block holds them in one 4 KB run.

Later the same day the contiguous prompt path (and ``packed_attention``) moved to those chains too, on the GEMM's
6x16 register tiles over copies of the head's keys blocked as a pool holds them: prompts now get the same bits
from both kernels, and the contiguous one is the faster on prompts (one run, 2 threads, same machine in its
slower afternoon state; paged / contiguous per round):

  after    decode 16x512 0.67-0.91 (2.0 vs 2.2 ms)   chunk 48@464 1.00-1.29 (1.0 vs 0.9 ms)   prompt 512 1.17-1.25 (7.4 vs 6.4 ms)

The paged kernel still takes 4 queries at a time with 8 chains; 6 queries by 16 keys, as the contiguous path
does, is its next step.
"""

from __future__ import annotations

import argparse
import timeit

import tinygpt  # noqa: F401  (first, so it can configure the BLAS thread pool before NumPy loads)
import engine  # the benchmark next to this file: its machine line
import numpy as np
from tinygpt.kernels import attention, paged_attention
from tinygpt.kernels.threads import get_num_threads, set_num_threads

HEADS, DIM, LENGTH, SEQUENCES = 12, 64, 512, 16
SCALE = DIM**-0.5


def caches(rng, slots):
    """The contiguous caches and the same keys/values as a pool of shuffled blocks, with its block tables."""
    keys = rng.standard_normal((SEQUENCES, HEADS, LENGTH, DIM), dtype=np.float32)
    values = rng.standard_normal((SEQUENCES, HEADS, LENGTH, DIM), dtype=np.float32)
    per_seq = LENGTH // slots
    tables = rng.permutation(SEQUENCES * per_seq).astype(np.int32).reshape(SEQUENCES, per_seq)
    k_pool = np.empty((SEQUENCES * per_seq, HEADS, DIM, slots), np.float32)
    v_pool = np.empty((SEQUENCES * per_seq, HEADS, slots, DIM), np.float32)
    for s in range(SEQUENCES):
        for i in range(per_seq):
            k_pool[tables[s, i]] = keys[s, :, i * slots : (i + 1) * slots].transpose(0, 2, 1)
            v_pool[tables[s, i]] = values[s, :, i * slots : (i + 1) * slots]
    return keys, values, k_pool, v_pool, tables


def workloads(rng, slots):
    """name -> (paged call, contiguous call) on the same data."""
    keys, values, k_pool, v_pool, tables = caches(rng, slots)
    kv_start = np.zeros(SEQUENCES, np.int64)
    calls = {}
    q = rng.standard_normal((SEQUENCES, HEADS, DIM), dtype=np.float32)
    seqs, positions = np.arange(SEQUENCES, dtype=np.int32), np.full(SEQUENCES, LENGTH - 1, np.int32)
    out, out4 = np.empty((SEQUENCES, HEADS * DIM), np.float32), np.empty((SEQUENCES, 1, HEADS * DIM), np.float32)
    q4 = np.ascontiguousarray(q[:, None])
    calls["decode 16x512"] = (  # default arguments: the loop below rebinds these names
        lambda q=q, seqs=seqs, positions=positions, out=out: paged_attention(
            q, k_pool, v_pool, tables, seqs, positions, SCALE, out),
        lambda q4=q4, out4=out4: attention(q4, keys, values, LENGTH - 1, kv_start, SCALE, out4))
    for name, first in (("chunk 48@464", LENGTH - 48), ("prompt 512", 0)):
        n = LENGTH - first
        q = rng.standard_normal((n, HEADS, DIM), dtype=np.float32)
        seqs, positions = np.zeros(n, np.int32), np.arange(first, LENGTH, dtype=np.int32)
        out, out4 = np.empty((n, HEADS * DIM), np.float32), np.empty((1, n, HEADS * DIM), np.float32)
        q4 = np.ascontiguousarray(q[None])
        calls[name] = (
            lambda q=q, seqs=seqs, positions=positions, out=out: paged_attention(
                q, k_pool, v_pool, tables[:1], seqs, positions, SCALE, out),
            lambda q4=q4, first=first, out4=out4: attention(
                q4, keys[:1], values[:1], first, kv_start[:1], SCALE, out4))
    return calls


def best_ms(call, number: int) -> float:
    call()
    return min(timeit.repeat(call, number=number, repeat=5)) / number * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, nargs="+", default=None, help="thread counts (default: tinygpt's)")
    parser.add_argument("--block-size", type=int, default=16, help="slots per pool block (a divisor of 512)")
    parser.add_argument("--rounds", type=int, default=3, help="paired rounds per workload")
    args = parser.parse_args()
    calls = workloads(np.random.default_rng(0), args.block_size)
    for threads in args.threads or [get_num_threads()]:
        set_num_threads(threads)
        print(f"block size {args.block_size}; {engine.machine_line(threads)}")
        for name, (paged, contiguous) in calls.items():
            number = 3 if name.startswith("prompt") else 20
            rounds = [(best_ms(paged, number), best_ms(contiguous, number)) for _ in range(args.rounds)]
            p, c = min(r[0] for r in rounds), min(r[1] for r in rounds)
            ratios = " ".join(f"{r[0] / r[1]:.2f}" for r in rounds)
            print(f"  {name:14s} paged {p:8.3f} ms   contiguous {c:8.3f} ms   paged/contiguous per round: {ratios}")


if __name__ == "__main__":
    main()
