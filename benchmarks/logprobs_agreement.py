"""How close are the server's logprobs to transformers', at distilgpt2's shape?

    python benchmarks/logprobs_agreement.py [--prompts 6] [--length 300]

``tinygpt serve`` returns log-softmax of the engine's logits (``Engine.submit(..., logprobs=N,
prompt_logprobs=N)``); the serving issue asks them to equal transformers' within 1e-4 (float32). This builds
(once, cached under benchmarks/.cache/) a random-init model of distilgpt2's exact shape, scores random prompts
through the engine (prompt logprobs of every position, and the logprobs of a greedy continuation), and prints
the largest difference against transformers in float32 and against transformers in float64 (the exact
value, near enough), next to transformers' own float32 error. Random weights are not the published ones: the
published model's logits may be larger or smaller, and float32's rounding with them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent / "tests"))

from checkpoints import DISTILGPT2, build_gpt2_dir, load_hf_model  # noqa: E402

from tinygpt import Engine, Model  # noqa: E402

MODEL_DIR = HERE / ".cache" / "distilgpt2_shape_seed2"
NEW_TOKENS = 64


def transformers_logprobs(hf_model, ids: list[int]) -> np.ndarray:
    """float64 [len(ids), vocab]: log-softmax after each prefix, computed in the model's own dtype."""
    with torch.no_grad():
        logits = hf_model(torch.tensor([ids])).logits[0]
    return torch.log_softmax(logits.double(), dim=-1).numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=6)
    parser.add_argument("--length", type=int, default=300, help="tokens per prompt")
    args = parser.parse_args()
    if not (MODEL_DIR / "config.json").exists():
        build_gpt2_dir(MODEL_DIR, seed=2, **DISTILGPT2)
    hf32 = load_hf_model(MODEL_DIR)
    hf64 = load_hf_model(MODEL_DIR).double()
    model = Model.from_pretrained(MODEL_DIR)
    worst = {"tinygpt - transformers f32": 0.0, "tinygpt - transformers f64": 0.0,
             "transformers f32 - f64": 0.0}
    positions = 0
    with Engine(model) as engine:
        for seed in range(args.prompts):
            prompt = np.random.default_rng(seed).integers(0, model.config.vocab_size, args.length).tolist()
            handle = engine.submit(prompt, max_new_tokens=NEW_TOKENS, logprobs=0, prompt_logprobs=0,
                                   eos_token_id=None)
            events = list(handle)
            ids = handle.result()[0]
            ours = [entry[0] for entry in handle.prompt_logprobs[1:]] + [event.logprob for event in events]
            scored = np.array(ids[1:])
            rows = np.arange(len(scored))
            exact = transformers_logprobs(hf64, ids)[rows, scored]
            single = transformers_logprobs(hf32, ids)[rows, scored]
            ours = np.array(ours)
            positions += len(scored)
            for name, difference in (("tinygpt - transformers f32", ours - single),
                                     ("tinygpt - transformers f64", ours - exact),
                                     ("transformers f32 - f64", single - exact)):
                worst[name] = max(worst[name], float(np.abs(difference).max()))
    print(f"{args.prompts} random prompts of {args.length} tokens + {NEW_TOKENS} greedy tokens each "
          f"({positions} scored positions), distilgpt2's shape, random init (tests/checkpoints.py)\n")
    print("| difference | max over positions |")
    print("|---|---|")
    for name, value in worst.items():
        print(f"| {name} | {value:.3g} |")


if __name__ == "__main__":
    main()
