"""Does scoring run at the speed of the forward pass, in bounded memory (issue #17)?

    python benchmarks/scoring.py [--dtypes float32 int8] [--rounds 5] [--threads N]

On the random-init distilgpt2-shaped model of benchmarks/engine.py (built once, cached under benchmarks/.cache/):

  speed    per dtype, in one process, taking turns each round: prefill-512 (a 512-token prompt through a fresh
           cache, next-token logits of the last position only: what benchmarks/engine.py times) and scoring
           (``Model.score`` of 8 documents of 512 tokens: every position's log-probability). Tokens/s of each and
           their ratio per round; the table gives the median round. Scoring also runs the LM head at every
           position (77 MFLOP a token beside the blocks' ~85), so its ceiling is about half of prefill's.
  memory   per dtype and workload, a fresh process: load the model, score one short document (kernels loaded,
           weights paged in), read the resident set (runtime + weights), reset the peak (/proc/self/clear_refs),
           run the workload, read the peak (VmHWM). Every weight is read once before the first reading, so
           that the token embeddings a workload touches count as weights, not as its own memory. The workloads: ``Model.perplexity`` of a 20,000-token text at
           the default stride, and 300 documents of 20-1,000 tokens scored 100 at a time, as ``tinygpt score``
           streams a corpus (memory grows with a pack of windows, not with the corpus: a larger one only takes
           longer).

Targets (issue #17): scoring tokens/s >= 0.45x prefill-512 tokens/s, float32 and int8; peak RSS <= runtime +
weights + 200 MB, whatever the text or corpus size.
"""

from __future__ import annotations

import tinygpt  # noqa: I001 -- before NumPy: tinygpt sets NumPy's BLAS thread variables on import

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import engine as engine_benchmark  # the distilgpt2-shaped model it builds and caches
from batching import cpu_lines
from tinygpt.model import Model

PROMPT = 512
DOCUMENTS = 8  # of PROMPT tokens each, per scoring round
TARGET_RATIO = 0.45
TARGET_EXTRA_MB = 200
WORKLOADS = ("long-text", "corpus")


def random_ids(rng, n: int) -> np.ndarray:
    return rng.integers(0, 50257, n)


def speed(model: Model, rounds: int) -> list[tuple[float, float]]:
    """(prefill tokens/s, scoring tokens/s) per round, after one warm-up of each."""
    rng = np.random.default_rng(0)
    prompt = random_ids(rng, PROMPT)
    documents = [random_ids(rng, PROMPT) for _ in range(DOCUMENTS)]

    def prefill():
        model.step(model.new_cache(capacity=PROMPT), [prompt])

    prefill()
    model.score(documents[:2])
    figures = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(4):
            prefill()
        prefill_rate = 4 * PROMPT / (time.perf_counter() - start)
        start = time.perf_counter()
        model.score(documents)
        figures.append((prefill_rate, DOCUMENTS * PROMPT / (time.perf_counter() - start)))
    return figures


def status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024 / 1e6
    raise RuntimeError(f"no {field} in /proc/self/status")


def memory_child(dtype: str, workload: str, threads: int) -> None:
    """Run one workload in this (fresh) process and print its memory figures as JSON."""
    tinygpt.set_num_threads(threads)
    model = Model.from_pretrained(engine_benchmark.build_model(), dtype=dtype)
    rng = np.random.default_rng(1)
    model.score([random_ids(rng, 50)])
    for weight in model.weights.values():  # every page of the weights resident: the token embeddings too, of
        np.asarray(getattr(weight, "q", weight)).sum()  # which a short text touches a few rows (int8 keeps them)
    base = status_mb("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # the peak (VmHWM) starts again from the current RSS
    if workload == "long-text":
        tokens = 20_000
        model.perplexity(random_ids(rng, tokens))
    else:
        lengths = rng.integers(20, 1001, 300)
        tokens = int(lengths.sum())
        for first in range(0, len(lengths), 100):
            model.score([random_ids(rng, n) for n in lengths[first:first + 100]])
    print(json.dumps({"base": base, "peak": status_mb("VmHWM"), "tokens": tokens}))


def memory(dtype: str, workload: str, threads: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--memory-child", dtype, workload, "--threads", str(threads)],
                         check=True, capture_output=True, text=True, cwd=Path(__file__).parent).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dtypes", nargs="+", choices=("float32", "int8"), default=["float32", "int8"])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--memory-child", nargs=2, metavar=("DTYPE", "WORKLOAD"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(*args.memory_child, args.threads)
        return
    tinygpt.set_num_threads(args.threads)
    engine_benchmark.build_model()
    print("\n".join(cpu_lines(args.threads)))
    print(f"\n| weights | prefill-{PROMPT} tok/s | scoring tok/s | ratio (median of {args.rounds} rounds) | "
          f"ratio range | target |")
    print("|---|---|---|---|---|---|")
    for dtype in args.dtypes:
        figures = speed(Model.from_pretrained(engine_benchmark.build_model(), dtype=dtype), args.rounds)
        ratios = [score / prefill for prefill, score in figures]
        median = statistics.median(ratios)
        print(f"| {dtype} | {statistics.median(p for p, _ in figures):.0f} | "
              f"{statistics.median(s for _, s in figures):.0f} | {median:.3f} | {min(ratios):.3f}-{max(ratios):.3f} "
              f"| >= {TARGET_RATIO} {'met' if median >= TARGET_RATIO else 'NOT met'} |")
    print("\n| weights | workload | tokens | runtime + weights MB | peak MB | extra MB | target |")
    print("|---|---|---|---|---|---|---|")
    for dtype in args.dtypes:
        for workload in WORKLOADS:
            m = memory(dtype, workload, args.threads)
            extra = m["peak"] - m["base"]
            print(f"| {dtype} | {workload} | {m['tokens']:,} | {m['base']:.0f} | {m['peak']:.0f} | {extra:.0f} | "
                  f"<= {TARGET_EXTRA_MB} {'met' if extra <= TARGET_EXTRA_MB else 'NOT met'} |")


if __name__ == "__main__":
    main()
