"""Does continuous batching pay (issue #15)? Many callers sharing one Engine, on a model of distilgpt2's shape.

    python benchmarks/batching.py [--dtypes float32 int8] [--new-tokens 128] [--requests-per-submitter 3]
                                  [--rounds 2] [--threads N] [--quick]

Uses the random-init distilgpt2-shaped model of benchmarks/engine.py (built once, cached under
benchmarks/.cache/), loaded with float32 and with int8 weights. Every prompt is random token ids (32 of them
unless said otherwise), decoding is greedy with end-of-text disabled, so every request makes all its tokens.
After a warm-up (kernels compiled or loaded from Numba's cache, weights paged in), per dtype and round:

  Engine, n submitters   n = 1, 4, 16 threads, each submitting requests back to back (the next once the last
                         has finished) to one ``Engine(model, max_batch=16)``: new tokens of all requests / wall
                         time from the first submit to the last token. TTFT: submit -> the request's first
                         Event; ITL: the gap between consecutive Events of a row (both as the submitting
                         thread sees them, thread wake-ups included)
  1000-token prompt      15 submitters as above (one slot left, so the long prompt never waits for a row) and,
                         once every submitter's first request has made a quarter of its tokens, one 1000-token
                         prompt (16 new tokens: the context is 1024). Its own TTFT, and the ITL of the other
                         rows over its prefill (gaps that overlap submit -> its first token) next to their ITL
                         outside it
  repeated prefix        on an idle engine: an 800-token prompt (1 new token) run to the end, then the same 800
                         tokens + 10 new ones (max_new_tokens=1): its TTFT, the 800 cached positions reused
                         (the run checks that they were); then a fresh 810-token prompt, nothing cached: its
                         TTFT. 3 trials per round (the table gives p50 and max over all of them)
  static generate        ``model.generate`` of the 16 prompts of the 16 submitters' first requests as one batch:
                         16 x new tokens / wall time (the upper bound: no arrivals, one prefill)
  one at a time          the same 16 prompts, one ``model.generate`` call each: 16 x new tokens / wall time

Throughputs are the best of the rounds, latencies pooled over them; the workloads take turns within each round,
so a burst of load from elsewhere on a shared machine hits them alike. The run also checks that the
engine's 16 first requests produced exactly the static batch's tokens, and that one-at-a-time generate did
too (a request's output must not depend on what runs beside it).

Targets (issue #15), printed beside the figures: 16 submitters >= 2x the 1-submitter rate and >= 0.85x the
static batch-16 generate; repeated-prefix TTFT <= 0.1 s.
"""

from __future__ import annotations

import tinygpt  # noqa: I001 -- before NumPy: tinygpt sets NumPy's BLAS thread variables on import

import argparse
import importlib.metadata
import math
import os
import platform
import random
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import engine as engine_benchmark  # benchmarks/engine.py: the distilgpt2-shaped model it builds and caches
from tinygpt.engine import Engine

PROMPT_TOKENS = 32
SUBMITTER_COUNTS = (1, 4, 16)
MAX_BATCH = 16
STATIC_BATCH = 16
LONG_PROMPT_TOKENS = 1000
LONG_NEW_TOKENS = 16  # 1000 + 16 positions fit distilgpt2's context of 1024
PREFIX_TOKENS, SUFFIX_TOKENS = 800, 10
PREFIX_TRIALS = 3
EOS_ID = 50256  # kept out of the prompts
EXTENSIONS = ("avx2", "fma", "avx512f", "avx512_vnni")
# Targets from issue #15.
TARGET_VS_ONE_SUBMITTER = 2.0
TARGET_VS_STATIC = 0.85
TARGET_PREFIX_TTFT_S = 0.1


