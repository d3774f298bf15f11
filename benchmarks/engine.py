"""How fast is tinygpt's float32 engine next to transformers, on a model of distilgpt2's exact shape?

    python benchmarks/engine.py [--threads N] [--repeats R]

Builds (once, cached under benchmarks/.cache/) a random-init GPT2LMHeadModel with distilgpt2's config, then,
in the same run and with the same thread count, times each engine in its own process (so peak RSS is that
engine's alone):
  - decode: batch 1, 32-token prompt, 128 new tokens, greedy (new tokens / wall time of the whole generation);
  - prefill: a 512-token prompt to next-token logits (tokens / wall time);
  - peak RSS of the process.
Then runs benchmarks/matmul.py (Numba GEMV/GEMM vs np.matmul on the model's shapes). Random weights are fine
here: speed does not depend on what the weights say.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODEL_DIR = HERE / ".cache" / "distilgpt2-random"
PROMPT_TOKENS, NEW_TOKENS, PREFILL_TOKENS = 32, 128, 512


def build_model() -> Path:
    if (MODEL_DIR / "model.safetensors").exists():
        return MODEL_DIR
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(n_layer=6, n_embd=768, n_head=12, vocab_size=50257, n_positions=1024)
    GPT2LMHeadModel(config).save_pretrained(MODEL_DIR, safe_serialization=True)
    return MODEL_DIR


def prompt_ids(n: int, seed: int) -> list[int]:
    import numpy as np

    return np.random.default_rng(seed).integers(0, 50257, n).tolist()


def peak_rss_mb() -> float:
    """This process's peak resident set size. VmHWM, unlike ru_maxrss, starts afresh at exec, so it does not
    include what the parent (which imported torch to build the model) held when it forked us."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024 / 1e6
    raise RuntimeError("no VmHWM in /proc/self/status")


def best_of(repeats: int, run) -> float:
    """Fastest wall time of ``repeats`` calls: the least disturbed by the rest of the machine."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def measure_tinygpt(model_dir: Path, threads: int, repeats: int) -> dict:
    import numpy as np

    import tinygpt.kernels.threads as kernel_threads
    from tinygpt.model import Model

    kernel_threads.set_num_threads(threads)
    start = time.perf_counter()
    model = Model.from_pretrained(model_dir)
    load_s = time.perf_counter() - start

    def decode():
        cache = model.new_cache(capacity=PROMPT_TOKENS + NEW_TOKENS)
        logits = model.step(cache, np.array([prompt_ids(PROMPT_TOKENS, 1)]))
        for _ in range(NEW_TOKENS - 1):
            logits = model.step(cache, logits.argmax(axis=-1)[:, None])

    long_prompt = np.array([prompt_ids(PREFILL_TOKENS, 2)])

    def prefill():
        model.step(model.new_cache(capacity=PREFILL_TOKENS), long_prompt)

    decode(), prefill()  # compile / warm caches
    return {"load_s": load_s, "decode_s": best_of(repeats, decode), "prefill_s": best_of(repeats, prefill)}


def measure_transformers(model_dir: Path, threads: int, repeats: int) -> dict:
    import torch
    from transformers import GPT2LMHeadModel

    torch.set_num_threads(threads)
    start = time.perf_counter()
    model = GPT2LMHeadModel.from_pretrained(model_dir).eval()
    load_s = time.perf_counter() - start
    prompt = torch.tensor([prompt_ids(PROMPT_TOKENS, 1)])
    long_prompt = torch.tensor([prompt_ids(PREFILL_TOKENS, 2)])

    @torch.inference_mode()
    def decode():
        model.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=False,
                       max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, pad_token_id=0)

    @torch.inference_mode()
    def prefill():
        model(long_prompt, logits_to_keep=1)

    decode(), prefill()
    return {"load_s": load_s, "decode_s": best_of(repeats, decode), "prefill_s": best_of(repeats, prefill)}


ENGINES = {"tinygpt": measure_tinygpt, "transformers": measure_transformers}


def run_engine(engine: str, model_dir: Path, threads: int, repeats: int) -> dict:
    """Measure one engine in a fresh process, so its peak RSS is its own."""
    cmd = [sys.executable, __file__, "--engine", engine, "--model", str(model_dir),
           "--threads", str(threads), "--repeats", str(repeats)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--engine", choices=sorted(ENGINES), help="(internal) measure one engine and print JSON")
    parser.add_argument("--model", type=Path, help="(internal) model directory")
    args = parser.parse_args()

    if args.engine:
        result = ENGINES[args.engine](args.model, args.threads, args.repeats)
        result["peak_rss_mb"] = peak_rss_mb()
        print(json.dumps(result))
        return

    model_dir = build_model()
    weight_mb = (model_dir / "model.safetensors").stat().st_size / 1e6
    results = {engine: run_engine(engine, model_dir, args.threads, args.repeats) for engine in ENGINES}
    tiny, hf = results["tinygpt"], results["transformers"]
    rows = [
        ("decode b1 (tok/s)", NEW_TOKENS / tiny["decode_s"], NEW_TOKENS / hf["decode_s"]),
        ("prefill-512 (tok/s)", PREFILL_TOKENS / tiny["prefill_s"], PREFILL_TOKENS / hf["prefill_s"]),
        ("load (s)", tiny["load_s"], hf["load_s"]),
        ("peak RSS (MB)", tiny["peak_rss_mb"], hf["peak_rss_mb"]),
    ]
    print(f"distilgpt2 shape, random weights ({weight_mb:.0f} MB float32), {args.threads} threads, "
          f"best of {args.repeats}")
    print(f"{'':22}{'tinygpt':>10}{'transformers':>14}{'ratio':>8}")
    for name, ours, theirs in rows:
        print(f"{name:22}{ours:10.1f}{theirs:14.1f}{ours / theirs:8.2f}")
    print(f"peak RSS budget: weights + 150 MB = {weight_mb + 150:.0f} MB")
    print()
    subprocess.run([sys.executable, str(HERE / "matmul.py")], check=True)


if __name__ == "__main__":
    main()
