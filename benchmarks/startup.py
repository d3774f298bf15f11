"""How long does a fresh ``tinygpt generate`` take to its first token, phase by phase, and next to CTranslate2?

    python benchmarks/startup.py [--repeats R] [--threads N]

On the random-init distilgpt2-shaped model of benchmarks/engine.py with GPT-2's tokenizer files beside it, and
warm caches (Numba's kernels compiled, tinygpt's int8 file written, the files in the page cache: one untimed
round first), it starts fresh processes in turns, round after round, and prints the median wall time of each
(the fastest in brackets), from just before the spawn to the process's exit:

  python                 python -c pass
  + numpy                python -c "import numpy"
  + numba                python -c "import numpy, numba": the floor under anything built on Numba
  generate 1 f32 / int8  tinygpt generate PROMPT --max-new-tokens 1 --greedy [--dtype int8]: the command exits
                         as soon as it has printed its token, so this is its first token
  generate 20 f32 / int8 the same, 20 new tokens
  ct2-int8 1             a minimal CTranslate2 script: import, load the int8 conversion, generate one token
                         from the prompt's tokens (given as strings: no tokenizer library loaded)

Then the phases of tinygpt's first token, from a process that does what the command does, step by step
(median of R): import numpy, import Numba (with tinygpt's thread setup), import the model code, read the
tokenizer, map the weights, the prompt and its first token (which loads that path's kernels from Numba's
cache), and the next 19 tokens. Its "gc paused" columns pause Python's cyclic garbage collector through the
imports and the load and then freeze what they created (``gc.freeze``), as the command does; the "gc on"
columns leave the collector alone.

Every process runs with bytecode caching allowed (``PYTHONDONTWRITEBYTECODE`` removed), as an installed package
has it, and with ``--threads`` kernel threads.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import engine
import peers

PROMPT = "Hello, I'm a language model,"
NEW_TOKENS = 20

# The phase process: run as ``python -c PHASES model_dir dtype threads pause_gc``; prints one JSON object.
PHASES = r"""
import gc, json, sys, time
from pathlib import Path
start = time.perf_counter()
model_dir, dtype, threads, pause = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1"
marks = {}
def mark(name):
    marks[name] = time.perf_counter()
if pause:
    gc.disable()
import numpy
mark("import numpy")
from tinygpt.kernels.threads import set_num_threads
set_num_threads(threads)
mark("import numba")
from tinygpt.model import Model
from tinygpt.config import GPT2Config
from tinygpt.tokenizers import load_model_tokenizer
from tinygpt.weights import load_weights
mark("import tinygpt.model")
config = GPT2Config.from_file(model_dir / "config.json")
tokenizer = load_model_tokenizer(model_dir, config.vocab_size)
mark("tokenizer")
weights = load_weights(model_dir, config, dtype)
model = Model(config, weights, tokenizer)
mark("weights")
if pause:
    gc.freeze()
    gc.enable()
ids = model.encode_prompt(sys.argv[5])
pieces = model.stream(ids, max_new_tokens=%d, do_sample=False)
next(pieces)
mark("prompt, first token")
for _ in pieces:
    pass
