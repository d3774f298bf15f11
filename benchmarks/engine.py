"""How fast is tinygpt next to transformers, CTranslate2 and llama.cpp, on a model of distilgpt2's exact shape?

    python benchmarks/engine.py [--threads N] [--repeats R] [--engines NAME ...] [--llama-cpp-converter PATH]

Builds (once, cached under benchmarks/.cache/) a random-init GPT2LMHeadModel with distilgpt2's config, for
CTranslate2 its float32 and int8 conversions, and for llama.cpp its f32 and q8_0 GGUF files (converted by
llama.cpp's convert_hf_to_gguf.py, whose path --llama-cpp-converter gives; once the files are cached it is
not needed). Then, in one run and with the same thread count, it times each engine in processes of its own
(so peak RSS is that engine's alone):

  decode b1     one 32-token prompt, 128 new tokens, greedy: new tokens / wall time of the whole generation
  decode b8     8 prompts of 32 tokens, 128 new tokens each: 8 x 128 / wall time
  prefill-512   a 512-token prompt to its next-token logits (only the last position goes through the LM
                head: transformers with logits_to_keep=1, CTranslate2 generating one token): 512 / wall time
  first token   a fresh process: interpreter start, imports, load, the first generated token for a 32-token
                prompt (wall time, warm file and compile caches)
  load          loading the model, its libraries already imported
  peak RSS      VmHWM of a fresh process that loaded the engine and ran one workload once (decode b1,
                decode b8, prefill-512: one row each), and of the long-lived process that ran them all;
                below the table, tinygpt's runtime alone: a fresh process that imported tinygpt and ran
                one small cached kernel, no model (Python, NumPy, Numba and its LLVM); and each tinygpt
                engine's largest peak against its budget, runtime alone + weight bytes + 50 MB (weight
                bytes: what a forward pass reads, see weight_mb)

Engines: tinygpt-f32, tinygpt-int8, tinygpt-f32-after-torch (float32 in a process that imported numpy, torch
and transformers first, as most scripts do), transformers (float32, torch with N intra-op threads), ct2-f32 and
ct2-int8 (when ctranslate2 is installed), llama-f32 and llama-q8_0 (when llama-cpp-python is installed and
its GGUF files are cached or can be converted; one sequence at a time, so no batch-8 row). Every
generation is checked to produce exactly 128 new tokens (end-of-text disabled). Each row is the best of R
timings after a short warm-up. The engines' processes stay alive and take turns, workload by workload and
round by round, so a burst of load from elsewhere on a shared machine spreads over all of them: compare the
ratios, which come from the same run. Random weights are fine: speed does not depend on what they say.

Run it in an environment without SciPy, as a ``pip install tinygpt`` has: when SciPy is installed, Numba
imports it on its first kernel (~25 MB and ~0.2 s more for tinygpt). The machine line lists scipy if present.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import peers

HERE = Path(__file__).resolve().parent
CACHE = HERE / ".cache"
MODEL_DIR = CACHE / "distilgpt2-random"
PROMPT_TOKENS, NEW_TOKENS, BATCH, PREFILL_TOKENS = 32, 128, 8, 512
WARM_UP_TOKENS = 4
EOS_ID = 50256  # kept out of the prompts so no engine treats a prompt token specially


def build_model() -> Path:
    """The random-init distilgpt2-shaped model in transformers' layout (safetensors), built once."""
    if (MODEL_DIR / "model.safetensors").exists():
        return MODEL_DIR
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(n_layer=6, n_embd=768, n_head=12, vocab_size=50257, n_positions=1024)
    GPT2LMHeadModel(config).save_pretrained(MODEL_DIR, safe_serialization=True)
    return MODEL_DIR


