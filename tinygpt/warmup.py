"""``tinygpt warmup``: compile every kernel ahead of time, for container images and deploys, without weights.

Numba compiles a kernel at its first call for the types of its arguments, and caches the machine code on disk.
Which kernels a run calls depends on its work (a prompt's many rows, decode's one, batches of rows, packed
scoring) and on the weights' dtype and width, not on the weights' values; so a small random model, at each
dtype and both width classes, run through every path that generate, serve, embed, perplexity and score take,
compiles all of them (or, on a warm cache, loads them, which is quick).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from .config import GPT2Config
from .errors import InputError
from .model import ROWS_PER_PRODUCT, Model
from .weights import LINEAR_SUFFIXES, WEIGHT_DTYPES, QuantizedWeight, expected_shapes

# (n_embd, n_head) of the models run. The products' kernels depend on the width: the float32 LM head takes
# another GEMM when n_embd is more than the GEMM's k-block (768). distilgpt2, gpt2 and the uer models are
# 768 wide, gpt2-medium and larger wider.
WIDTHS = ((768, 12), (1024, 16))
# Small otherwise: one layer, a short context (still longer than a prompt chunk, and scored in windows).
VOCAB, POSITIONS, INNER = 512, 2 * ROWS_PER_PRODUCT + 16, 1024


@dataclass(frozen=True)
class Step:
    dtype: str
    width: int
    seconds: float
    compiled: int  # functions Numba compiled (the rest came from its cache)


def warmup(dtypes: Sequence[str] = WEIGHT_DTYPES) -> Iterator[Step]:
    """Run every path of the command line on a random model of each dtype and width; one Step as each is done."""
    for dtype in dtypes:
        if dtype not in WEIGHT_DTYPES:
            raise InputError(f"dtype must be one of {', '.join(WEIGHT_DTYPES)}, got {dtype!r}")
    from numba.core import event

    for dtype in dtypes:
        for width, heads in WIDTHS:
            start = time.perf_counter()
            with event.install_recorder("numba:compile") as compiles:  # compiles only, not loads from the cache
                _run_every_path(_random_model(width, heads, dtype))
            compiled = sum(1 for _, record in compiles.buffer if record.is_start)
            yield Step(dtype, width, time.perf_counter() - start, compiled)


def _random_model(width: int, heads: int, dtype: str) -> Model:
    """A one-layer model of random weights, built in memory as a load builds it: int8 by the same quantizers."""
    config = GPT2Config(n_layer=1, n_embd=width, n_head=heads, n_inner=INNER, vocab_size=VOCAB,
                        n_positions=POSITIONS, bos_token_id=VOCAB - 1, eos_token_id=VOCAB - 1)
    rng = np.random.default_rng(0)
    weights = {name: rng.standard_normal(shape, dtype=np.float32) * np.float32(0.02)
               for name, shape in expected_shapes(config).items()}
    weights["lm_head.weight"] = weights["wte.weight"]
    if dtype == "int8":
        from .kernels.quantized import quantize_columns, quantize_rows

        for name in [name for name in weights if name.endswith(LINEAR_SUFFIXES)]:
            weights[name] = QuantizedWeight(*quantize_columns(weights[name]))
        weights["lm_head.weight"] = QuantizedWeight(*quantize_rows(weights["wte.weight"]))
    return Model(config, weights)


def _run_every_path(model: Model) -> None:
    rng = np.random.default_rng(1)
    prompt = rng.integers(0, VOCAB - 1, ROWS_PER_PRODUCT + 8).tolist()  # more rows than one product takes
    short = prompt[:5]
    # generate and the engine (serve): prompt chunks and decode on the paged cache, for one row and for several
    model.generate(short, max_new_tokens=2, eos_token_id=None)
    model.generate([prompt, short], max_new_tokens=3, eos_token_id=None)
    model.generate(short, max_new_tokens=2, do_sample=True, num_return_sequences=3, seed=0, eos_token_id=None)
    # whole sequences (logits, hidden states, embed) and the step interface: many rows, a few, one, a batch
    model.logits(prompt)
    model.hidden_states(short)
    cache = model.new_cache(2, capacity=8)
    model.step(cache, [short[:3], short[2:]])
    model.step(cache, [[1], [2]])
    model.step(model.new_cache(1, capacity=1), [[3]])
    # score and perplexity: documents packed into one pass, one longer than the context cut into windows
    model.score([prompt, short, rng.integers(0, VOCAB - 1, POSITIONS + 40).tolist()], embed=True)

