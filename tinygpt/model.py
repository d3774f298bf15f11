"""The GPT-2 forward pass on tinygpt's Numba kernels, over a KV cache.

Two ways through the network, one per kind of work:

* Whole sequences and the step interface (``logits``, ``hidden_states``, ``new_cache`` + ``step``): like
  ggml's gpt-2 example, a prompt goes through in one pass (every kernel sees all its tokens at once, the large
  products on BLAS), then each new token is one more pass of a single row; keys and values go into a cache
  allocated up front, at position ``n_past``, rows left-padded to a common length.
* Any mix of tokens of any sequences (``_forward_tokens``, run by ``tinygpt.scheduler`` for ``generate`` and
  the engine): each token at its own sequence's position, keys and values in a shared pool of blocks
  (``tinygpt.paged_cache``), products in groups of at most ROWS_PER_PRODUCT rows, where the kernels give each
  row the same bits whatever the other rows are, so a token's result never depends on its neighbours.

``tinygpt.reference`` is the same computation without any of this machinery.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from . import checks, generation, scoring
from .config import GPT2Config
from .errors import InputError, NonFiniteError
# The kernels check no arguments (their contracts are in kernels.checks): every array the forward pass hands
# them is valid by construction (weights checked against the config at load, activations and cache allocated
# here), and the public methods below check what a caller gives them once.
from .kernels.attention import attention, packed_attention, paged_attention
from .kernels.matmul import SMALL_M, linear, linear_nt
from .kernels.norm import layer_norm
from .kernels.quantized import linear_nt_int8
from .tokenizers import load_model_tokenizer, prompt_rules
from .weights import QuantizedWeight, load_weights


def project(x: np.ndarray, weight, bias: np.ndarray, gemm: str = "auto", **options) -> np.ndarray:
    """A linear layer, x [M, in] -> [M, out], on float32 or int8 weights (options: out, accumulate, gelu).
    ``gemm`` picks the float32 GEMM for many rows (see ``kernels.matmul.linear``); int8 has one."""
    if isinstance(weight, QuantizedWeight):
        return linear_nt_int8(x, weight.q, weight.scale, bias, **options)
    return linear(x, weight, bias, gemm=gemm, **options)


# Products of the token-by-token path (Model._forward_tokens) take at most this many rows per kernel call: up
# to it, each row's result is the same whatever rows share the call (the kernels' row invariance).
ROWS_PER_PRODUCT = SMALL_M


def project_rows(x: np.ndarray, weight, bias: np.ndarray, out: np.ndarray | None = None, **options) -> np.ndarray:
    """:func:`project` in groups of ROWS_PER_PRODUCT rows: every row's result independent of the others."""
    if out is None:
        out = np.empty((x.shape[0], bias.shape[0]), np.float32)
    for first in range(0, x.shape[0], ROWS_PER_PRODUCT):
        rows = slice(first, first + ROWS_PER_PRODUCT)
        project(x[rows], weight, bias, out=out[rows], **options)
    return out


def lm_head(x: np.ndarray, weight, out: np.ndarray | None = None, gemm: str = "auto") -> np.ndarray:
    """Logits x [M, n_embd] -> [M, vocab] from a [vocab, n_embd] head, float32 or int8 (into out if given)."""
    if isinstance(weight, QuantizedWeight):
        return linear_nt_int8(x, weight.q, weight.scale, out=out)
    return linear_nt(x, weight, out=out, gemm=gemm)


@dataclass
class KVCache:
    """Keys and values of every layer for a batch of sequences, preallocated to ``capacity`` positions.

    keys, values: [n_layer, B, H, capacity, D] float32. ``n_past`` positions are filled. ``start[b]`` is
    the first real position of row b; earlier positions are left padding, masked out of attention.
    """

    keys: np.ndarray
    values: np.ndarray
    start: np.ndarray
    n_past: int = 0

    @property
    def batch_size(self) -> int:
        return self.keys.shape[1]

    @property
    def capacity(self) -> int:
        return self.keys.shape[3]