class TinygptRunner:
    """tinygpt's Model on float32 or int8 weights, through the public generate()."""

    libraries = ("tinygpt.model", "tinygpt.kernels.threads")
    max_batch = None

    def __init__(self, model_dir: Path, threads: int, dtype: str):
        from tinygpt.kernels.threads import set_num_threads
        from tinygpt.model import Model

        set_num_threads(threads)
        self.model = Model.from_pretrained(model_dir, dtype=dtype)

    def generate(self, prompts: list[list[int]], new_tokens: int) -> list[list[int]]:
        out = self.model.generate(prompts, max_new_tokens=new_tokens, eos_token_id=None)
        return [row[len(prompt):] for row, prompt in zip(out, prompts, strict=True)]

    def prefill(self, prompt: list[int]) -> None:
        self.model.step(self.model.new_cache(capacity=len(prompt)), [prompt])  # last position's logits only


class TinygptAfterTorchRunner(TinygptRunner):
    """The same, in a process that imported NumPy, PyTorch and transformers before tinygpt, as most user
    scripts do: NumPy's BLAS and PyTorch's OpenMP pools then start with their default spinning threads."""

    libraries = ("numpy", "torch", "transformers", *TinygptRunner.libraries)
    package = "tinygpt"


@dataclass(frozen=True)
class Engine:
    runner: type  # constructed as runner(model, threads, **options); has .libraries, .max_batch, generate, prefill
    options: dict
    # Run in the parent with the command line: builds or converts the model once, returns its path.
    files: Callable[[argparse.Namespace], Path]
    cached: Path | None = None  # llama.cpp's converted file: while it is missing, the converter is needed

    @property
    def package(self) -> str:
        return getattr(self.runner, "package", self.runner.libraries[0].split(".")[0])

    def missing(self, args: argparse.Namespace) -> str | None:
        """What this engine lacks on this machine, or None when it can run."""
        if importlib.util.find_spec(self.package) is None:  # a top-level name: finding imports nothing
            return f"the {self.package} package"
        if self.cached is not None and not self.cached.exists() and args.llama_cpp_converter is None:
            return f"{self.cached.name} (give --llama-cpp-converter to build it)"
        return None

    def runs(self, key: str) -> bool:
        """Whether this engine runs workload ``key`` (the batch row needs generate to take BATCH prompts)."""
        return key != "decode_b8" or self.runner.max_batch is None or self.runner.max_batch >= BATCH


def ct2_files(quantization: str) -> Callable[[argparse.Namespace], Path]:
    return lambda args: peers.ctranslate2_model(build_model(), CACHE / f"ct2-{quantization}", quantization)


def gguf_file(outtype: str) -> Path:
    return CACHE / f"distilgpt2-random-{outtype}.gguf"


def gguf_files(outtype: str) -> Callable[[argparse.Namespace], Path]:
    return lambda args: peers.llama_cpp_model(build_model(), gguf_file(outtype), outtype, args.llama_cpp_converter)


ENGINES = {
    "tinygpt-f32": Engine(TinygptRunner, {"dtype": "float32"}, lambda args: build_model()),
    "tinygpt-int8": Engine(TinygptRunner, {"dtype": "int8"}, lambda args: build_model()),
    "tinygpt-f32-after-torch": Engine(TinygptAfterTorchRunner, {"dtype": "float32"}, lambda args: build_model()),
    "transformers": Engine(peers.TransformersRunner, {}, lambda args: build_model()),
    "ct2-f32": Engine(peers.CTranslate2Runner, {"compute_type": "float32"}, ct2_files("float32")),
    "ct2-int8": Engine(peers.CTranslate2Runner, {"compute_type": "int8"}, ct2_files("int8")),
    "llama-f32": Engine(peers.LlamaCppRunner, {}, gguf_files("f32"), gguf_file("f32")),
    "llama-q8_0": Engine(peers.LlamaCppRunner, {}, gguf_files("q8_0"), gguf_file("q8_0")),
}
REFERENCE = "transformers"
TOKENS_PER_RUN = {"decode_b1": NEW_TOKENS, "decode_b8": BATCH * NEW_TOKENS, "prefill": PREFILL_TOKENS}
PAUSE_S = 0.3  # lets the previous engine's worker threads stop spinning before the next one is timed