def prompt_ids(n: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    return [rng.randrange(EOS_ID) for _ in range(n)]


def request_prompt(submitter: int, request: int) -> list[int]:
    """Every request of one engine run gets a prompt of its own (no prefix reuse between them); request 0 of
    submitter s has static prompt s, so the engine's output can be compared with the static batch's."""
    return prompt_ids(PROMPT_TOKENS, 1000 + submitter + MAX_BATCH * request)


def static_prompts() -> list[list[int]]:
    return [request_prompt(s, 0) for s in range(STATIC_BATCH)]


# ---- one request, as its caller sees it ------------------------------------------------------------------


@dataclass
class Timeline:
    """One request of one row: when it was submitted, when each of its Events arrived, its new tokens."""

    submitted: float
    arrivals: list[float]
    new_ids: list[int]
    reused_tokens: int

    @property
    def ttft(self) -> float:
        return self.arrivals[0] - self.submitted

    def gaps(self) -> list[tuple[float, float]]:
        return list(zip(self.arrivals, self.arrivals[1:]))


def follow(engine: Engine, prompt: list[int], new_tokens: int, on_event=None) -> Timeline:
    """Submit one prompt and read its Events as they come; refuses a request that did not make all its tokens."""
    submitted = time.perf_counter()
    handle = engine.submit(prompt, max_new_tokens=new_tokens, eos_token_id=None)
    arrivals = []
    for _ in handle:
        arrivals.append(time.perf_counter())
        if on_event is not None:
            on_event(len(arrivals))
    new_ids = handle.result()[0][len(prompt):]
    if len(arrivals) != new_tokens or len(new_ids) != new_tokens or handle.finish_reasons() != ["length"]:
        raise RuntimeError(f"a request made {len(arrivals)} events and {len(new_ids)} tokens "
                           f"({handle.finish_reasons()}), expected {new_tokens}")
    return Timeline(submitted, arrivals, new_ids, handle.request.reused_tokens)


# ---- the workloads -----------------------------------------------------------------------------------------


@dataclass
class EngineRun:
    tok_s: float
    timelines: list[list[Timeline]]  # per submitter, its requests in order
    long: Timeline | None = None

    def all(self) -> list[Timeline]:
        return [timeline for mine in self.timelines for timeline in mine]


def engine_run(model, submitters: int, requests_each: int, new_tokens: int,
               long_prompt: list[int] | None = None) -> EngineRun:
    """``submitters`` threads submitting ``requests_each`` requests back to back to a fresh engine; with
    ``long_prompt``, the main thread submits it once every submitter's first request is a quarter done."""
    timelines: list[list[Timeline]] = [[] for _ in range(submitters)]
    errors: list[BaseException] = []
    under_way = threading.Semaphore(0)  # released once per submitter when its first request is a quarter done
    quarter = max(1, new_tokens // 4)

    def signal(count: int) -> None:
        if count == quarter:
            under_way.release()

    with Engine(model, max_batch=MAX_BATCH) as engine:

        def submit_back_to_back(submitter: int) -> None:
            try:
                for request in range(requests_each):
                    timelines[submitter].append(follow(engine, request_prompt(submitter, request), new_tokens,
                                                       signal if request == 0 else None))
            except BaseException as error:
                errors.append(error)
                under_way.release()  # never leave the main thread waiting for a failed submitter

        threads = [threading.Thread(target=submit_back_to_back, args=(s,)) for s in range(submitters)]
        start = time.perf_counter()
        for thread in threads:
            thread.start()
        long = None
        if long_prompt is not None:
            for _ in range(submitters):
                under_way.acquire()
            if not errors:
                long = follow(engine, long_prompt, LONG_NEW_TOKENS)
        for thread in threads:
            thread.join()
    if errors:
        raise errors[0]
    run = EngineRun(0.0, timelines, long)
    end = max(timeline.arrivals[-1] for timeline in run.all())
    run.tok_s = submitters * requests_each * new_tokens / (end - start)  # the long prompt's tokens not counted
    return run


def static_generate(model, prompts: list[list[int]], new_tokens: int) -> tuple[float, list[list[int]]]:
    """One ``generate`` call for the whole batch: (tok/s, each prompt's new ids)."""
    start = time.perf_counter()
    out = model.generate(prompts, max_new_tokens=new_tokens, eos_token_id=None)
    seconds = time.perf_counter() - start
    new = [row[len(prompt):] for row, prompt in zip(out, prompts, strict=True)]
    if any(len(row) != new_tokens for row in new):
        raise RuntimeError(f"generate made {[len(row) for row in new]} new tokens, expected {new_tokens} each")
    return len(prompts) * new_tokens / seconds, new


def one_at_a_time(model, prompts: list[list[int]], new_tokens: int) -> tuple[float, list[list[int]]]:
    """One ``generate`` call per prompt, in turn: (tok/s, each prompt's new ids)."""
    start = time.perf_counter()
    new = [static_generate(model, [prompt], new_tokens)[1][0] for prompt in prompts]
    return len(prompts) * new_tokens / (time.perf_counter() - start), new


def prefix_trials(model, prefix_tokens: int, round_: int) -> list[tuple[float, float]]:
    """(TTFT of a cached prefix + SUFFIX_TOKENS, TTFT of a fresh prompt as long) per trial, on an idle engine."""
    results = []
    with Engine(model, max_batch=MAX_BATCH) as engine:
        for trial in range(PREFIX_TRIALS):
            seed = 5000 + 10 * (PREFIX_TRIALS * round_ + trial)
            prefix = prompt_ids(prefix_tokens, seed)
            follow(engine, prefix, 1)
            repeated = follow(engine, prefix + prompt_ids(SUFFIX_TOKENS, seed + 1), 1)
            fresh = follow(engine, prompt_ids(prefix_tokens + SUFFIX_TOKENS, seed + 2), 1)
            if repeated.reused_tokens != prefix_tokens or fresh.reused_tokens != 0:
                raise RuntimeError(f"reused {repeated.reused_tokens} cached positions of the repeated prefix "
                                   f"(expected {prefix_tokens}) and {fresh.reused_tokens} of the fresh prompt (0)")
            results.append((repeated.ttft, fresh.ttft))
    return results


def warm_up(model, args: argparse.Namespace) -> None:
    """Every path the timed runs take, briefly: mixed decode + prompt-chunk steps, a long prompt's chunks,
    prefix reuse, generate's batch and single prompts."""
    engine_run(model, MAX_BATCH - 1, 1, 2, prompt_ids(args.long_prompt_tokens, 7))
    prefix_trials(model, args.prefix_tokens, -1)
    static_generate(model, static_prompts(), 2)
    static_generate(model, static_prompts()[:1], 2)


# ---- measurements over rounds -------------------------------------------------------------------------------


@dataclass
class Figures:
    """One dtype's samples, pooled over rounds."""

    tok_s: dict[str, list[float]] = field(default_factory=dict)
    ttft: dict[str, list[float]] = field(default_factory=dict)
    itl: dict[str, list[float]] = field(default_factory=dict)
    long_ttft: list[float] = field(default_factory=list)
    itl_during_long: list[float] = field(default_factory=list)
    itl_outside_long: list[float] = field(default_factory=list)
    repeated_ttft: list[float] = field(default_factory=list)
    fresh_ttft: list[float] = field(default_factory=list)
    # Per workload: (outputs equal to the static batch's, outputs compared).
    agreement: dict[str, tuple[int, int]] = field(default_factory=dict)

    def add(self, key: str, tok_s: float, timelines: list[Timeline] = ()) -> None:
        self.tok_s.setdefault(key, []).append(tok_s)
        self.ttft.setdefault(key, []).extend(t.ttft for t in timelines)
        self.itl.setdefault(key, []).extend(b - a for t in timelines for a, b in t.gaps())

    def compare(self, key: str, outputs: list[list[int]], expected: list[list[int]]) -> None:
        equal, compared = self.agreement.get(key, (0, 0))
        same = sum(a == b for a, b in zip(outputs, expected, strict=True))
        self.agreement[key] = (equal + same, compared + len(expected))


def one_round(model, args: argparse.Namespace, round_: int, figures: Figures) -> None:
    new_tokens, each = args.new_tokens, args.requests_per_submitter
    for submitters in SUBMITTER_COUNTS:
        progress(f"  {submitters} submitter(s)")
        run = engine_run(model, submitters, each, new_tokens)
        figures.add(f"engine-{submitters}", run.tok_s, run.all())
        if submitters == STATIC_BATCH:
            first_outputs = [mine[0].new_ids for mine in run.timelines]
    progress(f"  static generate, batch {STATIC_BATCH}")
    prompts = static_prompts()
    tok_s, static_outputs = static_generate(model, prompts, new_tokens)
    figures.add("static", tok_s)
    figures.compare("engine", first_outputs, static_outputs)
    progress(f"  {STATIC_BATCH} prompts one at a time")
    tok_s, outputs = one_at_a_time(model, prompts, new_tokens)
    figures.add("sequential", tok_s)
    figures.compare("sequential", outputs, static_outputs)

    progress(f"  {MAX_BATCH - 1} submitters + a {args.long_prompt_tokens}-token prompt")
    run = engine_run(model, MAX_BATCH - 1, each, new_tokens, prompt_ids(args.long_prompt_tokens, 900 + round_))
    figures.add("long", run.tok_s, run.all())
    figures.long_ttft.append(run.long.ttft)
    begin, end = run.long.submitted, run.long.arrivals[0]
    for timeline in run.all():
        for a, b in timeline.gaps():
            (figures.itl_during_long if b > begin and a < end else figures.itl_outside_long).append(b - a)

    progress(f"  repeated prefix ({PREFIX_TRIALS} trials)")
    trials = prefix_trials(model, args.prefix_tokens, round_)
    figures.repeated_ttft.extend(repeated for repeated, _ in trials)
    figures.fresh_ttft.extend(fresh for _, fresh in trials)


def measure(dtype: str, args: argparse.Namespace) -> Figures:
    from tinygpt import Model

    progress(f"{dtype}: loading and warming up ...")
    model = Model.from_pretrained(engine_benchmark.build_model(), dtype=dtype)
    warm_up(model, args)
    figures = Figures()
    for round_ in range(args.rounds):
        progress(f"{dtype}: round {round_ + 1} of {args.rounds}")
        one_round(model, args, round_, figures)
    return figures


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---- the report --------------------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else math.nan


def seconds(values: list[float], *qs: float) -> str:
    return " / ".join(f"{percentile(values, q):.3f}" for q in qs)


def millis(values: list[float], *qs: float) -> str:
    return " / ".join(f"{1000 * percentile(values, q):.1f}" for q in qs)


def verdict(ok: bool) -> str:
    return "met" if ok else "**missed**"


def print_table(dtype: str, figures: Figures, args: argparse.Namespace) -> None:
    best = {key: max(values) for key, values in figures.tok_s.items()}
    top = f"engine-{SUBMITTER_COUNTS[-1]}"
    vs_one = best[top] / best[f"engine-{SUBMITTER_COUNTS[0]}"]
    vs_static = best[top] / best["static"]
    prefix_ttft = percentile(figures.repeated_ttft, 50)
    new = args.new_tokens
    print(f"\n### {dtype}\n")
    print("| workload | tok/s | TTFT p50 / p99 (s) | ITL p50 / p99 / max (ms) | target |")
    print("|---|---|---|---|---|")

    def row(label: str, tok_s: str = "-", ttft: str = "-", itl: str = "-", target: str = "") -> None:
        print(f"| {label} | {tok_s} | {ttft} | {itl} | {target} |")

    for submitters in SUBMITTER_COUNTS:
        key = f"engine-{submitters}"
        target = ""
        if key == top:
            target = (f"{vs_one:.2f}x 1 submitter (>= {TARGET_VS_ONE_SUBMITTER:g}x: "
                      f"{verdict(vs_one >= TARGET_VS_ONE_SUBMITTER)}); {vs_static:.2f}x static batch "
                      f"(>= {TARGET_VS_STATIC:g}x: {verdict(vs_static >= TARGET_VS_STATIC)})")
        row(f"Engine, {submitters} submitter{'s' if submitters > 1 else ''}", f"{best[key]:.1f}",
            seconds(figures.ttft[key], 50, 99), millis(figures.itl[key], 50, 99, 100), target)
    long = args.long_prompt_tokens
    row(f"Engine, {MAX_BATCH - 1} submitters + one {long}-token prompt mid-run", f"{best['long']:.1f}",
        seconds(figures.ttft["long"], 50, 99), millis(figures.itl["long"], 50, 99, 100))
    row(f"&nbsp;&nbsp;the {long}-token prompt's own TTFT", ttft=seconds(figures.long_ttft, 50, 100) + " (p50 / max)")
    row(f"&nbsp;&nbsp;other rows' ITL during its prefill ({len(figures.itl_during_long)} gaps)",
        itl=millis(figures.itl_during_long, 50, 99, 100))
    row("&nbsp;&nbsp;the same rows' ITL outside it", itl=millis(figures.itl_outside_long, 50, 99, 100))
    row(f"repeated prefix: {args.prefix_tokens} cached + {SUFFIX_TOKENS} new tokens",
        ttft=seconds(figures.repeated_ttft, 50, 100) + " (p50 / max)",
        target=f"<= {TARGET_PREFIX_TTFT_S:g} s: {verdict(prefix_ttft <= TARGET_PREFIX_TTFT_S)}")
    row(f"fresh {args.prefix_tokens + SUFFIX_TOKENS}-token prompt, nothing cached",
        ttft=seconds(figures.fresh_ttft, 50, 100) + " (p50 / max)")
    row(f"static `generate`, batch of {STATIC_BATCH}", f"{best['static']:.1f}", target="upper bound")
    row(f"`generate`, {STATIC_BATCH} prompts one at a time", f"{best['sequential']:.1f}")
    engine_equal, compared = figures.agreement["engine"]
    one_equal, _ = figures.agreement["sequential"]
    print(f"\nOutputs equal to the static batch's, token for token ({new} greedy tokens, {STATIC_BATCH} prompts "
          f"per round): the {SUBMITTER_COUNTS[-1]} submitters' first requests {engine_equal} of {compared}, "
          f"one-at-a-time generate {one_equal} of {compared}")


def cpu_lines(threads: int) -> list[str]:
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")),
               platform.processor() or platform.machine())
    flags = set(next((line.split(":", 1)[1].split() for line in cpuinfo.splitlines()
                      if line.startswith("flags")), []))
    has = [f for f in EXTENSIONS if f in flags]
    lacks = [f for f in EXTENSIONS if f not in flags]
    versions = ", ".join(f"{package} {importlib.metadata.version(package)}" for package in ("numpy", "numba"))
    return [f"CPU: {cpu}; vector extensions: {' '.join(has) or 'none of ' + ' '.join(EXTENSIONS)}"
            + (f" (no {', '.join(lacks)})" if lacks else ""),
            f"{threads} kernel thread{'s' if threads > 1 else ''} of {len(os.sched_getaffinity(0))} cores; "
            f"Python {platform.python_version()}, {versions}"]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cores = len(os.sched_getaffinity(0))
    parser.add_argument("--dtypes", nargs="+", choices=("float32", "int8"), default=["float32", "int8"],
                        help="weights to load (default: both)")
    parser.add_argument("--new-tokens", type=int, help="new tokens per request (default 128; --quick: 8)")
    parser.add_argument("--requests-per-submitter", type=int,
                        help="requests each submitter makes back to back (default 3; --quick: 1)")
    parser.add_argument("--rounds", type=int, help="times every workload is run, in turns (default 2; --quick: 1)")
    parser.add_argument("--threads", type=int, default=cores, help=f"kernel threads (default {cores})")
    parser.add_argument("--quick", action="store_true",
                        help="small numbers, to see the script run: 8 new tokens, 1 request per submitter, "
                             "1 round, a 200-token long prompt and a 160-token prefix")
    args = parser.parse_args()
    quick = args.quick
    for name, full, small in (("new_tokens", 128, 8), ("requests_per_submitter", 3, 1), ("rounds", 2, 1)):
        if getattr(args, name) is None:
            setattr(args, name, small if quick else full)
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if not 1 <= args.threads <= cores:
        parser.error(f"--threads must be between 1 and {cores} (the cores this process may use)")
    if PROMPT_TOKENS + args.new_tokens > 1024:
        parser.error(f"--new-tokens must be at most {1024 - PROMPT_TOKENS} (the model's context is 1024)")
    args.long_prompt_tokens = 200 if quick else LONG_PROMPT_TOKENS
    args.prefix_tokens = 160 if quick else PREFIX_TOKENS
    return args


def main() -> None:
    args = parse_args()
    tinygpt.set_num_threads(args.threads)
    started = time.perf_counter()
    results = {dtype: measure(dtype, args) for dtype in args.dtypes}
    rounds = args.rounds
    print("## Continuous batching on distilgpt2's shape (benchmarks/batching.py, issue #15)\n")
    for line in cpu_lines(args.threads):
        print(line + "  ")
    print(f"Random weights; {PROMPT_TOKENS}-token random prompts, {args.new_tokens} new tokens each, greedy, "
          f"end-of-text off; Engine(max_batch={MAX_BATCH}), {args.requests_per_submitter} request"
          f"{'s' if args.requests_per_submitter > 1 else ''} per submitter; tok/s: best of {rounds} "
          f"round{'s' if rounds > 1 else ''}, latencies pooled over them; run took "
          f"{time.perf_counter() - started:.0f} s{' (--quick)' if args.quick else ''}")
    for dtype, figures in results.items():
        print_table(dtype, figures, args)


if __name__ == "__main__":
    main()