class Model:
    """A GPT-2-family language model ready to run.

    Build one with :meth:`from_pretrained`. ``logits`` and ``hidden_states`` run whole sequences;
    ``new_cache`` + ``step`` are the incremental interface. The public methods check their arguments (an
    :class:`~tinygpt.errors.InputError` names the problem) and their outputs (NaN or infinity, which finite but
    extreme weights can produce, is a :class:`~tinygpt.errors.NonFiniteError`); generation, which feeds ids it
    chose itself, runs the unchecked ``_step``.
    """

    def __init__(self, config: GPT2Config, weights: dict[str, np.ndarray], tokenizer=None):
        self.config = config
        self.weights = weights
        self.tokenizer = tokenizer
        # How text becomes a prompt and where generation stops by default; both derived from the files and
        # both plain attributes, so a user can override them.
        self.prompt_prefix_ids, self.eos_token_id = prompt_rules(tokenizer, config.eos_token_id, config.vocab_size)
        # The generate options config.json sets for text generation (task_specific_params): what the pipeline
        # and the command line use when a call leaves an option unset; generate itself does not apply them.
        self.generation_defaults = generation.task_defaults(config.text_generation_params)

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, *, revision: str | None = None,
                        dtype: str = "float32") -> "Model":
        """Load a model from a local directory or a Hugging Face Hub repo id (e.g. "distilgpt2").

        Reads ``config.json``, ``model.safetensors`` and, when its files are there, the tokenizer
        (``model.tokenizer``; None otherwise). Hub repos are downloaded into the Hugging Face cache, only
        the files tinygpt reads; ``revision`` picks a branch, tag or commit. ``dtype="int8"`` quantizes the
        linear weights and the LM head at load (one scale per output channel): a quarter of the bytes to
        read per token. Activations stay float32 between layers; decode products round them to int16 steps
        inside the kernel (see ``tinygpt.kernels.quantized``).
        """
        from .hub import resolve_model_dir

        path = resolve_model_dir(name_or_path, revision)
        config = GPT2Config.from_file(path / "config.json")
        weights = load_weights(path, config, dtype)
        return cls(config, weights, load_model_tokenizer(path, config.vocab_size))

    # ---- whole sequences -------------------------------------------------------------------------

    def logits(self, input_ids) -> np.ndarray:
        """Next-token logits at every position.

        input_ids: [T] (list or array) -> float32 [T, vocab]; or [B, T] -> [B, T, vocab].
        """
        return self._run_whole(input_ids, output="logits")

    def hidden_states(self, input_ids) -> np.ndarray:
        """Final hidden states after ``ln_f`` (like transformers' ``last_hidden_state``).

        input_ids: [T] -> float32 [T, n_embd]; or [B, T] -> [B, T, n_embd].
        """
        return self._run_whole(input_ids, output="hidden")

    def _run_whole(self, input_ids, output: str) -> np.ndarray:
        ids = checks.token_ids(input_ids, self.config.vocab_size)
        if ids.shape[-1] > self.config.n_positions:
            raise InputError(
                f"{ids.shape[-1]} tokens exceed the model's context of {self.config.n_positions} positions"
            )
        batched = ids.ndim == 2
        ids2d = ids if batched else ids[None, :]
        cache = self.new_cache(ids2d.shape[0], capacity=ids2d.shape[1])
        result = self._forward(cache, ids2d, all_positions=True, output=output)
        result = result if batched else result[0]
        what = "the logits" if output == "logits" else "the hidden states"
        return checks.finite(result, what, ("row", "position") if batched else ("position",))

    # ---- incremental interface ---------------------------------------------------------------------

    def new_cache(self, batch_size: int = 1, *, capacity: int | None = None, start=None) -> KVCache:
        """An empty KV cache for ``batch_size`` sequences of up to ``capacity`` tokens (default n_positions).

        start: [batch_size] ints, the number of left-padding positions of each row (default 0).
        """
        cfg = self.config
        batch_size = checks.count(batch_size, "batch_size", minimum=1)
        capacity = cfg.n_positions if capacity is None else checks.count(
            capacity, "cache capacity", minimum=1, maximum=cfg.n_positions, maximum_name="n_positions")
        shape = (cfg.n_layer, batch_size, cfg.n_head, capacity, cfg.head_dim)
        checks.fits_in_memory(2 * math.prod(shape) * 4, f"a KV cache of {batch_size} x {capacity} positions",
                              "lower batch_size or capacity")
        start = np.zeros(batch_size, np.int64) if start is None else checks.counts(
            start, "start (left padding per row)", batch_size, maximum=capacity - 1, maximum_name="capacity - 1")
        return KVCache(np.zeros(shape, np.float32), np.zeros(shape, np.float32), start)

    def step(self, cache: KVCache, input_ids, *, all_positions: bool = False) -> np.ndarray:
        """Feed new tokens to every row of ``cache`` and return next-token logits.

        input_ids: [B, T] ints, appended at position ``cache.n_past``.
        Returns float32 [B, vocab] for the last new token (or [B, T, vocab] with all_positions).
        """
        self._check_cache(cache)
        ids = checks.token_ids(input_ids, self.config.vocab_size)
        if ids.ndim != 2 or ids.shape[0] != cache.batch_size:
            raise InputError(f"step expects ids of shape [{cache.batch_size}, T], got {list(ids.shape)}")
        all_positions = checks.flag(all_positions, "all_positions")
        last = cache.n_past + ids.shape[1] - 1  # the position of the last new token
        if last >= self.config.n_positions:
            raise InputError(f"token position {last} is past the model's context of {self.config.n_positions} "
                             "positions")
        if last >= cache.capacity:
            raise InputError(f"token position {last} is past the cache's {cache.capacity} positions")
        logits = self._step(cache, ids, all_positions=all_positions)
        return checks.finite(logits, "the logits", ("row", "position") if all_positions else ("row",))

    def _step(self, cache: KVCache, ids: np.ndarray, *, all_positions: bool = False) -> np.ndarray:
        """:meth:`step` for callers whose cache and ids are valid by construction (generation): no checks."""
        return self._forward(cache, ids, all_positions=all_positions, output="logits")

    def _check_cache(self, cache) -> None:
        """A cache this model's ``new_cache`` could have made: the forward pass writes into it unchecked."""
        if not isinstance(cache, KVCache):
            raise InputError(f"step expects a KVCache from new_cache, got {type(cache).__name__}")
        cfg = self.config
        layout = (cfg.n_layer, cache.batch_size, cfg.n_head, cache.capacity, cfg.head_dim)
        for name in ("keys", "values"):
            array = getattr(cache, name)
            if not (isinstance(array, np.ndarray) and array.shape == layout and array.dtype == np.float32
                    and array.flags.c_contiguous):
                raise InputError(f"cache.{name} does not fit this model: expected float32 {list(layout)} "
                                 f"[n_layer, batch, n_head, capacity, head_dim]; was it made by another model?")
        start = cache.start
        if not (isinstance(start, np.ndarray) and start.dtype == np.int64 and start.shape == (cache.batch_size,)
                and 0 <= start.min() and start.max() < cache.capacity):
            raise InputError(f"cache.start must be int64 [{cache.batch_size}] in 0..{cache.capacity - 1}, "
                             f"got {start!r}")
        # As a Python int: NumPy integer arithmetic on positions could wrap.
        cache.n_past = checks.count(cache.n_past, "cache.n_past", maximum=cache.capacity, maximum_name="capacity")

    # ---- text ------------------------------------------------------------------------------------------

    def encode_prompt(self, text: str) -> list[int]:
        """Token ids of ``text`` as a generation prompt: ``prompt_prefix_ids`` (e.g. [CLS]) + the text's ids."""
        return [*self.prompt_prefix_ids, *self._require_tokenizer("encode text").encode(text)]

    def decode(self, ids) -> str:
        """Text of generated ids, without special tokens ([CLS], [PAD], <|endoftext|>, ...)."""
        return self._require_tokenizer("decode ids").decode(ids, skip_special_tokens=True)

    # ---- generation and scoring (tinygpt.generation / tinygpt.scoring do the work) -----------------

    def generate(self, input_ids, **options) -> list[list[int]]:
        """Continue one prompt or a batch; see :func:`tinygpt.generation.generate` for the options."""
        return generation.generate(self, input_ids, **options)

    def stream(self, input_ids, **options) -> Iterator[str]:
        """Yield the continuation's text as it is produced; see :func:`tinygpt.generation.stream`."""
        return generation.stream(self, input_ids, **options)

    def perplexity(self, text, *, stride: int | None = None, max_length: int | None = None,
                   progress=None) -> float:
        """Perplexity of ``text`` (a str, or its token ids: a list or 1-D array of ints) by transformers'
        sliding-window method (windows of ``max_length``, default n_positions, every ``stride`` tokens, default
        half a window); see :func:`tinygpt.scoring.perplexity`."""
        if isinstance(text, str):
            text = self._require_tokenizer("score text (pass its token ids instead)").encode(text)
        return scoring.perplexity(self, text, stride=stride, max_length=max_length, progress=progress)

    def score(self, documents, *, embed: bool = False, stride: int | None = None, progress=None):
        """Per-token log-probabilities, perplexity and (``embed=True``) mean-pooled embedding of documents.

        documents: one document (a str, or its token ids: a list or 1-D array of ints) -> a
        :class:`~tinygpt.scoring.DocumentScore`; a list of them -> a list, in order. Short documents are
        packed into shared forward passes, a document longer than the context is scored in sliding windows
        as :meth:`perplexity` (``stride``); see :func:`tinygpt.scoring.score`. A document needs 2 tokens.
        """
        if isinstance(documents, (bytes, bytearray)):
            raise InputError(f"score takes a str, token ids, or a list of them, got {type(documents).__name__}")
        single = isinstance(documents, str) or (
            isinstance(documents, np.ndarray) and documents.ndim == 1) or (
            isinstance(documents, (list, tuple)) and len(documents) > 0
            and all(checks.as_integer(i) is not None for i in documents))
        batch = [documents] if single else list(documents)
        if not single and not batch:
            raise InputError("score needs at least one document, got an empty list")
        ids = [self._require_tokenizer("score text (pass its token ids instead)").encode(d) if isinstance(d, str)
               else d for d in batch]
        results = scoring.score(self, ids, embed=embed, stride=stride, progress=progress)
        return results[0] if single else results

    def embed(self, texts: str | list[str]) -> np.ndarray:
        """Mean-pooled final hidden states: float32 [n_embd] for one text, [N, n_embd] for a list."""
        if isinstance(texts, str):
            return self._embedding(texts, 0)
        if isinstance(texts, (bytes, bytearray)):
            raise InputError(f"embed takes a str or a list of str, got {type(texts).__name__}")
        texts = list(texts)
        if not texts:
            raise InputError("embed needs at least one text, got an empty list")
        return np.stack([self._embedding(text, i) for i, text in enumerate(texts)])

    def _embedding(self, text: str, index: int) -> np.ndarray:  # -> [n_embd]
        ids = self._require_tokenizer("embed text").encode(text)
        if not ids:
            raise InputError(f"text {index} ({text!r}) has no tokens to embed")
        if len(ids) > self.config.n_positions:
            raise InputError(f"text {index} has {len(ids)} tokens, more than the model's context of "
                             f"{self.config.n_positions} positions")
        try:
            return checks.finite(scoring.mean_pooled(self, ids), "the embedding", ())
        except NonFiniteError as error:
            raise NonFiniteError(f"text {index}: {error}") from None

    def _require_tokenizer(self, to: str):
        if self.tokenizer is None:
            raise InputError(f"this model has no tokenizer (its directory had no tokenizer files) to {to}")
        return self.tokenizer

    # ---- the forward pass ---------------------------------------------------------------------------

    def _forward_tokens(self, pool, ids: np.ndarray, token_seq: np.ndarray, token_pos: np.ndarray,
                        tables: np.ndarray, logit_rows: np.ndarray) -> np.ndarray:
        """The forward pass of any mix of tokens of any sequences, over a paged KV cache (``scheduler``).

        ids [T]: token t is sequence token_seq[t]'s token at position token_pos[t]; tables [S, max_blocks]:
        each sequence's blocks of ``pool`` (a ``paged_cache.BlockPool``), which hold its positions before
        the fed ones. Writes every token's keys and values into its block; returns float32 [len(logit_rows),
        vocab], the logits after the tokens ``logit_rows``. Each token's result is the same whatever other
        tokens are fed with it: row-invariant products (in groups of ROWS_PER_PRODUCT) and attention.
        """
        cfg, w = self.config, self.weights
        H, D = cfg.n_head, cfg.head_dim
        blocks = tables[token_seq, token_pos // pool.block_size]
        slots = token_pos % pool.block_size
        x = w["wte.weight"][ids] + w["wpe.weight"][token_pos]  # residual stream [T, C]
        for layer in range(cfg.n_layer):
            p = f"h.{layer}."
            h = layer_norm(x, w[p + "ln_1.weight"], w[p + "ln_1.bias"], cfg.layer_norm_epsilon)
            qkv = project_rows(h, w[p + "attn.c_attn.weight"], w[p + "attn.c_attn.bias"]).reshape(-1, 3, H, D)
            pool.keys[layer][blocks, :, :, slots] = qkv[:, 1]  # [T, H, D] into [block, H, D, slot]
            pool.values[layer][blocks, :, slots] = qkv[:, 2]  # [T, H, D] into [block, H, slot, D]
            q, seq, pos = qkv[:, 0], token_seq, token_pos
            if layer == cfg.n_layer - 1:
                # Past this point only the rows whose logits are asked for reach the output.
                if logit_rows.size == 0:
                    return np.empty((0, cfg.vocab_size), np.float32)
                q, seq, pos = q[logit_rows], seq[logit_rows], pos[logit_rows]
                x = x[logit_rows]
            heads = paged_attention(np.ascontiguousarray(q), pool.keys[layer], pool.values[layer], tables,
                                    np.ascontiguousarray(seq), np.ascontiguousarray(pos), cfg.attention_scale(layer))
            project_rows(heads, w[p + "attn.c_proj.weight"], w[p + "attn.c_proj.bias"], out=x, accumulate=True)
            h = layer_norm(x, w[p + "ln_2.weight"], w[p + "ln_2.bias"], cfg.layer_norm_epsilon)
            inner = project_rows(h, w[p + "mlp.c_fc.weight"], w[p + "mlp.c_fc.bias"], gelu=True)  # [T, I]
            project_rows(inner, w[p + "mlp.c_proj.weight"], w[p + "mlp.c_proj.bias"], out=x, accumulate=True)
        x = layer_norm(x, w["ln_f.weight"], w["ln_f.bias"], cfg.layer_norm_epsilon)
        logits = np.empty((x.shape[0], cfg.vocab_size), np.float32)
        for first in range(0, x.shape[0], ROWS_PER_PRODUCT):
            rows = slice(first, first + ROWS_PER_PRODUCT)
            lm_head(x[rows], w["lm_head.weight"], out=logits[rows])
        return logits

    def _packed_hidden(self, ids: np.ndarray, positions: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        """Final hidden states (after ln_f) of sequences packed into one array of tokens (``scoring``).

        ids, positions [N]: each token and its position in its own sequence; offsets [S + 1]: sequence s is
        tokens offsets[s] .. offsets[s+1]-1 (see ``kernels.attention.packed_attention``). Returns float32
        [N, n_embd]. Every product runs on our GEMM (``gemm="numba"``), which sums each output in one order
        for any number of rows above SMALL_M, so a sequence's result does not depend on what is packed with
        it, given at least SMALL_M + 1 tokens in all.
        """
        cfg, w = self.config, self.weights
        n, H, D = len(ids), cfg.n_head, cfg.head_dim
        x = w["wte.weight"][ids] + w["wpe.weight"][positions]  # residual stream [N, C]
        for layer in range(cfg.n_layer):
            p = f"h.{layer}."
            h = layer_norm(x, w[p + "ln_1.weight"], w[p + "ln_1.bias"], cfg.layer_norm_epsilon)
            qkv = project(h, w[p + "attn.c_attn.weight"], w[p + "attn.c_attn.bias"], gemm="numba")
            heads = packed_attention(qkv.reshape(n, 3, H, D), offsets, cfg.attention_scale(layer))  # [N, C]
            project(heads, w[p + "attn.c_proj.weight"], w[p + "attn.c_proj.bias"], gemm="numba", out=x,
                    accumulate=True)
            h = layer_norm(x, w[p + "ln_2.weight"], w[p + "ln_2.bias"], cfg.layer_norm_epsilon)
            inner = project(h, w[p + "mlp.c_fc.weight"], w[p + "mlp.c_fc.bias"], gemm="numba", gelu=True)
            project(inner, w[p + "mlp.c_proj.weight"], w[p + "mlp.c_proj.bias"], gemm="numba", out=x,
                    accumulate=True)
        return layer_norm(x, w["ln_f.weight"], w["ln_f.bias"], cfg.layer_norm_epsilon, out=x)

    def _forward(self, cache: KVCache, ids: np.ndarray, all_positions: bool, output: str) -> np.ndarray:
        cfg, w = self.config, self.weights
        B, T = ids.shape
        n_past = cache.n_past
        H, D, C = cfg.n_head, cfg.head_dim, cfg.n_embd
        filled = n_past + T  # cache positions filled once every layer has run (T may shrink below)
        # Left-padded rows count their positions from their first real token, as transformers does.
        positions = np.maximum(n_past + np.arange(T)[None, :] - cache.start[:, None], 0)  # [B, T]
        x = (w["wte.weight"][ids] + w["wpe.weight"][positions]).reshape(B * T, C)  # residual stream [BT, C]
        for layer in range(cfg.n_layer):
            p = f"h.{layer}."
            h = layer_norm(x, w[p + "ln_1.weight"], w[p + "ln_1.bias"], cfg.layer_norm_epsilon)
            qkv = project(h, w[p + "attn.c_attn.weight"], w[p + "attn.c_attn.bias"]).reshape(B, T, 3, H, D)
            cache.keys[layer, :, :, n_past:n_past + T] = qkv[:, :, 1].transpose(0, 2, 1, 3)  # [B, H, T, D]
            cache.values[layer, :, :, n_past:n_past + T] = qkv[:, :, 2].transpose(0, 2, 1, 3)
            q_past, q = n_past, qkv[:, :, 0]  # queries [B, T, H, D] at positions n_past..
            if layer == cfg.n_layer - 1 and not all_positions and T > 1:
                # Every layer's keys and values went to the cache, but past this point only the last
                # position reaches the output: run the rest of the last block for that row alone.
                q_past, q, T = n_past + T - 1, q[:, -1:], 1
                x = np.ascontiguousarray(x.reshape(B, -1, C)[:, -1])
            heads = attention(np.ascontiguousarray(q), cache.keys[layer], cache.values[layer], q_past,
                              cache.start, cfg.attention_scale(layer))  # [B, T, C]
            project(heads.reshape(B * T, C), w[p + "attn.c_proj.weight"], w[p + "attn.c_proj.bias"],
                    out=x, accumulate=True)  # x += attention output
            h = layer_norm(x, w[p + "ln_2.weight"], w[p + "ln_2.bias"], cfg.layer_norm_epsilon)
            inner = project(h, w[p + "mlp.c_fc.weight"], w[p + "mlp.c_fc.bias"], gelu=True)  # [BT, I]
            project(inner, w[p + "mlp.c_proj.weight"], w[p + "mlp.c_proj.bias"], out=x, accumulate=True)
        cache.n_past = filled
        x = layer_norm(x, w["ln_f.weight"], w["ln_f.bias"], cfg.layer_norm_epsilon)
        out = x if output == "hidden" else lm_head(x, w["lm_head.weight"])
        return out.reshape(B, T, -1) if all_positions else out