@dataclass(frozen=True)
class Row:
    key: str
    label: str
    higher_is_better: bool


ROWS = [
    Row("decode_b1", "decode b1 (tok/s)", True),
    Row("decode_b8", f"decode b{BATCH} (tok/s)", True),
    Row("prefill", f"prefill-{PREFILL_TOKENS} (tok/s)", True),
    Row("first_token_s", "first token (s)", False),
    Row("load_s", "load (s)", False),
    Row("rss_decode_b1", "peak RSS b1 (MB)", False),
    Row("rss_decode_b8", f"peak RSS b{BATCH} (MB)", False),
    Row("rss_prefill", "peak RSS prefill (MB)", False),
    Row("peak_rss_mb", "peak RSS all (MB)", False),
]


# ---- inside an engine's own process ----------------------------------------------------------------------


def prompt_ids(n: int, seed: int) -> list[int]:
    """``n`` random token ids; the standard library's generator, so no engine is timed importing NumPy."""
    rng = random.Random(seed)
    return [rng.randrange(EOS_ID) for _ in range(n)]


def peak_rss_mb() -> float:
    """This process's peak resident set size. VmHWM, unlike ru_maxrss, starts afresh at exec, so it does not
    include what the parent (which may have imported torch to build the model) held when it forked us."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024 / 1e6
    raise RuntimeError("no VmHWM in /proc/self/status")


def generate_checked(runner, prompts: list[list[int]], new_tokens: int) -> list[list[int]]:
    """runner.generate, refusing any output that is not exactly ``new_tokens`` new tokens per prompt."""
    out = runner.generate(prompts, new_tokens)
    lengths = [len(row) for row in out]
    if lengths != [new_tokens] * len(prompts):
        raise RuntimeError(f"{type(runner).__name__} produced {lengths} new tokens, expected {new_tokens} each")
    return out


def open_engine(name: str, model_dir: Path, threads: int) -> tuple[object, float]:
    """(runner, seconds to load the model) with the engine's libraries imported beforehand."""
    engine = ENGINES[name]
    for library in engine.runner.libraries:
        importlib.import_module(library)
    start = time.perf_counter()
    runner = engine.runner(model_dir, threads, **engine.options)
    return runner, time.perf_counter() - start


def workloads(engine: Engine, runner) -> dict[str, Callable[[], object]]:
    """The timed rows the engine runs, by key, each returning its output (new token ids, or None for prefill),
    and "warm_up": every one of them once, decoding only a few tokens (enough to compile, allocate and page
    the weights in)."""
    one = [prompt_ids(PROMPT_TOKENS, 1)]
    batch = [prompt_ids(PROMPT_TOKENS, 100 + i) for i in range(BATCH)]
    long_prompt = prompt_ids(PREFILL_TOKENS, 2)
    timed = {
        "decode_b1": lambda: generate_checked(runner, one, NEW_TOKENS),
        "decode_b8": lambda: generate_checked(runner, batch, NEW_TOKENS),
        "prefill": lambda: runner.prefill(long_prompt),
    }
    timed = {key: run for key, run in timed.items() if engine.runs(key)}

    def warm_up() -> None:
        generate_checked(runner, one, WARM_UP_TOKENS)
        if engine.runs("decode_b8"):
            generate_checked(runner, batch, WARM_UP_TOKENS)
        runner.prefill(long_prompt)

    return {**timed, "warm_up": warm_up}