mark("next %d tokens")
names, times = list(marks), [start, *marks.values()]
print(json.dumps({name: later - earlier for name, later, earlier in zip(names, times[1:], times)}))
""" % (NEW_TOKENS, NEW_TOKENS - 1)

# The minimal CTranslate2 script: python -c CT2 model_dir threads token...
CT2 = r"""
import sys, ctranslate2
generator = ctranslate2.Generator(sys.argv[1], device="cpu", compute_type="int8", intra_threads=int(sys.argv[2]))
result = generator.generate_batch([sys.argv[3:]], max_length=1, sampling_topk=1, include_prompt_in_result=False)
print(result[0].sequences[0])
"""


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def wall_seconds(command: list[str]) -> float:
    """Spawn to exit of ``command``, which must succeed."""
    start = time.perf_counter()
    done = subprocess.run(command, env=child_env(), capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:4])} ... failed (exit code {done.returncode}):\n{done.stderr[-3000:]}")
    return seconds


def commands(model_dir: Path, ct2_dir: Path | None, threads: int) -> dict[str, list[str]]:
    python, tinygpt = sys.executable, [sys.executable, "-m", "tinygpt"]
    generate = [*tinygpt, "generate", PROMPT, "--model", str(model_dir), "--greedy", "--threads", str(threads)]
    found = {
        "python": [python, "-c", "pass"],
        "+ numpy": [python, "-c", "import numpy"],
        "+ numba": [python, "-c", "import numpy, numba"],
        "generate 1 f32": [*generate, "--max-new-tokens", "1"],
        "generate 1 int8": [*generate, "--max-new-tokens", "1", "--dtype", "int8"],
        f"generate {NEW_TOKENS} f32": [*generate, "--max-new-tokens", str(NEW_TOKENS)],
        f"generate {NEW_TOKENS} int8": [*generate, "--max-new-tokens", str(NEW_TOKENS), "--dtype", "int8"],
    }
    if ct2_dir is not None:
        from tinygpt.tokenizers import Tokenizer

        tokenizer = Tokenizer.from_pretrained(model_dir)
        tokens = tokenizer.convert_ids_to_tokens(tokenizer.encode(PROMPT))
        found["ct2-int8 1"] = [python, "-c", CT2, str(ct2_dir), str(threads), *tokens]
    return found


def phases(model_dir: Path, dtype: str, threads: int, pause_gc: bool) -> dict[str, float]:
    done = subprocess.run([sys.executable, "-c", PHASES, str(model_dir), dtype, str(threads), str(int(pause_gc)),
                           PROMPT], env=child_env(), capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"the phase process failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout)


def summary(samples: list[float]) -> str:
    return f"{statistics.median(samples):6.3f} ({min(samples):.3f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cores = len(os.sched_getaffinity(0))
    parser.add_argument("--threads", type=int, default=cores, help=f"kernel threads (default {cores})")
    parser.add_argument("--repeats", type=int, default=7, help="rounds (default 7)")
    args = parser.parse_args()

    model_dir = peers.with_gpt2_tokenizer(engine.build_model())
    has_ct2 = engine.ENGINES["ct2-int8"].missing(args) is None
    ct2_dir = engine.ct2_files("int8")(args) if has_ct2 else None
    runs = commands(model_dir, ct2_dir, args.threads)
    variants = [(dtype, pause) for dtype in ("float32", "int8") for pause in (False, True)]
    walls = {name: [] for name in runs}
    phase_runs = {variant: [] for variant in variants}
    for round_ in range(args.repeats + 1):  # round 0 warms the caches and is not counted
        print(f"round {round_} of {args.repeats}{' (warm-up)' if round_ == 0 else ''} ...", file=sys.stderr,
              flush=True)
        for name, command in runs.items():
            seconds = wall_seconds(command)
            if round_:
                walls[name].append(seconds)
        for variant in variants:
            dtype, pause = variant
            timings = phases(model_dir, dtype, args.threads, pause)
            if round_:
                phase_runs[variant].append(timings)

    print(f"distilgpt2 shape, random weights, prompt {PROMPT!r}; median of {args.repeats} fresh processes "
          "(fastest in brackets), seconds")
    print(engine.machine_line(args.threads))
    print()
    print(f"{'whole process':<22} {'wall s':>16}")
    for name, samples in walls.items():
        print(f"{name:<22} {summary(samples):>16}")
    if has_ct2:
        for dtype in ("f32", "int8"):
            ratio = statistics.median(walls[f"generate 1 {dtype}"]) / statistics.median(walls["ct2-int8 1"])
            print(f"generate 1 {dtype} / ct2-int8 1: {ratio:.2f}")
    print()
    header = "".join(f"{f'{dtype} gc ' + ('paused' if pause else 'on'):>18}" for dtype, pause in variants)
    print(f"{'phase':<22}{header}")
    for phase in phase_runs[variants[0]][0]:
        cells = "".join(f"{summary([run[phase] for run in phase_runs[variant]]):>18}" for variant in variants)
        print(f"{phase:<22}{cells}")
    totals = "".join(f"{summary([sum(run.values()) for run in phase_runs[variant]]):>18}" for variant in variants)
    print(f"{'all (after Python start)':<22}{totals}")


if __name__ == "__main__":
    main()
