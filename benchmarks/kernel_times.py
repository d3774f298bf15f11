"""Where does tinygpt's time go? A decode step and a 512-token prefill, kernel by kernel.

    python benchmarks/kernel_times.py [--dtype float32 int8] [--threads N] [--tokens 128] [--batch 1]

On the distilgpt2-shaped model of engine.py (built there, once), it wraps the functions tinygpt.model calls
for each step (layer norm, each linear layer, attention, LM head) with timers, then runs decode (--batch
sequences, each a 32-token prompt, then --tokens single-token steps) and a 512-token prefill. For each it
prints the time per step (decode) or per prefill of every kernel and what is left: Python between the
kernels, the embedding lookup, KV-cache writes. Decode is bound by the weight bytes it reads, so its rows also show
weight GB/s: compare them with the read bandwidth benchmarks/matmul.py prints. The timers add about a
microsecond per call. Numbers from a shared machine are noisy; compare rows within a run.

After the decode breakdown it prints what a decode step's kernel calls would pay for argument checks: the
calls of one step are recorded, then each is checked again (``kernels.checks``, what a caller with arrays it
did not build runs before a kernel), best of several timed loops. The forward pass skips those checks; every
kernel does apply the thread count (``threads.apply_num_threads``), whose cost per call is printed too.

Measurements behind the kernels' design, from paired runs on the 2-core AMD EPYC (Zen 3, AVX2) the kernels
were tuned on: set ``inline="always"`` aside on the named function and rerun to see them on another CPU.
* ``intdot.int_dots`` inlined (Numba IR): as a call, each cost ~30 ns, and a one-token int8 decode of
  distilgpt2's shape ran 3-5 % slower, a batch of 8 ~10 % slower.
"""

from __future__ import annotations

import argparse
import time
import timeit
from collections import defaultdict

import tinygpt  # noqa: F401  (first, so it can configure the BLAS thread pool before NumPy loads)
import engine  # the benchmark next to this file: its model
import numpy as np
from tinygpt import model as model_module
from tinygpt.kernels import checks
from tinygpt.kernels.threads import apply_num_threads, get_num_threads, set_num_threads
from tinygpt.weights import QuantizedWeight

PROMPT_TOKENS, PREFILL_TOKENS = 32, 512
KERNELS = ("linear", "linear_nt", "linear_nt_int8", "layer_norm", "attention")  # what tinygpt.model calls


class KernelTimer:
    """Wraps tinygpt.model's kernel entry points; accumulates seconds and weight bytes per label."""

    def __init__(self):
        self.seconds = defaultdict(float)
        self.weight_bytes = defaultdict(int)
        self._originals = {}

    def install(self) -> None:
        for name in ("layer_norm", "attention", "project", "lm_head"):
            self._wrap(name)

    def uninstall(self) -> None:
        for name, original in self._originals.items():
            setattr(model_module, name, original)

    def reset(self) -> None:
        self.seconds.clear()
        self.weight_bytes.clear()

    def _wrap(self, name: str) -> None:
        original = getattr(model_module, name)
        self._originals[name] = original
        weighed = name in ("project", "lm_head")  # (x, weight, ...): label and bytes come from the weight

        def timed(*args, **kwargs):
            start = time.perf_counter()
            result = original(*args, **kwargs)
            label = _linear_label(args[1]) if name == "project" else name
            self.seconds[label] += time.perf_counter() - start
            if weighed:
                self.weight_bytes[label] += _nbytes(args[1])
            return result

        setattr(model_module, name, timed)


def _linear_label(weight) -> str:
    """``linear INxOUT``: int8 weights are stored [out, in], float32 ones [in, out]."""
    inputs, outputs = weight.q.shape[::-1] if isinstance(weight, QuantizedWeight) else weight.shape
    return f"linear {inputs}x{outputs}"


def _nbytes(weight) -> int:
    return weight.q.nbytes + weight.scale.nbytes if isinstance(weight, QuantizedWeight) else weight.nbytes


def print_breakdown(title: str, timer: KernelTimer, total: float, per: int, unit: str, rates: bool) -> None:
    """One line per kernel; with ``rates``, the weight bytes it read per second (decode is bound by them)."""
    print(f"\n{title}: {total / per * 1e3:.2f} ms per {unit}")
    accounted = 0.0
    for label, seconds in sorted(timer.seconds.items(), key=lambda item: -item[1]):
        accounted += seconds
        rate = ""
        if rates and timer.weight_bytes[label]:
            rate = f"{timer.weight_bytes[label] / seconds / 1e9:7.1f} GB/s of weights"
        print(f"  {label:22s} {seconds / per * 1e3:8.3f} ms  {100 * seconds / total:5.1f} %  {rate}")
    rest = total - accounted
    print(f"  {'rest (Python, other)':22s} {rest / per * 1e3:8.3f} ms  {100 * rest / total:5.1f} %")