def serve(name: str, model_dir: Path, threads: int) -> None:
    """Load the engine, reply {"load_s"}, then answer one command per stdin line with one JSON line:
    a workload key -> {"seconds", "output"}; "peak_rss_mb" -> {"peak_rss_mb"}."""
    replies = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # whatever the libraries print goes to stderr, never into the replies
    runner, load_s = open_engine(name, model_dir, threads)
    work = workloads(ENGINES[name], runner)
    replies.write(json.dumps({"load_s": load_s}) + "\n")
    for line in sys.stdin:
        command = line.strip()
        if command == "peak_rss_mb":
            reply = {"peak_rss_mb": peak_rss_mb()}
        else:
            start = time.perf_counter()
            output = work[command]()
            reply = {"seconds": time.perf_counter() - start, "output": output}
        replies.write(json.dumps(reply) + "\n")


def one_workload_peak_rss(name: str, model_dir: Path, threads: int, key: str) -> None:
    """Load, run one workload once, print this process's peak RSS: that workload's memory alone."""
    runner, _ = open_engine(name, model_dir, threads)
    workloads(ENGINES[name], runner)[key]()
    print(json.dumps({"peak_rss_mb": peak_rss_mb()}))


def runtime_alone() -> None:
    """Import what TinygptRunner imports, run one small kernel (from Numba's cache), print the peak RSS."""
    for library in TinygptRunner.libraries:  # tinygpt first: it sets thread-pool variables before NumPy loads
        importlib.import_module(library)
    import numpy as np
    from tinygpt.kernels.norm import layer_norm

    ones = np.ones(8, np.float32)
    layer_norm(ones[None], ones, ones, 1e-5)
    print(json.dumps({"peak_rss_mb": peak_rss_mb()}))


def first_token(name: str, model_dir: Path, threads: int) -> None:
    """Load and generate one token, then print the wall-clock time (the parent started the clock)."""
    runner, _ = open_engine(name, model_dir, threads)
    generate_checked(runner, [prompt_ids(PROMPT_TOKENS, 1)], 1)
    print(json.dumps({"at": time.time()}))


# ---- the parent: start the processes, time them in turns, print the tables -------------------------------


class EngineProcess:
    """One engine serving commands in a process of its own (see :func:`serve`)."""

    def __init__(self, name: str, model_dir: Path, threads: int):
        self.name = name
        self.log = tempfile.TemporaryFile("w+")  # its stderr: shown if it fails
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--serve", name, "--model", str(model_dir), "--threads", str(threads)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True,
        )
        self.load_s = self._reply()["load_s"]

    def ask(self, command: str) -> dict:
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return self._reply()

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait()
        self.log.close()

    def _reply(self) -> dict:
        line = self.process.stdout.readline()
        if not line:
            self.process.wait()
            self.log.seek(0)
            raise RuntimeError(f"{self.name} stopped (exit code {self.process.returncode}):\n{self.log.read()}")
        return json.loads(line)


def time_workloads(processes: dict[str, EngineProcess], repeats: int) -> dict[str, dict]:
    """Best tok/s of every workload on every engine (None where an engine does not run it), plus each
    engine's greedy b1 tokens.

    Engines take turns on each workload, round after round, so a burst of load from elsewhere on the machine
    hits every engine's samples alike instead of one engine's whole measurement.
    """
    for process in processes.values():
        process.ask("warm_up")
    results = {name: {} for name in processes}
    best = {name: dict.fromkeys(TOKENS_PER_RUN, float("inf")) for name in processes}
    for round_ in range(repeats):
        print(f"round {round_ + 1} of {repeats} ...", file=sys.stderr, flush=True)
        for key in TOKENS_PER_RUN:
            for name, process in processes.items():
                if not ENGINES[name].runs(key):
                    continue
                time.sleep(PAUSE_S)
                reply = process.ask(key)
                best[name][key] = min(best[name][key], reply["seconds"])
                if key == "decode_b1":
                    results[name]["b1_tokens"] = reply["output"][0]  # the same every round: greedy
    for name in processes:
        results[name].update({key: TOKENS_PER_RUN[key] / best[name][key] if ENGINES[name].runs(key) else None
                              for key in TOKENS_PER_RUN})
    return results


