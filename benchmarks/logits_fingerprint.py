"""Did a change move any number? Hashes of tinygpt's outputs on a model of distilgpt2's exact shape.

    python benchmarks/logits_fingerprint.py [--threads N] > before.txt
    ... change the code ...
    python benchmarks/logits_fingerprint.py [--threads N] > after.txt && diff before.txt after.txt

Builds (once, cached under benchmarks/.cache/) a random-init GPT2LMHeadModel with distilgpt2's config and a
wide init (peaked logits, so a wrong computation cannot hide in near-uniform ones), then prints, for float32
and int8 weights, a SHA-256 of the exact bytes of: logits of a 100-token prompt, of a batch of two prompts,
hidden states, and the logits of every step of a cached greedy decode (prompt, then one token at a time,
batch 1 and batch 4), plus the greedy ids of a batched ``generate`` with prompts of different lengths.

The hashes are of float32 bytes, so they hold only on one CPU with one thread count: kernels pick their
instructions by what the CPU has, and a different vector width sums in a different order. Compare two
trees (or two commits) on the same machine, not against figures from another.
"""

from __future__ import annotations

import argparse
import hashlib
import platform
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
MODEL_DIR = HERE / ".cache" / "distilgpt2-wide-init"
INIT_STD = 0.1


def build_model() -> Path:
    """distilgpt2's shape, random weights with std 0.1 and random LayerNorm/bias values; built once."""
    if (MODEL_DIR / "model.safetensors").exists():
        return MODEL_DIR
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(7)
    config = GPT2Config(n_layer=6, n_embd=768, n_head=12, vocab_size=50257, n_positions=1024,
                        initializer_range=INIT_STD)
    model = GPT2LMHeadModel(config).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.ndim == 1:
                centre = 1.0 if name.endswith(("ln_1.weight", "ln_2.weight", "ln_f.weight")) else 0.0
                param.normal_(centre, 0.1)
    model.save_pretrained(MODEL_DIR, safe_serialization=True)
    return MODEL_DIR


def digest(array: np.ndarray) -> str:
    array = np.ascontiguousarray(array, dtype=np.float32)
    return hashlib.sha256(array.tobytes()).hexdigest()[:16]


def cached_decode(model, prompts: list[list[int]], steps: int) -> tuple[str, list[list[int]]]:
    """Prompt pass, then ``steps`` greedy one-token passes through one cache: hash of every step's logits."""
    cache = model.new_cache(len(prompts), capacity=len(prompts[0]) + steps)
    logits = model.step(cache, prompts)
    seen, ids = [logits], [[] for _ in prompts]
    for _ in range(steps):
        chosen = logits.argmax(axis=-1)
        for row, token in zip(ids, chosen):
            row.append(int(token))
        logits = model.step(cache, chosen[:, None])
        seen.append(logits)
    return digest(np.stack(seen)), ids


def fingerprint(dtype: str) -> list[str]:
    from tinygpt import Model

    model = Model.from_pretrained(build_model(), dtype=dtype)
    rng = np.random.default_rng(0)
    prompt = rng.integers(0, 50256, 100).tolist()
    pair = rng.integers(0, 50256, (2, 40)).tolist()
    quad = rng.integers(0, 50256, (4, 12)).tolist()
    ragged = [rng.integers(0, 50256, n).tolist() for n in (5, 17, 9)]
    decode_1, ids_1 = cached_decode(model, [prompt[:32]], 16)
    decode_4, ids_4 = cached_decode(model, quad, 16)
    generated = model.generate(ragged, max_new_tokens=12, eos_token_id=None)
    return [
        f"{dtype} logits [100]          {digest(model.logits(prompt))}",
        f"{dtype} logits [2, 40]        {digest(model.logits(pair))}",
        f"{dtype} hidden states [100]   {digest(model.hidden_states(prompt))}",
        f"{dtype} cached decode b1      {decode_1} ids {ids_1[0]}",
        f"{dtype} cached decode b4      {decode_4} ids {ids_4}",
        f"{dtype} generate ragged ids   {[row[len(p):] for row, p in zip(generated, ragged)]}",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, help="kernel threads (default: every available core)")
    args = parser.parse_args()
    import tinygpt

    if args.threads is not None:
        tinygpt.set_num_threads(args.threads)
    flags = set(open("/proc/cpuinfo").read().split()) if Path("/proc/cpuinfo").exists() else set()
    extensions = [f for f in ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni") if f in flags]
    print(f"# {platform.processor() or platform.machine()}, {' '.join(extensions)}")
    for dtype in ("float32", "int8"):
        for line in fingerprint(dtype):
            print(line)


if __name__ == "__main__":
    main()