def recorded_calls(step) -> list[tuple[str, tuple, dict]]:
    """The kernel calls ``step()`` makes through tinygpt.model, as (kernel name, args, keyword args)."""
    calls = []
    originals = {name: getattr(model_module, name) for name in KERNELS}

    def recording(name, kernel):
        def call(*args, **kwargs):
            calls.append((name, args, kwargs))
            return kernel(*args, **kwargs)

        return call

    for name, kernel in originals.items():
        setattr(model_module, name, recording(name, kernel))
    try:
        step()
    finally:
        for name, kernel in originals.items():
            setattr(model_module, name, kernel)
    return calls


def print_call_overhead(calls: list[tuple[str, tuple, dict]], step_seconds: float) -> None:
    """What checking the arguments of these calls would cost (the forward pass skips it), and what applying
    the thread count in each costs (every kernel does)."""

    def check_all():
        for name, args, kwargs in calls:
            getattr(checks, name)(*args, **kwargs)

    loops = 50
    checks_s = min(timeit.repeat(check_all, number=loops, repeat=7)) / loops
    apply_s = min(timeit.repeat(apply_num_threads, number=100_000, repeat=7)) / 100_000
    print(f"  {len(calls)} kernel calls per step. Their argument checks (kernels.checks), which the forward pass "
          f"skips: {checks_s / len(calls) * 1e6:.2f} us per call, {checks_s * 1e3:.3f} ms per step "
          f"({100 * checks_s / step_seconds:.1f} % of the step). Applying the thread count, which every kernel "
          f"does: {apply_s * 1e6:.2f} us per call, {apply_s * len(calls) * 1e3:.4f} ms per step.")


def profile(dtype: str, tokens: int, batch: int) -> None:
    model = model_module.Model.from_pretrained(engine.build_model(), dtype=dtype)
    rng = np.random.default_rng(0)
    prompt = rng.integers(0, engine.EOS_ID, (batch, PROMPT_TOKENS))
    next_ids = [[1]] * batch
    long_prompt = rng.integers(0, engine.EOS_ID, (1, PREFILL_TOKENS))
    timer = KernelTimer()
    timer.install()
    try:
        # Warm-up: load every kernel, page the weights in.
        model.step(model.new_cache(capacity=PREFILL_TOKENS), long_prompt)
        cache = model.new_cache(batch, capacity=PROMPT_TOKENS + tokens + 5)
        model.step(cache, prompt)
        for _ in range(4):
            model.step(cache, next_ids)
        calls = recorded_calls(lambda: model.step(cache, next_ids))
        timer.reset()
        start = time.perf_counter()
        for _ in range(tokens):
            model.step(cache, next_ids)
        decode_total = time.perf_counter() - start
        print_breakdown(f"{dtype} decode, batch {batch} ({batch * tokens / decode_total:.1f} tok/s)", timer,
                        decode_total, tokens, "step", rates=True)
        print_call_overhead(calls, decode_total / tokens)

        best_total, best_seconds, best_bytes = float("inf"), {}, {}
        for _ in range(3):
            timer.reset()
            cache = model.new_cache(capacity=PREFILL_TOKENS)
            start = time.perf_counter()
            model.step(cache, long_prompt)
            total = time.perf_counter() - start
            if total < best_total:
                best_total, best_seconds, best_bytes = total, dict(timer.seconds), dict(timer.weight_bytes)
        timer.seconds.update(best_seconds)
        timer.weight_bytes.update(best_bytes)
        print_breakdown(f"{dtype} prefill-{PREFILL_TOKENS} ({PREFILL_TOKENS / best_total:.0f} tok/s, best of 3)",
                        timer, best_total, 1, "prefill", rates=False)
    finally:
        timer.uninstall()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dtype", nargs="+", choices=["float32", "int8"], default=["float32", "int8"])
    parser.add_argument("--threads", type=int, default=None, help="kernel threads (default: tinygpt's)")
    parser.add_argument("--tokens", type=int, default=128, help="decode steps timed (default 128)")
    parser.add_argument("--batch", type=int, default=1, help="sequences decoded together (default 1)")
    args = parser.parse_args()
    if args.threads is not None:
        set_num_threads(args.threads)
    print(f"threads: {get_num_threads()}; {engine.machine_line(get_num_threads())}")
    for dtype in args.dtype:
        profile(dtype, args.tokens, args.batch)


if __name__ == "__main__":
    main()