def first_token_seconds(names: list[str], model_dirs: dict[str, Path], threads: int, repeats: int) -> dict:
    """Best of ``repeats`` fresh processes per engine, from just before the spawn to the first token."""
    best = dict.fromkeys(names, float("inf"))
    for _ in range(repeats):
        for name in names:
            cmd = [sys.executable, __file__, "--first-token", name, "--model", str(model_dirs[name]),
                   "--threads", str(threads)]
            start = time.time()  # wall clock: the child reports the same clock
            done = subprocess.run(cmd, check=False, capture_output=True, text=True)
            if done.returncode != 0:
                raise RuntimeError(f"{name} (first token) failed:\n{done.stderr}")
            best[name] = min(best[name], json.loads(done.stdout.strip().splitlines()[-1])["at"] - start)
    return best


def workload_peak_rss(names: list[str], model_dirs: dict[str, Path], threads: int) -> dict[str, dict]:
    """Per engine, "rss_<workload>" -> MB: the peak of a fresh process running just that workload (None
    where the engine does not run it)."""
    results = {name: {} for name in names}
    for key in TOKENS_PER_RUN:
        for name in names:
            if not ENGINES[name].runs(key):
                results[name][f"rss_{key}"] = None
                continue
            cmd = [sys.executable, __file__, "--peak-rss", name, "--workload", key, "--model",
                   str(model_dirs[name]), "--threads", str(threads)]
            done = subprocess.run(cmd, check=False, capture_output=True, text=True)
            if done.returncode != 0:
                raise RuntimeError(f"{name} ({key}, peak RSS) failed:\n{done.stderr}")
            results[name][f"rss_{key}"] = json.loads(done.stdout.strip().splitlines()[-1])["peak_rss_mb"]
    return results


def runtime_alone_mb() -> float:
    done = subprocess.run([sys.executable, __file__, "--runtime-alone"], check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])["peak_rss_mb"]


def benchmark(names: list[str], args: argparse.Namespace) -> dict[str, dict]:
    """Every row for every engine in ``names``, keyed by engine then row key."""
    threads, repeats = args.threads, args.repeats
    model_dirs = {name: ENGINES[name].files(args) for name in names}
    print("loading ...", file=sys.stderr, flush=True)
    processes = {}
    try:
        for name in names:
            processes[name] = EngineProcess(name, model_dirs[name], threads)
        results = time_workloads(processes, repeats)
        for name, process in processes.items():
            results[name]["load_s"] = process.load_s
            results[name]["peak_rss_mb"] = process.ask("peak_rss_mb")["peak_rss_mb"]
    finally:
        for process in processes.values():
            process.close()
    print("first tokens ...", file=sys.stderr, flush=True)
    for name, seconds in first_token_seconds(names, model_dirs, threads, repeats).items():
        results[name]["first_token_s"] = seconds
    print("peak RSS per workload ...", file=sys.stderr, flush=True)
    for name, peaks in workload_peak_rss(names, model_dirs, threads).items():
        results[name].update(peaks)
    return results


def machine_line(threads: int) -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor() or "unknown CPU")
    versions = []
    for package in ("numpy", "numba", "torch", "transformers", "ctranslate2", "llama_cpp_python", "scipy"):
        try:
            versions.append(f"{package} {importlib.metadata.version(package)}")
        except importlib.metadata.PackageNotFoundError:
            pass
    flags = next((line.split(":", 1)[1].split() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("flags")), [])
    vectors = [flag for flag in ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni") if flag in flags]
    used = f"{threads} thread{'s' if threads > 1 else ''}"
    return (f"machine: {cpu} ({' '.join(vectors) or 'no AVX2'}), {used} used of {len(os.sched_getaffinity(0))} "
            "available cores; "
            f"Python {platform.python_version()}, {', '.join(versions)}")


def advantage(row: Row, ours: float, theirs: float) -> float:
    """How many times better ours is (> 1: faster, or less time / memory)."""
    return ours / theirs if row.higher_is_better else theirs / ours


def best_peer(row: Row, results: dict[str, dict]) -> str | None:
    peers_measured = [name for name in results if not name.startswith("tinygpt") and results[name][row.key] is not None]
    if not peers_measured:
        return None
    pick = max if row.higher_is_better else min
    return pick(peers_measured, key=lambda name: results[name][row.key])


def print_values(results: dict[str, dict]) -> None:
    names = list(results)
    width = max(13, *(len(name) + 2 for name in names))
    print(f"{'':24}" + "".join(f"{name:>{width}}" for name in names))
    for row in ROWS:
        arrow = "higher" if row.higher_is_better else "lower"
        cells = "".join(f"{'-':>{width}}" if results[name][row.key] is None
                        else f"{results[name][row.key]:{width}.{3 if row.key.endswith('_s') else 1}f}"
                        for name in names)
        print(f"{row.label:24}{cells}   ({arrow} is better)")


def weight_mb(dtype: str) -> float:
    """The weight bytes a forward pass reads, in MB: the float32 file; for int8, the quantized linear weights
    and LM head (1 byte a weight, 4 per output channel's scale) plus the tensors that stay float32, but the
    token embedding's (an int8 model reads only its prompt's rows there: its float32 copy is not the head)."""
    from tinygpt.config import GPT2Config
    from tinygpt.weights import EMBEDDINGS, LINEAR_SUFFIXES, stored_tensors

    tensors = stored_tensors(MODEL_DIR, GPT2Config.from_file(MODEL_DIR / "config.json"))
    if dtype == "float32":
        return sum(4 * math.prod(tensor.shape) for tensor in tensors.values()) / 1e6
    head = tensors["wte.weight"].shape  # tied: the LM head is quantized from it
    quantized = [tensor.shape for name, tensor in tensors.items() if name.endswith(LINEAR_SUFFIXES)] + [head]
    kept = [tensor.shape for name, tensor in tensors.items()
            if not name.endswith(LINEAR_SUFFIXES) and name != EMBEDDINGS[0]]
    # the file's linear weights are [in, out]: one scale per out channel, its last dimension
    return (sum(math.prod(shape) + 4 * shape[-1] for shape in quantized[:-1]) + math.prod(head) + 4 * head[0]
            + sum(4 * math.prod(shape) for shape in kept)) / 1e6


def print_budgets(results: dict[str, dict], runtime_mb: float) -> None:
    """Each tinygpt engine's peak RSS against its budget: runtime alone + weight bytes + 50 MB."""
    print(f"tinygpt's runtime alone, no model: {runtime_mb:.1f} MB; peak RSS budget = runtime + weights + 50 MB")
    for name, result in results.items():
        if not name.startswith("tinygpt"):
            continue
        weights = weight_mb("int8" if name.endswith("int8") else "float32")
        budget = runtime_mb + weights + 50
        peaks = [result[key] for key in ("rss_decode_b1", "rss_decode_b8", "rss_prefill", "peak_rss_mb")
                 if result.get(key) is not None]
        print(f"  {name}: weights {weights:.0f} MB, budget {budget:.0f} MB, peak RSS {max(peaks):.0f} MB "
              f"({'within' if max(peaks) <= budget else 'OVER'})")


def print_ratios(results: dict[str, dict]) -> None:
    """For each tinygpt engine, a table of its advantage over every peer and over the best peer of each row."""
    ours = [name for name in results if name.startswith("tinygpt")]
    theirs = [name for name in results if not name.startswith("tinygpt")]
    if not ours or not theirs:
        return
    width = max(10, *(len(name) + 2 for name in theirs))
    for name in ours:
        print(f"\n{name}'s advantage, x (> 1: tinygpt faster or smaller; < 1: slower or bigger)")
        print(f"{'':24}" + "".join(f"{peer:>{width}}" for peer in theirs) + f"{'best peer':>12}")
        for row in ROWS:
            value = results[name][row.key]

            def cell(peer: str | None, cell_width: int) -> str:
                if value is None or peer is None or results[peer][row.key] is None:
                    return f"{'-':>{cell_width}}"
                return f"{advantage(row, value, results[peer][row.key]):{cell_width}.2f}"

            best = best_peer(row, results)
            print(f"{row.label:24}" + "".join(cell(peer, width) for peer in theirs)
                  + cell(best, 12) + (f" ({best})" if best and value is not None else ""))


def print_agreement(results: dict[str, dict]) -> None:
    if REFERENCE not in results:
        return
    reference = results[REFERENCE]["b1_tokens"]

    def leading_matches(tokens: list[int]) -> int:
        return next((i for i, (a, b) in enumerate(zip(tokens, reference, strict=True)) if a != b), len(reference))

    others = ", ".join(f"{name} {leading_matches(r['b1_tokens'])}" for name, r in results.items()
                       if name != REFERENCE)
    print(f"\ngreedy b1 tokens equal to transformers' before the first difference (of {NEW_TOKENS}): {others}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cores = len(os.sched_getaffinity(0))
    parser.add_argument("--threads", type=int, default=cores, help=f"threads per engine (default {cores})")
    parser.add_argument("--repeats", type=int, default=3, help="timings are the best of this many (default 3)")
    parser.add_argument("--engines", nargs="+", choices=list(ENGINES), metavar="NAME",
                        help=f"engines to run, of {', '.join(ENGINES)} (default: every one that can run here)")
    parser.add_argument("--llama-cpp-converter", type=Path, metavar="PATH",
                        help="llama.cpp's convert_hf_to_gguf.py, to build the GGUF files the first time")
    # Internal: how the parent starts an engine's own processes.
    parser.add_argument("--serve", metavar="ENGINE", help=argparse.SUPPRESS)
    parser.add_argument("--first-token", metavar="ENGINE", help=argparse.SUPPRESS)
    parser.add_argument("--peak-rss", metavar="ENGINE", help=argparse.SUPPRESS)
    parser.add_argument("--runtime-alone", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--workload", choices=list(TOKENS_PER_RUN), help=argparse.SUPPRESS)
    parser.add_argument("--model", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not 1 <= args.threads <= cores:
        parser.error(f"--threads must be between 1 and {cores} (the cores this process may use)")
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    if args.engines is None:
        args.engines = [name for name, engine in ENGINES.items() if engine.missing(args) is None]
    missing = {name: ENGINES[name].missing(args) for name in args.engines}
    if any(missing.values()):
        parser.error("; ".join(f"{name} needs {what}" for name, what in missing.items() if what))
    return args


def main() -> None:
    args = parse_args()
    if args.serve:
        serve(args.serve, args.model, args.threads)
        return
    if args.first_token:
        first_token(args.first_token, args.model, args.threads)
        return
    if args.peak_rss:
        one_workload_peak_rss(args.peak_rss, args.model, args.threads, args.workload)
        return
    if args.runtime_alone:
        runtime_alone()
        return

    started = time.perf_counter()
    results = benchmark(args.engines, args)
    weight_mb = (MODEL_DIR / "model.safetensors").stat().st_size / 1e6
    print(f"distilgpt2 shape (6 layers, 768 wide, 50257 vocab), random weights ({weight_mb:.0f} MB float32); "
          f"best of {args.repeats}; run took {time.perf_counter() - started:.0f} s")
    print(machine_line(args.threads))
    print()
    print_values(results)
    print_budgets(results, runtime_alone_mb())
    print_ratios(results)
    print_agreement(results)


if __name__ == "__main__":
    main()
